// Package config loads and validates idemsink's YAML configuration.
//
// Loading is strict: unknown keys fail, every pipeline is validated before
// anything starts, and errors name the offending field by its YAML path.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"os"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/exporter-toolkit/web"
	"go.yaml.in/yaml/v3"
)

// Environment variables that override secrets in the file, so that a
// configuration can be committed without them.
const (
	EnvDatabaseURL  = "IDEMSINK_DATABASE_URL"
	EnvSASLPassword = "IDEMSINK_SASL_PASSWORD"
	EnvBrokers      = "IDEMSINK_BROKERS"
	// EnvInstanceID overrides instance_id, so that one file serves every
	// replica: set it from the pod name.
	EnvInstanceID = "IDEMSINK_INSTANCE_ID"
)

// Config is the whole daemon configuration.
type Config struct {
	// Brokers are the Kafka seed brokers, host:port.
	Brokers []string `yaml:"brokers"`
	// Group is the Kafka consumer group; it also keys the offset ledger.
	Group string `yaml:"group"`
	// DatabaseURL is a libpq/pgx connection string. Prefer IDEMSINK_DATABASE_URL.
	DatabaseURL string `yaml:"database_url"`
	SASL        *SASL  `yaml:"sasl"`
	// TLS is `tls: true` or a mapping; see security.go.
	TLS TLS `yaml:"tls"`
	// MetricsAddr serves /metrics, /healthz and /readyz; "" disables it.
	MetricsAddr string `yaml:"metrics_addr"`
	// MetricsWebConfigFile is a Prometheus exporter web configuration
	// (TLS, basic auth; the file of every exporter's --web.config.file)
	// for the metrics server; "" serves plain HTTP without auth.
	MetricsWebConfigFile string `yaml:"metrics_web_config_file"`
	// MaxBufferedRecords caps the records held in open batches across all
	// pipelines; when reached, batches are flushed before fetching more.
	MaxBufferedRecords int `yaml:"max_buffered_records"`
	// MaxBufferedBytes caps the raw bytes held in open batches.
	MaxBufferedBytes ByteSize `yaml:"max_buffered_bytes"`
	// ShutdownTimeout bounds the final flush after SIGTERM.
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`
	// SessionTimeout and RebalanceTimeout are the consumer group timeouts.
	SessionTimeout   time.Duration `yaml:"session_timeout"`
	RebalanceTimeout time.Duration `yaml:"rebalance_timeout"`
	// RetryBackoff is the first wait after a database failure; it doubles up
	// to RetryBackoffMax.
	RetryBackoff    time.Duration `yaml:"retry_backoff"`
	RetryBackoffMax time.Duration `yaml:"retry_backoff_max"`
	// ApplyConnections is how many batches are applied at once, each on its
	// own PostgreSQL connection, while the next records are decoded.
	ApplyConnections int `yaml:"apply_connections"`
	// ApplyTimeout bounds one attempt at applying a batch; an attempt cut
	// short is an outage, retried with backoff.
	ApplyTimeout time.Duration `yaml:"apply_timeout"`
	// StartOffset is where a group without committed offsets starts:
	// "earliest" (default) or "latest".
	StartOffset string     `yaml:"start_offset"`
	Pipelines   []Pipeline `yaml:"pipelines"`

	// InstanceID makes this member a static member of the group (Kafka's
	// group.instance.id): restarted within session_timeout, it gets its
	// partitions back without a rebalance and without waiting for its
	// dead self to time out. It must be unique per running process, and
	// stable across restarts of that process (a pod name, not a random id).
	InstanceID string `yaml:"instance_id"`

	// SchemaRegistry is where avro, protobuf and json_schema pipelines
	// (and Debezium Avro) fetch writer schemas by id; see formats.go.
	SchemaRegistry *SchemaRegistry `yaml:"schema_registry"`
}

// Pipeline maps one or more topics onto one target table.
type Pipeline struct {
	Name   string   `yaml:"name"`
	Topics []string `yaml:"topics"`
	// Schema and Table name the target table; Schema defaults to public.
	Schema string `yaml:"schema"`
	Table  string `yaml:"table"`
	// Key lists the column names whose values form record_id, in order.
	Key     []string `yaml:"key"`
	Columns []Column `yaml:"columns"`
	Date    Date     `yaml:"date"`
	Version *Version `yaml:"version"`
	Batch   Batch    `yaml:"batch"`

	// MaxRecordBytes bounds a record's key plus value; a larger record is
	// dead-lettered with its size and first bytes, and is not decoded.
	MaxRecordBytes ByteSize `yaml:"max_record_bytes"`

	// Format, KeyFormat, Deletes, Debezium and Avro say how values and
	// keys are encoded and what a delete does; see formats.go.
	Format    string    `yaml:"format"`
	KeyFormat string    `yaml:"key_format"`
	Deletes   string    `yaml:"deletes"`
	Debezium  *Debezium `yaml:"debezium"`
	Avro      *Avro     `yaml:"avro"`
	registry  *SchemaRegistry
}

// Column is one target column and the JSON field it comes from.
type Column struct {
	Name string `yaml:"name"`
	Type string `yaml:"type"`
	// Field is a JSON field name, or a dotted path into nested objects.
	// Empty means the column name.
	Field string `yaml:"field"`
	// Nullable allows a missing or null field; otherwise such a record is
	// dead-lettered. Key columns are never nullable.
	Nullable bool `yaml:"nullable"`
	// SemanticType names the Kafka Connect or Debezium semantic type the
	// field carries, for events without a schema envelope: it says the
	// unit of a number (days, milli-, micro-, nanoseconds) or that a
	// string holds JSON. See SemanticTypes.
	SemanticType string `yaml:"semantic_type"`
}

// Date says where a record's target date comes from.
type Date struct {
	// Field holds a timestamp (RFC 3339 string, or epoch milliseconds as a
	// number) or a date (YYYY-MM-DD).
	Field string `yaml:"field"`
	// TimeZone is an IANA zone name; the target date is the local date of
	// the timestamp there. Default UTC.
	TimeZone string `yaml:"time_zone"`
}

// Version names the field that orders versions of the same key.
type Version struct {
	Field string `yaml:"field"`
	// Type is bigint (default) or timestamptz.
	Type string `yaml:"type"`
}

// Batch holds a pipeline's flush limits. A batch flushes when any is reached.
type Batch struct {
	MaxRecords int           `yaml:"max_records"`
	MaxBytes   ByteSize      `yaml:"max_bytes"`
	Linger     time.Duration `yaml:"linger"`
}

// Defaults are applied to fields left zero.
const (
	DefaultMaxRecords = 5000
	DefaultMaxBytes   = 8 << 20
	DefaultLinger     = 500 * time.Millisecond
	// DefaultMaxBufferedRecords is four transactions at the default
	// max_records: one applying and one filling on each of the default two
	// apply connections. More buys no throughput and costs memory (about
	// 1.3 KB of heap per buffered record, with Go's GC at its default).
	DefaultMaxBufferedRecords = 20000
	DefaultMaxBufferedBytes   = 64 << 20
	DefaultShutdownTimeout    = 30 * time.Second
	DefaultSessionTimeout     = 45 * time.Second
	DefaultRebalanceTimeout   = 60 * time.Second
	DefaultRetryBackoff       = 200 * time.Millisecond
	DefaultRetryBackoffMax    = 10 * time.Second
	DefaultApplyConnections   = 2
	DefaultApplyTimeout       = 30 * time.Second
	DefaultMaxRecordBytes     = 1 << 20
)

// ColumnTypes are the PostgreSQL types a column may have.
var ColumnTypes = []string{"text", "bigint", "integer", "smallint", "numeric", "double precision", "real", "boolean", "date",
	"timestamptz", "timestamp", "time", "uuid", "jsonb", "bytea"}

// noCanonicalForm are the column types a key column cannot have: values
// that are equal in PostgreSQL but not in spelling (jsonb, floats), or
// that record_id has no encoding for.
var noCanonicalForm = []string{"jsonb", "double precision", "real", "time", "bytea"}

// Reserved column names the sink adds to every target table.
var Reserved = []string{"record_id", "_version", "_src_topic", "_src_partition", "_src_offset", "_batch_id", "_applied_at"}

// Load reads the file at path, applies environment overrides through getenv
// and defaults, and validates the result.
func Load(path string, getenv func(string) string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return Parse(b, getenv)
}

// Parse is Load for bytes already read.
func Parse(b []byte, getenv func(string) string) (*Config, error) {
	var c Config
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("parse config: %w", err)
	}
	if getenv != nil {
		if v := getenv(EnvDatabaseURL); v != "" {
			c.DatabaseURL = v
		}
		if v := getenv(EnvBrokers); v != "" {
			c.Brokers = nil
			for b := range strings.SplitSeq(v, ",") {
				if b = strings.TrimSpace(b); b != "" {
					c.Brokers = append(c.Brokers, b)
				}
			}
		}
		if v := getenv(EnvSASLPassword); v != "" && c.SASL != nil {
			c.SASL.Password = v
		}
		if v := getenv(EnvSASLClientSecret); v != "" && c.SASL != nil && c.SASL.OAuth != nil {
			c.SASL.OAuth.ClientSecret = v
		}
		if v := getenv(EnvInstanceID); v != "" {
			c.InstanceID = v
		}
	}
	if r := c.SchemaRegistry; r != nil && getenv != nil && getenv(EnvSchemaRegistryPassword) != "" {
		r.Password = getenv(EnvSchemaRegistryPassword)
	}
	c.SetDefaults()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// SetDefaults fills zero fields with their defaults.
func (c *Config) SetDefaults() {
	if c.MaxBufferedRecords == 0 {
		c.MaxBufferedRecords = DefaultMaxBufferedRecords
	}
	if c.MaxBufferedBytes == 0 {
		c.MaxBufferedBytes = DefaultMaxBufferedBytes
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = DefaultShutdownTimeout
	}
	if c.SessionTimeout == 0 {
		c.SessionTimeout = DefaultSessionTimeout
	}
	if c.RebalanceTimeout == 0 {
		c.RebalanceTimeout = DefaultRebalanceTimeout
	}
	if c.RetryBackoff == 0 {
		c.RetryBackoff = DefaultRetryBackoff
	}
	if c.RetryBackoffMax == 0 {
		c.RetryBackoffMax = DefaultRetryBackoffMax
	}
	if c.ApplyConnections == 0 {
		c.ApplyConnections = DefaultApplyConnections
	}
	if c.ApplyTimeout == 0 {
		c.ApplyTimeout = DefaultApplyTimeout
	}
	if c.StartOffset == "" {
		c.StartOffset = "earliest"
	}
	c.setFormatDefaults()
	for i := range c.Pipelines {
		p := &c.Pipelines[i]
		if p.Schema == "" {
			p.Schema = "public"
		}
		if p.Date.TimeZone == "" {
			p.Date.TimeZone = "UTC"
		}
		if p.Version != nil && p.Version.Type == "" {
			p.Version.Type = "bigint"
		}
		if p.Batch.MaxRecords == 0 {
			p.Batch.MaxRecords = min(DefaultMaxRecords, c.MaxBufferedRecords)
		}
		if p.Batch.MaxBytes == 0 {
			p.Batch.MaxBytes = DefaultMaxBytes
		}
		if p.Batch.Linger == 0 {
			p.Batch.Linger = DefaultLinger
		}
		for j := range p.Columns {
			if p.Columns[j].Field == "" {
				p.Columns[j].Field = p.Columns[j].Name
			}
			if t, err := ParseType(p.Columns[j].Type); err == nil {
				p.Columns[j].Type = t.String() // one spelling, valid SQL
			}
		}
		if p.MaxRecordBytes == 0 {
			p.MaxRecordBytes = DefaultMaxRecordBytes
			if c.MaxBufferedBytes > 0 {
				p.MaxRecordBytes = min(p.MaxRecordBytes, c.MaxBufferedBytes)
			}
		}
	}
}

// identRE accepts lower-case SQL identifiers; anything else (quotes, spaces,
// upper case that would need quoting to round-trip) is refused rather than
// escaped, so that names in configuration, SQL and psql all agree.
var identRE = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

// instanceRE is what Kafka accepts in group.instance.id.
var instanceRE = regexp.MustCompile(`^[a-zA-Z0-9._-]{1,249}$`)

// ValidIdent reports whether s is an acceptable table, schema or column name.
func ValidIdent(s string) bool { return identRE.MatchString(s) }

// Validate checks the whole configuration and returns every problem found,
// each prefixed by its field path.
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if len(c.Brokers) == 0 {
		bad("brokers: at least one broker is required")
	}
	for i, b := range c.Brokers {
		if !strings.Contains(b, ":") {
			bad("brokers[%d]: %q is not host:port", i, b)
		}
	}
	if c.Group == "" {
		bad("group: required")
	}
	if c.DatabaseURL == "" {
		bad("database_url: required (or set %s)", EnvDatabaseURL)
	}
	c.validateSecurity(bad)
	if c.MetricsWebConfigFile != "" {
		if c.MetricsAddr == "" {
			bad("metrics_web_config_file: set, but metrics_addr is empty: there is no metrics server to secure")
		}
		if err := web.Validate(c.MetricsWebConfigFile); err != nil {
			bad("metrics_web_config_file: %s: %v", c.MetricsWebConfigFile, err)
		}
	}
	if c.MaxBufferedRecords < 0 {
		bad("max_buffered_records: must be positive")
	}
	if c.MaxBufferedBytes < 0 {
		bad("max_buffered_bytes: must be positive")
	}
	if c.StartOffset != "earliest" && c.StartOffset != "latest" {
		bad("start_offset: %q is not earliest or latest", c.StartOffset)
	}
	if c.RetryBackoffMax < c.RetryBackoff {
		bad("retry_backoff_max: %s is below retry_backoff %s", c.RetryBackoffMax, c.RetryBackoff)
	}
	if c.ApplyConnections < 1 || c.ApplyConnections > 64 {
		bad("apply_connections: %d is not between 1 and 64", c.ApplyConnections)
	}
	if c.ApplyTimeout < time.Second {
		bad("apply_timeout: %s is below 1s", c.ApplyTimeout)
	}
	if len(c.Pipelines) == 0 {
		bad("pipelines: at least one pipeline is required")
	}
	if c.InstanceID != "" && !instanceRE.MatchString(c.InstanceID) {
		bad("instance_id: %q must match %s", c.InstanceID, instanceRE)
	}
	names := map[string]bool{}
	tables := map[string]bool{}
	topics := map[string]string{}
	for i := range c.Pipelines {
		p := &c.Pipelines[i]
		at := fmt.Sprintf("pipelines[%d]", i)
		if !ValidIdent(p.Name) {
			bad("%s.name: %q must match %s", at, p.Name, identRE)
		} else if names[p.Name] {
			bad("%s.name: %q is used twice", at, p.Name)
		}
		names[p.Name] = true
		if len(p.Topics) == 0 {
			bad("%s.topics: at least one topic is required", at)
		}
		for _, t := range p.Topics {
			if other, ok := topics[t]; ok {
				bad("%s.topics: %q is already read by pipeline %q", at, t, other)
			}
			topics[t] = p.Name
		}
		if !ValidIdent(p.Schema) {
			bad("%s.schema: %q must match %s", at, p.Schema, identRE)
		}
		if !ValidIdent(p.Table) {
			bad("%s.table: %q must match %s", at, p.Table, identRE)
		} else if tables[p.Schema+"."+p.Table] {
			bad("%s.table: %s.%s is the target of another pipeline", at, p.Schema, p.Table)
		}
		tables[p.Schema+"."+p.Table] = true
		if len(p.Columns) == 0 {
			bad("%s.columns: at least one column is required", at)
		}
		cols := map[string]*Column{}
		for j := range p.Columns {
			col := &p.Columns[j]
			cat := fmt.Sprintf("%s.columns[%d]", at, j)
			switch {
			case !ValidIdent(col.Name):
				bad("%s.name: %q must match %s", cat, col.Name, identRE)
			case slices.Contains(Reserved, col.Name):
				bad("%s.name: %q is reserved for idemsink's own columns", cat, col.Name)
			case cols[col.Name] != nil:
				bad("%s.name: %q is used twice", cat, col.Name)
			}
			cols[col.Name] = col
			if _, err := ParseType(col.Type); err != nil {
				bad("%s.type: %v", cat, err)
			}
			if col.SemanticType != "" {
				if bases, ok := SemanticTypes[col.SemanticType]; !ok {
					bad("%s.semantic_type: %q is not one of %s", cat, col.SemanticType, strings.Join(semanticNames(), ", "))
				} else if ct, err := ParseType(col.Type); err == nil && !slices.Contains(bases, ct.Base) {
					bad("%s.semantic_type: %s is not read into a %s column (only %s)", cat, col.SemanticType, ct, strings.Join(bases, ", "))
				} else if err == nil && col.SemanticType == "org.apache.kafka.connect.data.Decimal" && !ct.HasPrecision {
					bad("%s.semantic_type: %s needs the column's scale: give the type as numeric(p,s)", cat, col.SemanticType)
				}
			}
			if col.Field == "" || strings.HasPrefix(col.Field, ".") || strings.HasSuffix(col.Field, ".") || strings.Contains(col.Field, "..") {
				bad("%s.field: %q is not a field name or dotted path", cat, col.Field)
			}
		}
		if len(p.Key) == 0 {
			bad("%s.key: at least one key column is required", at)
		}
		seen := map[string]bool{}
		for j, k := range p.Key {
			col := cols[k]
			switch {
			case col == nil:
				bad("%s.key[%d]: %q is not a column of this pipeline", at, j, k)
			case seen[k]:
				bad("%s.key[%d]: %q is listed twice", at, j, k)
			case col.Nullable:
				bad("%s.key[%d]: key column %q cannot be nullable", at, j, k)
			case slices.Contains(noCanonicalForm, col.Typ().Base):
				bad("%s.key[%d]: key column %q has type %s, which has no canonical form", at, j, k, col.Type)
			}
			seen[k] = true
		}
		if p.Date.Field == "" {
			bad("%s.date.field: required", at)
		}
		// "Local" loads, but it is the machine's zone: target dates, and so
		// run and batch ids, would differ from one host to the next.
		if p.Date.TimeZone == "Local" {
			bad("%s.date.time_zone: %q depends on the machine; name an IANA zone such as UTC", at, p.Date.TimeZone)
		} else if _, err := time.LoadLocation(p.Date.TimeZone); err != nil {
			bad("%s.date.time_zone: %q is not a known time zone", at, p.Date.TimeZone)
		}
		if p.Version != nil {
			if p.Version.Field == "" {
				bad("%s.version.field: required when version is set", at)
			}
			if p.Version.Type != "bigint" && p.Version.Type != "timestamptz" {
				bad("%s.version.type: %q is not bigint or timestamptz", at, p.Version.Type)
			}
		}
		if p.Batch.MaxRecords < 0 {
			bad("%s.batch.max_records: must be positive", at)
		}
		if p.Batch.MaxBytes < 0 {
			bad("%s.batch.max_bytes: must be positive", at)
		}
		if p.Batch.Linger < 0 {
			bad("%s.batch.linger: must be positive", at)
		}
		if c.MaxBufferedRecords > 0 && p.Batch.MaxRecords > c.MaxBufferedRecords {
			bad("%s.batch.max_records: %d exceeds max_buffered_records %d", at, p.Batch.MaxRecords, c.MaxBufferedRecords)
		}
		if p.MaxRecordBytes < 0 {
			bad("%s.max_record_bytes: must be positive", at)
		} else if c.MaxBufferedBytes > 0 && p.MaxRecordBytes > c.MaxBufferedBytes {
			bad("%s.max_record_bytes: %d exceeds max_buffered_bytes %d", at, p.MaxRecordBytes, c.MaxBufferedBytes)
		}
	}
	c.validateFormats(bad)
	if len(errs) > 0 {
		return fmt.Errorf("invalid config: %w", errors.Join(errs...))
	}
	return nil
}

// Location returns the pipeline's time zone; Validate has checked it loads.
func (p *Pipeline) Location() *time.Location {
	loc, err := time.LoadLocation(p.Date.TimeZone)
	if err != nil {
		return time.UTC
	}
	return loc
}

// Column returns the named column, or nil.
func (p *Pipeline) Column(name string) *Column {
	for i := range p.Columns {
		if p.Columns[i].Name == name {
			return &p.Columns[i]
		}
	}
	return nil
}

// Topics returns every topic of every pipeline.
func (c *Config) Topics() []string {
	var ts []string
	for _, p := range c.Pipelines {
		ts = append(ts, p.Topics...)
	}
	return ts
}

// ByteSize is a size in bytes that YAML may give as 1048576, "512KiB" or "8MiB".
type ByteSize int64

// UnmarshalYAML accepts a plain integer or a number with a KiB/MiB/GiB suffix.
func (b *ByteSize) UnmarshalYAML(n *yaml.Node) error {
	s := strings.TrimSpace(n.Value)
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		m      int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"B", 1}} {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSpace(strings.TrimSuffix(s, u.suffix)), u.m
			break
		}
	}
	var v int64
	// The range check keeps "17179869184GiB" from wrapping around to 0.
	if _, err := fmt.Sscanf(s, "%d", &v); err != nil || fmt.Sprint(v) != s || v > math.MaxInt64/mult || v < math.MinInt64/mult {
		return fmt.Errorf("line %d: %q is not a size (like 1048576 or 8MiB)", n.Line, n.Value)
	}
	*b = ByteSize(v * mult)
	return nil
}

// ColumnNames returns the pipeline's column names in order.
func (p *Pipeline) ColumnNames() []string {
	names := make([]string, len(p.Columns))
	for i, c := range p.Columns {
		names[i] = c.Name
	}
	return names
}
