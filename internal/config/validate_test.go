package config

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// base is a valid two-pipeline configuration that TestBadConfigs breaks one
// rule at a time.
const base = `
brokers: [localhost:9092]
group: g
database_url: postgres://localhost/db
pipelines:
  - name: orders
    topics: [orders]
    table: orders
    key: [id]
    columns:
      - {name: id, type: bigint}
      - {name: note, type: text, nullable: true}
    date: {field: ts}
  - name: events
    topics: [events]
    table: events
    key: [id]
    columns:
      - {name: id, type: text}
    date: {field: ts}
`

func parseBase(t *testing.T) *Config {
	t.Helper()
	c, err := Parse([]byte(base), nil)
	if err != nil {
		t.Fatalf("base config: %v", err)
	}
	return c
}

const identPattern = `^[a-z_][a-z0-9_]{0,62}$`

func TestBadConfigs(t *testing.T) {
	type tc struct {
		name   string
		mutate func(c *Config)
		want   []string // every error line, in order
	}
	p0 := func(f func(p *Pipeline)) func(*Config) { return func(c *Config) { f(&c.Pipelines[0]) } }
	cases := []tc{
		{"no brokers", func(c *Config) { c.Brokers = nil },
			[]string{"brokers: at least one broker is required"}},
		{"broker without port", func(c *Config) { c.Brokers = []string{"localhost:9092", "kafka"} },
			[]string{`brokers[1]: "kafka" is not host:port`}},
		{"no group", func(c *Config) { c.Group = "" },
			[]string{"group: required"}},
		{"no database url", func(c *Config) { c.DatabaseURL = "" },
			[]string{"database_url: required (or set IDEMSINK_DATABASE_URL)"}},
		{"sasl mechanism", func(c *Config) { c.SASL = &SASL{Mechanism: "gssapi", User: "u"} },
			[]string{`sasl.mechanism: "gssapi" is not one of plain, scram-sha-256, scram-sha-512, oauthbearer, aws_msk_iam`}},
		{"sasl mechanism upper case", func(c *Config) { c.SASL = &SASL{Mechanism: "PLAIN", User: "u"} },
			[]string{`sasl.mechanism: "PLAIN" is not one of plain, scram-sha-256, scram-sha-512, oauthbearer, aws_msk_iam`}},
		{"sasl without user", func(c *Config) { c.SASL = &SASL{Mechanism: "scram-sha-256"} },
			[]string{"sasl.user: required"}},
		{"negative max_buffered_records", func(c *Config) { c.MaxBufferedRecords = -1 },
			[]string{"max_buffered_records: must be positive"}},
		{"negative max_buffered_bytes", func(c *Config) { c.MaxBufferedBytes = -1 },
			[]string{"max_buffered_bytes: must be positive"}},
		{"start offset", func(c *Config) { c.StartOffset = "newest" },
			[]string{`start_offset: "newest" is not earliest or latest`}},
		{"retry backoff max below backoff", func(c *Config) { c.RetryBackoff, c.RetryBackoffMax = 5*time.Second, time.Second },
			[]string{"retry_backoff_max: 1s is below retry_backoff 5s"}},
		{"apply connections negative", func(c *Config) { c.ApplyConnections = -1 },
			[]string{"apply_connections: -1 is not between 1 and 64"}},
		{"apply connections too many", func(c *Config) { c.ApplyConnections = 65 },
			[]string{"apply_connections: 65 is not between 1 and 64"}},
		{"apply timeout too short", func(c *Config) { c.ApplyTimeout = time.Millisecond },
			[]string{"apply_timeout: 1ms is below 1s"}},
		{"metrics web config without metrics_addr", func(c *Config) { c.MetricsWebConfigFile = "testdata/web.yml" },
			[]string{"metrics_web_config_file: set, but metrics_addr is empty: there is no metrics server to secure"}},
		{"metrics web config missing", func(c *Config) { c.MetricsAddr, c.MetricsWebConfigFile = ":9100", "testdata/nope.yml" },
			[]string{"metrics_web_config_file: testdata/nope.yml: open testdata/nope.yml: no such file or directory"}},
		{"metrics web config with a plain password", func(c *Config) { c.MetricsAddr, c.MetricsWebConfigFile = ":9100", "testdata/web-plain.yml" },
			[]string{"metrics_web_config_file: testdata/web-plain.yml: crypto/bcrypt: hashedSecret too short to be a bcrypted password"}},
		{"no pipelines", func(c *Config) { c.Pipelines = nil },
			[]string{"pipelines: at least one pipeline is required"}},

		{"pipeline name upper case", p0(func(p *Pipeline) { p.Name = "Orders" }),
			[]string{`pipelines[0].name: "Orders" must match ` + identPattern}},
		{"pipeline name empty", p0(func(p *Pipeline) { p.Name = "" }),
			[]string{`pipelines[0].name: "" must match ` + identPattern}},
		{"pipeline name twice", func(c *Config) { c.Pipelines[1].Name = "orders" },
			[]string{`pipelines[1].name: "orders" is used twice`}},
		{"no topics", p0(func(p *Pipeline) { p.Topics = nil }),
			[]string{"pipelines[0].topics: at least one topic is required"}},
		{"topic in two pipelines", func(c *Config) { c.Pipelines[1].Topics = []string{"events", "orders"} },
			[]string{`pipelines[1].topics: "orders" is already read by pipeline "orders"`}},
		{"topic twice in one pipeline", p0(func(p *Pipeline) { p.Topics = []string{"orders", "orders"} }),
			[]string{`pipelines[0].topics: "orders" is already read by pipeline "orders"`}},
		{"schema upper case", p0(func(p *Pipeline) { p.Schema = "Public" }),
			[]string{`pipelines[0].schema: "Public" must match ` + identPattern}},
		{"schema with a dot", p0(func(p *Pipeline) { p.Schema = "db.public" }),
			[]string{`pipelines[0].schema: "db.public" must match ` + identPattern}},
		{"table injection", p0(func(p *Pipeline) { p.Table = "orders; DROP TABLE x" }),
			[]string{`pipelines[0].table: "orders; DROP TABLE x" must match ` + identPattern}},
		{"table quoted", p0(func(p *Pipeline) { p.Table = `"Orders"` }),
			[]string{`pipelines[0].table: "\"Orders\"" must match ` + identPattern}},
		{"table quote breakout", p0(func(p *Pipeline) { p.Table = `orders" (id int); --` }),
			[]string{`pipelines[0].table: "orders\" (id int); --" must match ` + identPattern}},
		{"table qualified", p0(func(p *Pipeline) { p.Table = "public.orders" }),
			[]string{`pipelines[0].table: "public.orders" must match ` + identPattern}},
		{"table starts with a digit", p0(func(p *Pipeline) { p.Table = "1orders" }),
			[]string{`pipelines[0].table: "1orders" must match ` + identPattern}},
		{"table non-ASCII", p0(func(p *Pipeline) { p.Table = "bestellungen_ä" }),
			[]string{`pipelines[0].table: "bestellungen_ä" must match ` + identPattern}},
		{"table of 64 characters", p0(func(p *Pipeline) { p.Table = strings.Repeat("t", 64) }),
			[]string{fmt.Sprintf(`pipelines[0].table: %q must match `, strings.Repeat("t", 64)) + identPattern}},
		{"table empty", p0(func(p *Pipeline) { p.Table = "" }),
			[]string{`pipelines[0].table: "" must match ` + identPattern}},
		{"table of another pipeline", func(c *Config) { c.Pipelines[1].Table = "orders" },
			[]string{"pipelines[1].table: public.orders is the target of another pipeline"}},
		{"no columns", p0(func(p *Pipeline) { p.Columns = nil }),
			[]string{"pipelines[0].columns: at least one column is required",
				`pipelines[0].key[0]: "id" is not a column of this pipeline`}},
		{"column name upper case", p0(func(p *Pipeline) { p.Columns[1].Name = "Note" }),
			[]string{`pipelines[0].columns[1].name: "Note" must match ` + identPattern}},
		{"column name injection", p0(func(p *Pipeline) { p.Columns[1].Name = `note", "x` }),
			[]string{`pipelines[0].columns[1].name: "note\", \"x" must match ` + identPattern}},
		{"column name twice", p0(func(p *Pipeline) { p.Columns[1] = Column{Name: "id", Type: "bigint", Field: "id2"} }),
			[]string{`pipelines[0].columns[1].name: "id" is used twice`}},
		{"column type unknown", p0(func(p *Pipeline) { p.Columns[1].Type = "string" }),
			[]string{`pipelines[0].columns[1].type: "string" is not one of text, bigint, integer, smallint, numeric, double precision, real, boolean, date, timestamptz, timestamp, time, uuid, jsonb, bytea, varchar(n), char(n)`}},
		{"column type empty", p0(func(p *Pipeline) { p.Columns[1].Type = "" }),
			[]string{`pipelines[0].columns[1].type: "" is not a type like numeric(12,2) or varchar(40)`}},
		{"numeric precision zero", p0(func(p *Pipeline) { p.Columns[1].Type = "numeric(0,0)" }),
			[]string{`pipelines[0].columns[1].type: "numeric(0,0)": precision must be between 1 and 1000`}},
		{"numeric precision too large", p0(func(p *Pipeline) { p.Columns[1].Type = "numeric(1001)" }),
			[]string{`pipelines[0].columns[1].type: "numeric(1001)": precision must be between 1 and 1000`}},
		{"numeric scale too small", p0(func(p *Pipeline) { p.Columns[1].Type = "numeric(5,-1001)" }),
			[]string{`pipelines[0].columns[1].type: "numeric(5,-1001)": scale must be between -1000 and 1000`}},
		{"varchar length zero", p0(func(p *Pipeline) { p.Columns[1].Type = "varchar(0)" }),
			[]string{`pipelines[0].columns[1].type: "varchar(0)": length must be between 1 and 10485760`}},
		{"varchar two modifiers", p0(func(p *Pipeline) { p.Columns[1].Type = "varchar(4,2)" }),
			[]string{`pipelines[0].columns[1].type: "varchar(4,2)": varchar takes one modifier, a length`}},
		{"char without length", p0(func(p *Pipeline) { p.Columns[1].Type = "char" }),
			[]string{`pipelines[0].columns[1].type: "char": give char a length, as char(n); PostgreSQL's bare char is char(1)`}},
		{"timestamptz precision 7", p0(func(p *Pipeline) { p.Columns[1].Type = "timestamptz(7)" }),
			[]string{`pipelines[0].columns[1].type: "timestamptz(7)": precision must be between 0 and 6`}},
		{"time with time zone", p0(func(p *Pipeline) { p.Columns[1].Type = "time with time zone" }),
			[]string{`pipelines[0].columns[1].type: "time with time zone": time with time zone is not supported; use time or timestamptz`}},
		{"timestamp precision 7", p0(func(p *Pipeline) { p.Columns[1].Type = "timestamp(7)" }),
			[]string{`pipelines[0].columns[1].type: "timestamp(7)": precision must be between 0 and 6`}},
		{"semantic type unknown", p0(func(p *Pipeline) { p.Columns[1].SemanticType = "micros" }),
			[]string{`pipelines[0].columns[1].semantic_type: "micros" is not one of io.debezium.data.Json, io.debezium.data.VariableScaleDecimal, io.debezium.time.Date, io.debezium.time.MicroTime, io.debezium.time.MicroTimestamp, io.debezium.time.NanoTime, io.debezium.time.NanoTimestamp, io.debezium.time.Time, io.debezium.time.Timestamp, org.apache.kafka.connect.data.Date, org.apache.kafka.connect.data.Decimal, org.apache.kafka.connect.data.Time, org.apache.kafka.connect.data.Timestamp`}},
		{"semantic type of another column type", p0(func(p *Pipeline) {
			p.Columns[1].Type, p.Columns[1].SemanticType = "date", "io.debezium.time.MicroTimestamp"
		}), []string{`pipelines[0].columns[1].semantic_type: io.debezium.time.MicroTimestamp is not read into a date column (only timestamp, timestamptz)`}},
		{"decimal semantic type without scale", p0(func(p *Pipeline) {
			p.Columns[1].Type, p.Columns[1].SemanticType = "numeric", "org.apache.kafka.connect.data.Decimal"
		}), []string{`pipelines[0].columns[1].semantic_type: org.apache.kafka.connect.data.Decimal needs the column's scale: give the type as numeric(p,s)`}},
		{"modifier on text", p0(func(p *Pipeline) { p.Columns[1].Type = "text(5)" }),
			[]string{`pipelines[0].columns[1].type: "text(5)": text takes no modifiers`}},
		{"type injection", p0(func(p *Pipeline) { p.Columns[1].Type = "text); DROP TABLE x; --" }),
			[]string{`pipelines[0].columns[1].type: "text); DROP TABLE x; --" is not a type like numeric(12,2) or varchar(40)`}},
		{"negative max_record_bytes", p0(func(p *Pipeline) { p.MaxRecordBytes = -1 }),
			[]string{"pipelines[0].max_record_bytes: must be positive"}},
		{"max_record_bytes above max_buffered_bytes", func(c *Config) {
			c.MaxBufferedBytes = 1 << 20
			c.Pipelines[0].MaxRecordBytes = 2 << 20
		}, []string{"pipelines[0].max_record_bytes: 2097152 exceeds max_buffered_bytes 1048576"}},
		{"instance_id with a space", func(c *Config) { c.InstanceID = "pod 1" },
			[]string{`instance_id: "pod 1" must match ^[a-zA-Z0-9._-]{1,249}$`}},
		{"column field empty", p0(func(p *Pipeline) { p.Columns[1].Field = "" }),
			[]string{`pipelines[0].columns[1].field: "" is not a field name or dotted path`}},
		{"column field leading dot", p0(func(p *Pipeline) { p.Columns[1].Field = ".note" }),
			[]string{`pipelines[0].columns[1].field: ".note" is not a field name or dotted path`}},
		{"column field trailing dot", p0(func(p *Pipeline) { p.Columns[1].Field = "note." }),
			[]string{`pipelines[0].columns[1].field: "note." is not a field name or dotted path`}},
		{"column field double dot", p0(func(p *Pipeline) { p.Columns[1].Field = "a..b" }),
			[]string{`pipelines[0].columns[1].field: "a..b" is not a field name or dotted path`}},
		{"no key", p0(func(p *Pipeline) { p.Key = nil }),
			[]string{"pipelines[0].key: at least one key column is required"}},
		{"key not a column", p0(func(p *Pipeline) { p.Key = []string{"order_id"} }),
			[]string{`pipelines[0].key[0]: "order_id" is not a column of this pipeline`}},
		{"key listed twice", p0(func(p *Pipeline) { p.Key = []string{"id", "id"} }),
			[]string{`pipelines[0].key[1]: "id" is listed twice`}},
		{"key nullable", p0(func(p *Pipeline) { p.Columns[0].Nullable = true }),
			[]string{`pipelines[0].key[0]: key column "id" cannot be nullable`}},
		{"key jsonb", p0(func(p *Pipeline) { p.Columns[0].Type = "jsonb" }),
			[]string{`pipelines[0].key[0]: key column "id" has type jsonb, which has no canonical form`}},
		{"key bytea", p0(func(p *Pipeline) { p.Columns[0].Type = "bytea" }),
			[]string{`pipelines[0].key[0]: key column "id" has type bytea, which has no canonical form`}},
		{"key double precision", p0(func(p *Pipeline) { p.Columns[0].Type = "double precision" }),
			[]string{`pipelines[0].key[0]: key column "id" has type double precision, which has no canonical form`}},
		{"no date field", p0(func(p *Pipeline) { p.Date.Field = "" }),
			[]string{"pipelines[0].date.field: required"}},
		{"unknown time zone", p0(func(p *Pipeline) { p.Date.TimeZone = "Mars/Olympus_Mons" }),
			[]string{`pipelines[0].date.time_zone: "Mars/Olympus_Mons" is not a known time zone`}},
		{"time zone path", p0(func(p *Pipeline) { p.Date.TimeZone = "../../etc/passwd" }),
			[]string{`pipelines[0].date.time_zone: "../../etc/passwd" is not a known time zone`}},
		{"machine-local time zone", p0(func(p *Pipeline) { p.Date.TimeZone = "Local" }),
			[]string{`pipelines[0].date.time_zone: "Local" depends on the machine; name an IANA zone such as UTC`}},
		{"version without field", p0(func(p *Pipeline) { p.Version = &Version{Type: "bigint"} }),
			[]string{"pipelines[0].version.field: required when version is set"}},
		{"version type", p0(func(p *Pipeline) { p.Version = &Version{Field: "rev", Type: "int"} }),
			[]string{`pipelines[0].version.type: "int" is not bigint or timestamptz`}},
		{"negative batch.max_records", p0(func(p *Pipeline) { p.Batch.MaxRecords = -1 }),
			[]string{"pipelines[0].batch.max_records: must be positive"}},
		{"negative batch.max_bytes", p0(func(p *Pipeline) { p.Batch.MaxBytes = -1 }),
			[]string{"pipelines[0].batch.max_bytes: must be positive"}},
		{"negative batch.linger", p0(func(p *Pipeline) { p.Batch.Linger = -time.Second }),
			[]string{"pipelines[0].batch.linger: must be positive"}},
		{"batch.max_records above max_buffered_records", func(c *Config) {
			c.MaxBufferedRecords = 5000
			c.Pipelines[0].Batch.MaxRecords = 5001
		}, []string{"pipelines[0].batch.max_records: 5001 exceeds max_buffered_records 5000"}},
		{"every problem is reported", func(c *Config) {
			c.Group = ""
			c.Pipelines[0].Table = "Orders"
			c.Pipelines[1].Columns[0].Type = "jsonb"
		}, []string{
			"group: required",
			`pipelines[0].table: "Orders" must match ` + identPattern,
			`pipelines[1].key[0]: key column "id" has type jsonb, which has no canonical form`,
		}},
	}
	reg := func(f func(r *SchemaRegistry), more ...func(*Config)) func(*Config) {
		return func(c *Config) {
			c.SchemaRegistry = &SchemaRegistry{URL: "http://registry:8081", Timeout: DefaultRegistryTimeout}
			f(c.SchemaRegistry)
			for _, m := range more {
				m(c)
			}
		}
	}
	// avroP0 makes pipeline 0 an Avro pipeline with a reader schema, then
	// breaks it with f.
	avroP0 := func(f func(a *Avro)) func(*Config) {
		return p0(func(p *Pipeline) {
			p.Format, p.Avro = "avro", &Avro{ReaderSubject: "orders-value", ReaderVersion: LatestVersion}
			f(p.Avro)
		})
	}
	cases = append(cases, []tc{
		{"unknown format", p0(func(p *Pipeline) { p.Format = "xml" }),
			[]string{`pipelines[0].format: "xml" is not one of json, avro, protobuf, json_schema, debezium`}},
		{"unknown key format", p0(func(p *Pipeline) { p.KeyFormat = "debezium" }),
			[]string{`pipelines[0].key_format: "debezium" is not one of json, avro, protobuf, json_schema`}},
		{"unknown deletes", p0(func(p *Pipeline) { p.Deletes = "soft" }),
			[]string{`pipelines[0].deletes: "soft" is not one of dead_letter, apply, ignore`}},
		{"avro without registry", p0(func(p *Pipeline) { p.Format = "avro" }),
			[]string{`pipelines[0].format: avro needs schema_registry`}},
		{"debezium avro without registry", p0(func(p *Pipeline) {
			p.Format, p.Debezium = "debezium", &Debezium{Encoding: "avro", Version: "lsn"}
		}), []string{`pipelines[0].format: debezium needs schema_registry`}},
		{"debezium options on json", p0(func(p *Pipeline) { p.Debezium = &Debezium{Encoding: "json", Version: "lsn"} }),
			[]string{`pipelines[0].debezium: only for format: debezium`}},
		{"debezium bad version", p0(func(p *Pipeline) { p.Format, p.Debezium = "debezium", &Debezium{Encoding: "json", Version: "scn"} }),
			[]string{`pipelines[0].debezium.version: "scn" is not one of lsn, file_pos, ts_ms`}},
		{"debezium with a version field", p0(func(p *Pipeline) {
			p.Format, p.Debezium, p.Version = "debezium", &Debezium{Encoding: "json", Version: "lsn"}, &Version{Field: "v", Type: "bigint"}
		}), []string{`pipelines[0].version: a Debezium pipeline is ordered by debezium.version, not a field`}},
		{"avro options on json", p0(func(p *Pipeline) { p.Avro = &Avro{ReaderSubject: "orders-value", ReaderVersion: "latest"} }),
			[]string{`pipelines[0].avro: only for format: avro`}},
		{"avro options on protobuf", reg(func(*SchemaRegistry) {}, p0(func(p *Pipeline) {
			p.Format, p.KeyFormat, p.Avro = "protobuf", "protobuf", &Avro{ReaderSubject: "orders-value", ReaderVersion: "latest"}
		})), []string{`pipelines[0].avro: only for format: avro`}},
		{"avro reader without subject", reg(func(*SchemaRegistry) {}, avroP0(func(a *Avro) { a.ReaderSubject = "" })),
			[]string{`pipelines[0].avro.reader_subject: required (the registry subject whose schema records are read as)`}},
		{"avro reader blank subject", reg(func(*SchemaRegistry) {}, avroP0(func(a *Avro) { a.ReaderSubject = "  " })),
			[]string{`pipelines[0].avro.reader_subject: required (the registry subject whose schema records are read as)`}},
		{"avro reader subject with spaces", reg(func(*SchemaRegistry) {}, avroP0(func(a *Avro) { a.ReaderSubject = "orders-value " })),
			[]string{`pipelines[0].avro.reader_subject: "orders-value " has leading or trailing spaces or control characters`}},
		{"avro reader subject with a newline", reg(func(*SchemaRegistry) {}, avroP0(func(a *Avro) { a.ReaderSubject = "orders\nvalue" })),
			[]string{`pipelines[0].avro.reader_subject: "orders\nvalue" has leading or trailing spaces or control characters`}},
		{"avro reader version word", reg(func(*SchemaRegistry) {}, avroP0(func(a *Avro) { a.ReaderVersion = "newest" })),
			[]string{`pipelines[0].avro.reader_version: "newest" is not latest or a version number (1 or more)`}},
		{"avro reader version zero", reg(func(*SchemaRegistry) {}, avroP0(func(a *Avro) { a.ReaderVersion = "0" })),
			[]string{`pipelines[0].avro.reader_version: "0" is not latest or a version number (1 or more)`}},
		{"avro reader version -1", reg(func(*SchemaRegistry) {}, avroP0(func(a *Avro) { a.ReaderVersion = "-1" })),
			[]string{`pipelines[0].avro.reader_version: "-1" is not latest or a version number (1 or more)`}},
		{"avro reader version padded", reg(func(*SchemaRegistry) {}, avroP0(func(a *Avro) { a.ReaderVersion = "03" })),
			[]string{`pipelines[0].avro.reader_version: "03" is not latest or a version number (1 or more)`}},
		{"avro reader version Latest", reg(func(*SchemaRegistry) {}, avroP0(func(a *Avro) { a.ReaderVersion = "Latest" })),
			[]string{`pipelines[0].avro.reader_version: "Latest" is not latest or a version number (1 or more)`}},
		{"avro reader without registry", avroP0(func(*Avro) {}),
			[]string{`pipelines[0].format: avro needs schema_registry`}},
		{"registry url", reg(func(r *SchemaRegistry) { r.URL = "registry:8081" }),
			[]string{`schema_registry.url: "registry:8081" is not an http or https URL`}},
		{"registry url with a password", reg(func(r *SchemaRegistry) { r.URL = "ftp://sr:regPa55@registry:8081" }),
			[]string{`schema_registry.url: "ftp://sr:xxxxx@registry:8081" is not an http or https URL`}},
		{"registry url with a password, unparsable", reg(func(r *SchemaRegistry) { r.URL = "http://sr:regPa55@registry:port" }),
			[]string{`schema_registry.url: "http://xxxxx@registry:port" is not an http or https URL`}},
		{"registry password without user", reg(func(r *SchemaRegistry) { r.Password = "x" }),
			[]string{`schema_registry.user: required with a password`}},
	}...)
	for _, r := range Reserved {
		cases = append(cases, tc{"reserved column " + r, p0(func(p *Pipeline) { p.Columns[1].Name = r }),
			[]string{fmt.Sprintf(`pipelines[0].columns[1].name: %q is reserved for idemsink's own columns`, r)}})
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := parseBase(t)
			tc.mutate(c)
			err := c.Validate()
			want := "invalid config: " + strings.Join(tc.want, "\n")
			if err == nil {
				t.Fatalf("Validate succeeded, want error:\n%s", want)
			}
			if err.Error() != want {
				t.Errorf("Validate error:\n%s\nwant:\n%s", err, want)
			}
		})
	}
}

// TestBadConfigFiles checks rules that only show through Parse: defaults
// meeting limits, and identifiers as YAML spells them.
func TestBadConfigFiles(t *testing.T) {
	for _, tc := range []struct {
		name, old, new string
		want           string
	}{
		{"quoted identifier in YAML",
			"table: orders\n", "table: '\"Orders\"'\n",
			`pipelines[0].table: "\"Orders\"" must match ` + identPattern},
		{"injection in YAML",
			"table: orders\n", "table: \"orders; DROP TABLE x\"\n",
			`pipelines[0].table: "orders; DROP TABLE x" must match ` + identPattern},
		{"duplicate topic across pipelines",
			"topics: [events]\n", "topics: [events, orders]\n",
			`pipelines[1].topics: "orders" is already read by pipeline "orders"`},
		{"negative size",
			"group: g\n", "group: g\nmax_buffered_bytes: -1\n",
			"max_buffered_bytes: must be positive"},
		{"schema default collides",
			"    table: events\n", "    schema: public\n    table: orders\n",
			"pipelines[1].table: public.orders is the target of another pipeline"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			y := strings.Replace(base, tc.old, tc.new, 1)
			if y == base {
				t.Fatalf("%q is not in the base config", tc.old)
			}
			_, err := Parse([]byte(y), nil)
			want := "invalid config: " + tc.want
			if err == nil || err.Error() != want {
				t.Errorf("Parse error:\n%v\nwant:\n%s", err, want)
			}
		})
	}
}

func TestGoodConfigs(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mutate func(c *Config)
	}{
		{"base", func(*Config) {}},
		{"63-character identifiers", func(c *Config) {
			c.Pipelines[0].Table = strings.Repeat("t", 63)
			c.Pipelines[0].Columns[1].Name = "_" + strings.Repeat("9", 62)
		}},
		{"same table in another schema", func(c *Config) {
			c.Pipelines[1].Table = "orders"
			c.Pipelines[1].Schema = "archive"
		}},
		{"every column type outside the key", func(c *Config) {
			for _, typ := range ColumnTypes {
				n := strings.ReplaceAll(typ, " ", "_") + "_col"
				c.Pipelines[0].Columns = append(c.Pipelines[0].Columns, Column{Name: n, Type: typ, Field: "x." + n, Nullable: true})
			}
		}},
		{"every canonical key type", func(c *Config) {
			p := &c.Pipelines[0]
			p.Key = nil
			for _, typ := range []string{"text", "bigint", "integer", "smallint", "numeric", "boolean", "date", "timestamptz", "uuid"} {
				n := typ + "_key"
				p.Columns = append(p.Columns, Column{Name: n, Type: typ, Field: n})
				p.Key = append(p.Key, n)
			}
		}},
		{"sasl mechanisms", func(c *Config) { c.SASL = &SASL{Mechanism: "scram-sha-512", User: "u"} }},
		{"max_records equal to max_buffered_records", func(c *Config) {
			c.MaxBufferedRecords = 5000
			c.Pipelines[0].Batch.MaxRecords = 5000
		}},
		{"time zones", func(c *Config) {
			c.Pipelines[0].Date.TimeZone = "America/New_York"
			c.Pipelines[1].Date.TimeZone = "Etc/GMT-14"
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := parseBase(t)
			tc.mutate(c)
			if err := c.Validate(); err != nil {
				t.Errorf("Validate: %v", err)
			}
		})
	}
}

// A small max_buffered_records lowers the default batch size to fit it.
func TestDefaultMaxRecordsFitsBuffer(t *testing.T) {
	c, err := Parse([]byte(strings.Replace(base, "group: g\n", "group: g\nmax_buffered_records: 100\n", 1)), nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range c.Pipelines {
		if p.Batch.MaxRecords != 100 {
			t.Errorf("pipeline %s: max_records %d, want 100", p.Name, p.Batch.MaxRecords)
		}
	}
}

// IDEMSINK_BROKERS is split on commas and trimmed.
func TestBrokersFromEnvTrimmed(t *testing.T) {
	c, err := Parse([]byte(base), func(k string) string {
		if k == EnvBrokers {
			return " a:1, b:2 ,"
		}
		return ""
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(c.Brokers, "|"); got != "a:1|b:2" {
		t.Errorf("brokers %q, want a:1|b:2", got)
	}
}

// A valid web config file passes, read as the metrics server will read it.
func TestMetricsWebConfigValid(t *testing.T) {
	c := parseBase(t)
	c.MetricsAddr, c.MetricsWebConfigFile = ":9100", "testdata/web.yml"
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
}

// A registry URL's user information moves into user and password (unless
// set), so that the client's errors, which print the URL, carry no password.
func TestRegistryURLUserInfo(t *testing.T) {
	for _, c := range []struct{ url, user, pass, wantURL, wantUser, wantPass string }{
		{"https://sr:pw@registry:8081", "", "", "https://registry:8081", "sr", "pw"},
		{"https://sr:pw@registry:8081", "other", "", "https://registry:8081", "other", ""},
		{"https://sr:pw@registry:8081", "", "env", "https://registry:8081", "sr", "env"},
		{"https://registry:8081", "sr", "pw", "https://registry:8081", "sr", "pw"},
	} {
		r := &SchemaRegistry{URL: c.url, User: c.user, Password: c.pass}
		r.moveUserInfo()
		if r.URL != c.wantURL || r.User != c.wantUser || r.Password != c.wantPass {
			t.Errorf("%s with user %q password %q: %+v, want %s %s %s", c.url, c.user, c.pass, r, c.wantURL, c.wantUser, c.wantPass)
		}
	}
}
