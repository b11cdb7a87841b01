package config

import (
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
)

// EnvSchemaRegistryPassword overrides schema_registry.password.
const EnvSchemaRegistryPassword = "IDEMSINK_SCHEMA_REGISTRY_PASSWORD"

// Formats a pipeline's values may have. json is the default; avro,
// protobuf and json_schema are the Confluent wire format (magic byte 0, a
// 4-byte schema id, then the payload) with schemas from the registry;
// debezium is a Debezium change event, JSON or Avro (debezium.encoding).
var Formats = []string{"json", "avro", "protobuf", "json_schema", "debezium"}

// Deletes policies: what a tombstone or a Debezium delete does.
var Deletes = []string{"dead_letter", "apply", "ignore"}

// DebeziumVersions name where a Debezium event's version comes from.
var DebeziumVersions = []string{"lsn", "file_pos", "ts_ms"}

// SchemaRegistry says how to reach a Confluent-compatible Schema Registry.
type SchemaRegistry struct {
	// URL may carry user information (https://user:password@host); it is
	// moved into User and Password unless those are set.
	URL string `yaml:"url"`
	// User and Password are HTTP basic auth; prefer
	// IDEMSINK_SCHEMA_REGISTRY_PASSWORD for the password.
	User     string `yaml:"user"`
	Password string `yaml:"password"`
	// CAFile is a PEM bundle to verify an https registry with, instead of
	// the system's roots.
	CAFile string `yaml:"ca_file"`
	// Timeout bounds one request to the registry. Default 10s.
	Timeout time.Duration `yaml:"timeout"`
}

// Debezium configures format: debezium.
type Debezium struct {
	// Encoding is json (default; with or without the schema envelope) or
	// avro (Confluent wire format, schemas from the registry).
	Encoding string `yaml:"encoding"`
	// Version is the source position that orders changes: lsn (default;
	// PostgreSQL source.lsn), file_pos (MySQL source.file and source.pos)
	// or ts_ms (source.ts_ms).
	Version string `yaml:"version"`
	// UnavailableValue is the connector's unavailable.value.placeholder:
	// what Debezium sends for an unchanged TOAST column it cannot read.
	// Such a column keeps its stored value. Default
	// __debezium_unavailable_value, Debezium's own default.
	UnavailableValue string `yaml:"unavailable_value"`
}

// Avro configures format: avro.
type Avro struct {
	// ReaderSubject names the registry subject whose schema every record
	// is read as, by Avro schema resolution: a field the writer lacks takes
	// the reader's default, a field the reader lacks is dropped, and a
	// writer schema the reader cannot read is bad input (schema:). Empty:
	// each record is read with its writer schema alone. The subject is
	// named, not derived from the topic, because a pipeline may read
	// several topics and writers may use any subject name strategy.
	ReaderSubject string `yaml:"reader_subject"`
	// ReaderVersion is the subject's version: latest (default), fetched at
	// the first record and again when a writer schema id newer than it
	// appears, or a version number, fetched once.
	ReaderVersion string `yaml:"reader_version"`
}

// LatestVersion is the ReaderVersion that follows the subject's newest
// version.
const LatestVersion = "latest"

// Version returns ReaderVersion as the registry client takes it: the
// version number, or -1 for latest. Valid after Validate.
func (a *Avro) Version() int {
	n, err := strconv.Atoi(a.ReaderVersion)
	if err != nil || a.ReaderVersion == LatestVersion {
		return -1
	}
	return n
}

// DefaultUnavailableValue is Debezium's default unavailable.value.placeholder.
const DefaultUnavailableValue = "__debezium_unavailable_value"

// DefaultRegistryTimeout bounds one Schema Registry request.
const DefaultRegistryTimeout = 10 * time.Second

// Registry returns the configured Schema Registry, or nil.
func (p *Pipeline) Registry() *SchemaRegistry { return p.registry }

// UsesRegistry reports whether the pipeline's values or keys need the registry.
func (p *Pipeline) UsesRegistry() bool {
	return registryFormat(p.Format) || registryFormat(p.KeyFormat) || p.Format == "debezium" && p.Debezium != nil && p.Debezium.Encoding == "avro"
}

// moveUserInfo takes user information out of the URL into User and
// Password, where they are not already set: the registry client prints its
// request URLs in its errors, password included.
func (r *SchemaRegistry) moveUserInfo() {
	u, err := url.Parse(r.URL)
	if err != nil || u.User == nil {
		return
	}
	if r.User == "" {
		r.User = u.User.Username()
		if pw, ok := u.User.Password(); ok && r.Password == "" {
			r.Password = pw
		}
	}
	u.User = nil
	r.URL = u.String()
}

// redactURL hides the password of a URL's user information, which an
// error or a log line must never show: url.URL.Redacted when s parses,
// else everything between the scheme and the last "@".
func redactURL(s string) string {
	if u, err := url.Parse(s); err == nil {
		return u.Redacted()
	}
	at := strings.LastIndex(s, "@")
	if at < 0 {
		return s
	}
	start := 0
	if i := strings.Index(s, "://"); i >= 0 && i < at {
		start = i + 3
	}
	return s[:start] + "xxxxx" + s[at:]
}

func registryFormat(f string) bool { return f == "avro" || f == "protobuf" || f == "json_schema" }

func (c *Config) setFormatDefaults() {
	if r := c.SchemaRegistry; r != nil {
		if r.Timeout == 0 {
			r.Timeout = DefaultRegistryTimeout
		}
		r.moveUserInfo()
	}
	for i := range c.Pipelines {
		p := &c.Pipelines[i]
		p.registry = c.SchemaRegistry
		if p.Format == "" {
			p.Format = "json"
		}
		if p.Deletes == "" {
			p.Deletes = "dead_letter"
		}
		if p.Format == "debezium" {
			if p.Debezium == nil {
				p.Debezium = &Debezium{}
			}
			if p.Debezium.Encoding == "" {
				p.Debezium.Encoding = "json"
			}
			if p.Debezium.Version == "" {
				p.Debezium.Version = "lsn"
			}
			if p.Debezium.UnavailableValue == "" {
				p.Debezium.UnavailableValue = DefaultUnavailableValue
			}
		}
		if p.Avro != nil && p.Avro.ReaderVersion == "" {
			p.Avro.ReaderVersion = LatestVersion
		}
		if p.KeyFormat == "" {
			switch {
			case p.Format == "debezium":
				p.KeyFormat = p.Debezium.Encoding
			case p.Format == "avro" || p.Format == "protobuf" || p.Format == "json_schema":
				p.KeyFormat = p.Format
			default:
				p.KeyFormat = "json"
			}
		}
	}
}

func (c *Config) validateFormats(bad func(string, ...any)) {
	if r := c.SchemaRegistry; r != nil {
		if u, err := url.Parse(r.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("schema_registry.url: %q is not an http or https URL", redactURL(r.URL))
		}
		if r.Password != "" && r.User == "" {
			bad("schema_registry.user: required with a password")
		}
		if r.Timeout < 0 {
			bad("schema_registry.timeout: must be positive")
		}
	}
	for i := range c.Pipelines {
		p := &c.Pipelines[i]
		at := fmt.Sprintf("pipelines[%d]", i)
		if !slices.Contains(Formats, p.Format) {
			bad("%s.format: %q is not one of json, avro, protobuf, json_schema, debezium", at, p.Format)
		}
		if p.KeyFormat != "json" && !registryFormat(p.KeyFormat) {
			bad("%s.key_format: %q is not one of json, avro, protobuf, json_schema", at, p.KeyFormat)
		}
		if !slices.Contains(Deletes, p.Deletes) {
			bad("%s.deletes: %q is not one of dead_letter, apply, ignore", at, p.Deletes)
		}
		if p.Debezium != nil {
			switch {
			case p.Format != "debezium":
				bad("%s.debezium: only for format: debezium", at)
			case p.Debezium.Encoding != "json" && p.Debezium.Encoding != "avro":
				bad("%s.debezium.encoding: %q is not json or avro", at, p.Debezium.Encoding)
			case !slices.Contains(DebeziumVersions, p.Debezium.Version):
				bad("%s.debezium.version: %q is not one of lsn, file_pos, ts_ms", at, p.Debezium.Version)
			}
			if p.Version != nil {
				bad("%s.version: a Debezium pipeline is ordered by debezium.version, not a field", at)
			}
		}
		if a := p.Avro; a != nil {
			switch {
			case p.Format != "avro":
				bad("%s.avro: only for format: avro", at)
			case strings.TrimSpace(a.ReaderSubject) == "":
				bad("%s.avro.reader_subject: required (the registry subject whose schema records are read as)", at)
			case strings.TrimSpace(a.ReaderSubject) != a.ReaderSubject || strings.ContainsFunc(a.ReaderSubject, unicode.IsControl):
				bad("%s.avro.reader_subject: %q has leading or trailing spaces or control characters", at, a.ReaderSubject)
			}
			if n, err := strconv.Atoi(a.ReaderVersion); a.ReaderVersion != LatestVersion && (err != nil || n < 1 || strconv.Itoa(n) != a.ReaderVersion) {
				bad("%s.avro.reader_version: %q is not latest or a version number (1 or more)", at, a.ReaderVersion)
			}
		}
		if p.UsesRegistry() && c.SchemaRegistry == nil {
			bad("%s.format: %s needs schema_registry", at, p.Format)
		}
	}
}
