package config

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// env returns a getenv func over a fixed map.
func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestLoadFull(t *testing.T) {
	got, err := Load(filepath.Join("testdata", "full.yaml"), nil)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	reg := &SchemaRegistry{URL: "https://registry:8081", User: "idemsink", Password: "from-the-file",
		CAFile: "/etc/idemsink/ca.pem", Timeout: 5 * time.Second}
	want := &Config{
		SchemaRegistry: reg,
		Brokers:        []string{"kafka-1:9092", "kafka-2:9092"},
		Group:          "idemsink",
		DatabaseURL:    "postgres://idemsink@db:5432/idemsink",
		SASL:           &SASL{Mechanism: "scram-sha-512", User: "idemsink", Password: "from-the-file"},
		TLS:            TLS{Enabled: true},
		MetricsAddr:    ":9100",

		MaxBufferedRecords: 20000,
		MaxBufferedBytes:   32 << 20,
		ShutdownTimeout:    20 * time.Second,
		SessionTimeout:     DefaultSessionTimeout,
		RebalanceTimeout:   90 * time.Second,
		RetryBackoff:       DefaultRetryBackoff,
		RetryBackoffMax:    DefaultRetryBackoffMax,
		ApplyConnections:   3,
		ApplyTimeout:       45 * time.Second,
		StartOffset:        "latest",
		Pipelines: []Pipeline{
			{
				Name:   "orders",
				Topics: []string{"orders.v1", "orders.v2"},
				Schema: "public",
				Table:  "orders",
				Key:    []string{"order_id"},
				Columns: []Column{
					{Name: "order_id", Type: "bigint", Field: "id"},
					{Name: "customer", Type: "text", Field: "customer.name", Nullable: true},
					{Name: "amount", Type: "numeric", Field: "amount"},
					{Name: "placed_at", Type: "timestamptz", Field: "placed_at"},
				},
				Date:    Date{Field: "placed_at", TimeZone: "Europe/Berlin"},
				Version: &Version{Field: "rev", Type: "bigint"},
				Batch:   Batch{MaxRecords: 1000, MaxBytes: 8 << 20, Linger: 2 * time.Second},
				Format:  "json", KeyFormat: "json", Deletes: "dead_letter", registry: reg,
				MaxRecordBytes: DefaultMaxRecordBytes,
			},
			{
				Name:   "events",
				Topics: []string{"events"},
				Schema: "raw",
				Table:  "events",
				Key:    []string{"tenant", "event_id"},
				Columns: []Column{
					{Name: "tenant", Type: "text", Field: "tenant"},
					{Name: "event_id", Type: "uuid", Field: "meta.id"},
					{Name: "payload", Type: "jsonb", Field: "payload", Nullable: true},
				},
				Date:    Date{Field: "day", TimeZone: "UTC"},
				Version: &Version{Field: "meta.at", Type: "timestamptz"},
				Batch:   Batch{MaxRecords: DefaultMaxRecords, MaxBytes: 512 << 10, Linger: DefaultLinger},
				Format:  "avro", KeyFormat: "avro", Deletes: "apply", registry: reg,
				MaxRecordBytes: DefaultMaxRecordBytes,
			},
			{
				Name: "customers", Topics: []string{"pg.public.customers"}, Schema: "public", Table: "customers",
				Key: []string{"id"}, Columns: []Column{{Name: "id", Type: "bigint", Field: "id"}},
				Date:   Date{Field: "created", TimeZone: "UTC"},
				Batch:  Batch{MaxRecords: DefaultMaxRecords, MaxBytes: DefaultMaxBytes, Linger: DefaultLinger},
				Format: "debezium", KeyFormat: "json", Deletes: "dead_letter", registry: reg,
				Debezium: &Debezium{Encoding: "json", Version: "file_pos", UnavailableValue: DefaultUnavailableValue}, MaxRecordBytes: DefaultMaxRecordBytes,
			},
		},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Load(full.yaml):\n got  %+v\n want %+v", got, want)
		for i := range min(len(got.Pipelines), len(want.Pipelines)) {
			if !reflect.DeepEqual(got.Pipelines[i], want.Pipelines[i]) {
				t.Errorf("pipelines[%d]:\n got  %+v\n want %+v", i, got.Pipelines[i], want.Pipelines[i])
			}
		}
	}

	if got, want := got.Topics(), []string{"orders.v1", "orders.v2", "events", "pg.public.customers"}; !reflect.DeepEqual(got, want) {
		t.Errorf("Topics() = %q, want %q", got, want)
	}
	p := &got.Pipelines[0]
	if got, want := p.ColumnNames(), []string{"order_id", "customer", "amount", "placed_at"}; !reflect.DeepEqual(got, want) {
		t.Errorf("ColumnNames() = %q, want %q", got, want)
	}
	if c := p.Column("amount"); c == nil || c.Type != "numeric" {
		t.Errorf("Column(amount) = %+v, want the numeric column", c)
	}
	if c := p.Column("nope"); c != nil {
		t.Errorf("Column(nope) = %+v, want nil", c)
	}
	if loc := p.Location(); loc.String() != "Europe/Berlin" {
		t.Errorf("Location() = %s, want Europe/Berlin", loc)
	}
	if loc := got.Pipelines[1].Location(); loc != time.UTC {
		t.Errorf("Location() of the default zone = %s, want UTC", loc)
	}
}

// minimal is the smallest valid configuration; defaults fill the rest.
const minimal = `
brokers: [localhost:9092]
group: g
database_url: postgres://localhost/db
pipelines:
  - name: p
    topics: [t]
    table: tbl
    key: [id]
    columns: [{name: id, type: bigint}]
    date: {field: ts}
`

func TestParseDefaults(t *testing.T) {
	c, err := Parse([]byte(minimal), nil)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	for _, tc := range []struct {
		name      string
		got, want any
	}{
		{"max_buffered_records", c.MaxBufferedRecords, DefaultMaxBufferedRecords},
		{"max_buffered_bytes", c.MaxBufferedBytes, ByteSize(64 << 20)},
		{"shutdown_timeout", c.ShutdownTimeout, 30 * time.Second},
		{"session_timeout", c.SessionTimeout, 45 * time.Second},
		{"rebalance_timeout", c.RebalanceTimeout, 60 * time.Second},
		{"retry_backoff", c.RetryBackoff, 200 * time.Millisecond},
		{"retry_backoff_max", c.RetryBackoffMax, 10 * time.Second},
		{"apply_connections", c.ApplyConnections, 2},
		{"apply_timeout", c.ApplyTimeout, 30 * time.Second},
		{"start_offset", c.StartOffset, "earliest"},
		{"sasl", c.SASL, (*SASL)(nil)},
		{"schema", c.Pipelines[0].Schema, "public"},
		{"date.time_zone", c.Pipelines[0].Date.TimeZone, "UTC"},
		{"version", c.Pipelines[0].Version, (*Version)(nil)},
		{"batch.max_records", c.Pipelines[0].Batch.MaxRecords, 5000},
		{"batch.max_bytes", c.Pipelines[0].Batch.MaxBytes, ByteSize(8 << 20)},
		{"batch.linger", c.Pipelines[0].Batch.Linger, 500 * time.Millisecond},
		{"columns[0].field", c.Pipelines[0].Columns[0].Field, "id"},
	} {
		if !reflect.DeepEqual(tc.got, tc.want) {
			t.Errorf("%s = %v, want %v", tc.name, tc.got, tc.want)
		}
	}
}

func TestParseVersionTypeDefault(t *testing.T) {
	c, err := Parse([]byte(minimal+"    version: {field: rev}\n"), nil)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if got := *c.Pipelines[0].Version; got != (Version{Field: "rev", Type: "bigint"}) {
		t.Errorf("version = %+v, want field rev of type bigint", got)
	}
}

// The Avro reader schema as YAML spells it: the version defaults to
// latest, a bare number is a version, and the block is strict.
func TestParseAvroReader(t *testing.T) {
	const registry = "schema_registry: {url: http://registry:8081}\n"
	avroP := registry + minimal + "    format: avro\n"
	for _, tc := range []struct {
		name, yaml string
		want       Avro
		version    int
		err        string
	}{
		{name: "latest by default", yaml: avroP + "    avro: {reader_subject: orders-value}\n",
			want: Avro{ReaderSubject: "orders-value", ReaderVersion: "latest"}, version: -1},
		{name: "latest", yaml: avroP + "    avro: {reader_subject: orders-value, reader_version: latest}\n",
			want: Avro{ReaderSubject: "orders-value", ReaderVersion: "latest"}, version: -1},
		{name: "a version number", yaml: avroP + "    avro: {reader_subject: orders-value, reader_version: 3}\n",
			want: Avro{ReaderSubject: "orders-value", ReaderVersion: "3"}, version: 3},
		{name: "unknown key", yaml: avroP + "    avro: {reader_subjet: orders-value}\n",
			err: "field reader_subjet not found in type config.Avro"},
		{name: "version 0", yaml: avroP + "    avro: {reader_subject: orders-value, reader_version: 0}\n",
			err: `invalid config: pipelines[0].avro.reader_version: "0" is not latest or a version number (1 or more)`},
		{name: "a fraction", yaml: avroP + "    avro: {reader_subject: orders-value, reader_version: 1.5}\n",
			err: `invalid config: pipelines[0].avro.reader_version: "1.5" is not latest or a version number (1 or more)`},
		{name: "empty block", yaml: avroP + "    avro: {}\n",
			err: `invalid config: pipelines[0].avro.reader_subject: required (the registry subject whose schema records are read as)`},
		{name: "on a json pipeline", yaml: registry + minimal + "    avro: {reader_subject: orders-value}\n",
			err: `invalid config: pipelines[0].avro: only for format: avro`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse([]byte(tc.yaml), nil)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("Parse error %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			a := c.Pipelines[0].Avro
			if a == nil || *a != tc.want || a.Version() != tc.version {
				t.Errorf("avro = %+v (version %d), want %+v (version %d)", a, a.Version(), tc.want, tc.version)
			}
		})
	}
}

func TestByteSize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want ByteSize
		err  string
	}{
		{in: "1048576", want: 1 << 20},
		{in: "0", want: 0},
		{in: "100B", want: 100},
		{in: "512KiB", want: 512 << 10},
		{in: "8MiB", want: 8 << 20},
		{in: "8 MiB", want: 8 << 20},
		{in: "2GiB", want: 2 << 30},
		{in: "-1", want: -1}, // refused by Validate, not by the parser
		{in: "8589934591GiB", want: 8589934591 << 30},
		{in: "9223372036854775807", want: 9223372036854775807},
		{in: "8589934592GiB", err: `"8589934592GiB" is not a size`},   // 2^63: would wrap negative
		{in: "17179869184GiB", err: `"17179869184GiB" is not a size`}, // 2^64: would wrap to 0, then to the default
		{in: "9223372036854775808", err: `"9223372036854775808" is not a size`},
		{in: "8 MB", err: `line 1: "8 MB" is not a size (like 1048576 or 8MiB)`},
		{in: "8MB", err: `"8MB" is not a size`},
		{in: "8mib", err: `"8mib" is not a size`},
		{in: "8M", err: `"8M" is not a size`},
		{in: "1.5MiB", err: `"1.5MiB" is not a size`},
		{in: "0x10", err: `"0x10" is not a size`},
		{in: "+5", err: `"+5" is not a size`},
		{in: "5 apples", err: `"5 apples" is not a size`},
		{in: `""`, err: `"" is not a size`},
		{in: "MiB", err: `"MiB" is not a size`},
	} {
		t.Run(tc.in, func(t *testing.T) {
			var v struct {
				Size ByteSize `yaml:"size"`
			}
			err := decodeStrict([]byte("size: "+tc.in), &v)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("decode %q: error %v, want one containing %q", tc.in, err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("decode %q: %v", tc.in, err)
			}
			if v.Size != tc.want {
				t.Errorf("decode %q = %d, want %d", tc.in, v.Size, tc.want)
			}
		})
	}
}

// TestParseErrors covers what fails before validation: syntax, strict
// decoding and types.
func TestParseErrors(t *testing.T) {
	for _, tc := range []struct {
		name, yaml string
		want       []string
	}{
		{
			name: "unknown top-level key",
			yaml: minimal + "max_buffered_recrods: 10\n",
			want: []string{"parse config:", "field max_buffered_recrods not found in type config.Config"},
		},
		{
			name: "unknown pipeline key",
			yaml: strings.Replace(minimal, "    table: tbl\n", "    table: tbl\n    tabel: tbl\n", 1),
			want: []string{"field tabel not found in type config.Pipeline"},
		},
		{
			name: "unknown column key",
			yaml: strings.Replace(minimal, "type: bigint}", "type: bigint, nulable: true}", 1),
			want: []string{"field nulable not found in type config.Column"},
		},
		{
			name: "unknown batch key",
			yaml: minimal + "    batch: {max_record: 10}\n",
			want: []string{"field max_record not found in type config.Batch"},
		},
		{
			name: "unknown sasl key",
			yaml: minimal + "sasl: {mechanism: plain, user: u, pass: x}\n",
			want: []string{"field pass not found in type config.SASL"},
		},
		{
			name: "bad size",
			yaml: minimal + "    batch: {max_bytes: 8 MB}\n",
			want: []string{`parse config: line 12: "8 MB" is not a size (like 1048576 or 8MiB)`},
		},
		{
			name: "bad duration",
			yaml: minimal + "shutdown_timeout: 30 seconds\n",
			want: []string{"parse config:", "cannot unmarshal !!str `30 seconds` into time.Duration"},
		},
		{
			name: "duration without a unit",
			yaml: minimal + "shutdown_timeout: 30\n",
			want: []string{"parse config:", "into time.Duration"},
		},
		{
			name: "string for an integer",
			yaml: minimal + "max_buffered_records: lots\n",
			want: []string{"parse config:", "cannot unmarshal !!str `lots` into int"},
		},
		{
			name: "not YAML",
			yaml: "brokers: [unclosed\n",
			want: []string{"parse config:"},
		},
		{
			name: "empty document",
			yaml: "",
			want: []string{"parse config: EOF"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse([]byte(tc.yaml), nil)
			if err == nil {
				t.Fatalf("Parse succeeded (%+v), want an error", c)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestEnvOverrides(t *testing.T) {
	withSASL := minimal + "sasl: {mechanism: plain, user: u, password: file-secret}\n"
	for _, tc := range []struct {
		name     string
		yaml     string
		env      map[string]string
		url      string
		brokers  []string
		password string // "-" when sasl is absent
	}{
		{
			name: "no environment", yaml: withSASL,
			url: "postgres://localhost/db", brokers: []string{"localhost:9092"}, password: "file-secret",
		},
		{
			name: "everything overridden", yaml: withSASL,
			env: map[string]string{
				EnvDatabaseURL:  "postgres://prod/db",
				EnvBrokers:      "k1:9092,k2:9093",
				EnvSASLPassword: "env-secret",
			},
			url: "postgres://prod/db", brokers: []string{"k1:9092", "k2:9093"}, password: "env-secret",
		},
		{
			name: "empty values do not override", yaml: withSASL,
			env: map[string]string{EnvDatabaseURL: "", EnvBrokers: "", EnvSASLPassword: ""},
			url: "postgres://localhost/db", brokers: []string{"localhost:9092"}, password: "file-secret",
		},
		{
			name: "password without sasl is ignored", yaml: minimal,
			env: map[string]string{EnvSASLPassword: "env-secret"},
			url: "postgres://localhost/db", brokers: []string{"localhost:9092"}, password: "-",
		},
		{
			name: "database url only from the environment",
			yaml: strings.Replace(minimal, "database_url: postgres://localhost/db\n", "", 1),
			env:  map[string]string{EnvDatabaseURL: "postgres://env/db"},
			url:  "postgres://env/db", brokers: []string{"localhost:9092"}, password: "-",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse([]byte(tc.yaml), env(tc.env))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if c.DatabaseURL != tc.url {
				t.Errorf("database_url = %q, want %q", c.DatabaseURL, tc.url)
			}
			if !reflect.DeepEqual(c.Brokers, tc.brokers) {
				t.Errorf("brokers = %q, want %q", c.Brokers, tc.brokers)
			}
			switch {
			case tc.password == "-" && c.SASL != nil:
				t.Errorf("sasl = %+v, want none", c.SASL)
			case tc.password != "-" && (c.SASL == nil || c.SASL.Password != tc.password):
				t.Errorf("sasl = %+v, want password %q", c.SASL, tc.password)
			}
		})
	}
}

func TestEnvBrokersAreValidated(t *testing.T) {
	_, err := Parse([]byte(minimal), env(map[string]string{EnvBrokers: "k1:9092,k2"}))
	const want = `invalid config: brokers[1]: "k2" is not host:port`
	if err == nil || err.Error() != want {
		t.Fatalf("Parse with %s=k1:9092,k2: error %v, want %q", EnvBrokers, err, want)
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "nope.yaml"), nil)
	if err == nil || !strings.HasPrefix(err.Error(), "read config: ") || !os.IsNotExist(unwrapAll(err)) {
		t.Fatalf("Load of a missing file: error %v, want a wrapped not-exist error", err)
	}
}

func unwrapAll(err error) error {
	for {
		u, ok := err.(interface{ Unwrap() error })
		if !ok {
			return err
		}
		err = u.Unwrap()
	}
}

func decodeStrict(b []byte, v any) error {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	return dec.Decode(v)
}

// IDEMSINK_INSTANCE_ID, which every shipped deployment sets (deploy/: the
// StatefulSet's pod name, the compose service name, the systemd host name),
// overrides instance_id and is validated like it; an empty value does not
// override.
func TestEnvInstanceID(t *testing.T) {
	withID := minimal + "instance_id: from-the-file\n"
	for _, tc := range []struct {
		name, yaml, env, want, err string
	}{
		{name: "from the environment", yaml: minimal, env: "idemsink-0", want: "idemsink-0"},
		{name: "overrides the file", yaml: withID, env: "host-1.example.com", want: "host-1.example.com"},
		{name: "empty keeps the file's", yaml: withID, env: "", want: "from-the-file"},
		{name: "neither: a dynamic member", yaml: minimal, env: "", want: ""},
		{name: "validated", yaml: minimal, env: "pod 1",
			err: `invalid config: instance_id: "pod 1" must match ^[a-zA-Z0-9._-]{1,249}$`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse([]byte(tc.yaml), env(map[string]string{EnvInstanceID: tc.env}))
			if tc.err != "" {
				if err == nil || err.Error() != tc.err {
					t.Fatalf("Parse: error %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if c.InstanceID != tc.want {
				t.Errorf("instance_id = %q, want %q", c.InstanceID, tc.want)
			}
		})
	}
}

// The compose stack's file with what compose.yaml passes each replica.
func TestComposeConfigInstanceID(t *testing.T) {
	c, err := Load(filepath.Join("..", "..", "deploy", "compose", "idemsink.yaml"), env(map[string]string{
		EnvDatabaseURL: "postgres://idemsink:idemsink@postgres:5432/idemsink?sslmode=disable",
		EnvInstanceID:  "idemsink-1",
	}))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if c.InstanceID != "idemsink-1" || c.SessionTimeout != 45*time.Second {
		t.Errorf("instance_id %q, session_timeout %v; want idemsink-1, 45s", c.InstanceID, c.SessionTimeout)
	}
}
