package decode

import (
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/sr"

	"github.com/idemsink/idemsink/internal/batch"
	"github.com/idemsink/idemsink/internal/config"
	"github.com/idemsink/idemsink/internal/record"
	"github.com/idemsink/idemsink/internal/srtest"
)

func customers(version, encoding, deletes string) config.Pipeline {
	return config.Pipeline{
		Format:   "debezium",
		Debezium: &config.Debezium{Encoding: encoding, Version: version, UnavailableValue: config.DefaultUnavailableValue},
		Deletes:  deletes,
		Key:      []string{"id"},
		Columns: []config.Column{
			col("id", "bigint"), nullable("name", "text"), nullable("price", "numeric"),
			nullable("born", "date"), {Name: "updated", Type: "timestamptz", SemanticType: "io.debezium.time.MicroTimestamp"},
		},
		Date: config.Date{Field: "updated"},
	}
}

// event is a Debezium PostgreSQL event without the schema envelope, in
// the shape the documentation gives.
func event(op, before, after string, lsn int) []byte {
	return []byte(`{"before":` + before + `,"after":` + after + `,"source":{"version":"2.7.3.Final","connector":"postgresql",
		"name":"pg","ts_ms":1772359200123,"snapshot":"false","db":"shop","schema":"public","table":"customers",
		"txId":770,"lsn":` + itoa(lsn) + `,"xmin":null},"op":"` + op + `","ts_ms":1772359200200}`)
}

func itoa(n int) string { return big.NewInt(int64(n)).String() }

// With the schema envelope, Connect's semantic types are read exactly:
// Decimal from its scaled bytes, Date from days, MicroTimestamp from
// microseconds; the version is source.lsn.
func TestDebeziumEnvelope(t *testing.T) {
	value, err := os.ReadFile(filepath.Join("testdata", "debezium", "pg_create_envelope.json"))
	if err != nil {
		t.Fatal(err)
	}
	d := NewDecoder(pipeline(t, customers("lsn", "json", "apply")))
	row, date := decodeOK(t, d, []byte(`{"id":1}`), value)
	want := []any{int64(1), "Ann", record.Numeric("12.34"), time.Date(2022, 1, 8, 0, 0, 0, 0, time.UTC),
		time.UnixMicro(1772359200123456).UTC()}
	for i, w := range want {
		if row.Values[i] != w {
			t.Errorf("column %d: %#v, want %#v", i, row.Values[i], w)
		}
	}
	if row.Version != 23456 || date.String() != "2026-03-01" {
		t.Errorf("version %d, date %s", row.Version, date)
	}
}

// A snapshot read (r) that overlaps the stream carries the snapshot's
// older LSN: in a batch, and so in the table, the streamed update wins
// whatever the Kafka order.
func TestDebeziumSnapshotOverlap(t *testing.T) {
	d := NewDecoder(pipeline(t, customers("lsn", "json", "apply")))
	b := batch.New(d.Pipeline(), record.Date{Year: 2026, Month: 3, Day: 1}, time.Now())
	rows := [][]byte{
		event("u", `null`, `{"id":1,"name":"new","updated":1772359200123456}`, 300),
		event("r", `null`, `{"id":1,"name":"snapshot","updated":1772359200000000}`, 100),
	}
	for i, v := range rows {
		row, _, err := d.Decode(nil, v, record.Position{TP: record.TP{Topic: "t", Partition: 0}, Offset: int64(i)})
		if err != nil {
			t.Fatal(err)
		}
		b.Add(row)
	}
	if len(b.Rows) != 1 || b.Rows[0].Values[1] != "new" || b.Rows[0].Version != 300 {
		t.Fatalf("kept %+v, want the streamed update at lsn 300", b.Rows)
	}
	// updated is microseconds (semantic_type MicroTimestamp), not
	// milliseconds: 2026-03-01 10:00:00.123456 UTC.
	if got, want := b.Rows[0].Values[4], time.Date(2026, 3, 1, 10, 0, 0, 123456000, time.UTC); got != want {
		t.Errorf("updated %v, want %v", got, want)
	}
}

func TestDebeziumDeletes(t *testing.T) {
	d := NewDecoder(pipeline(t, customers("lsn", "json", "apply")))
	up, _ := decodeOK(t, d, nil, event("c", `null`, `{"id":1,"name":"a","updated":1772359200000000}`, 10))
	del, _ := decodeOK(t, d, []byte(`{"id":1}`), event("d", `{"id":1,"name":null,"updated":0}`, `null`, 20))
	if !del.Delete || del.ID != up.ID || del.Version != 20 {
		t.Errorf("delete: %+v", del)
	}
	// Without before (REPLICA IDENTITY NOTHING), the key says which row,
	// with or without its own schema envelope.
	for _, key := range []string{`{"id":1}`, `{"schema":{"type":"struct","fields":[{"type":"int32","field":"id"}]},"payload":{"id":1}}`} {
		k, _ := decodeOK(t, d, []byte(key), event("d", `null`, `null`, 20))
		if !k.Delete || k.ID != up.ID {
			t.Errorf("delete by key %s: %+v", key, k)
		}
	}
	// The tombstone Debezium writes after a delete changes nothing.
	tomb, _ := decodeOK(t, d, []byte(`{"id":1}`), nil)
	if !tomb.Ignore {
		t.Errorf("tombstone after delete: %+v", tomb)
	}
	dl := NewDecoder(pipeline(t, customers("lsn", "json", "")))
	_, _, err := dl.Decode(nil, event("d", `{"id":1}`, `null`, 20), record.Position{})
	if got := badReason(t, err); got != "tombstone: Debezium delete (op d); deletes are dead-lettered (pipeline deletes: dead_letter)" {
		t.Errorf("dead_letter: %q", got)
	}
	for value, want := range map[string]string{
		string(event("t", `null`, `null`, 5)): `debezium-event: Debezium op "t" is not applied (only c, r, u and d are)`,
		string(event("c", `null`, `null`, 5)): `debezium-event: Debezium c event without an after row`,
		`{"op":"c","after":{"id":1}}`:         `debezium-event: Debezium event: no source block`,
		`[1]`:                                 `not-an-object: expected a JSON object, got an array`,
		`{"op":"c",`:                          `malformed-json: the JSON ends unfinished after byte 10`,
		"{\"op\":\"c\",\"after\":{\"name\":\"K\xf6ln\"}}": `invalid-text: field "after.name": byte 0xf6 at byte 28 is not valid UTF-8`,
		"{\"op\":\"c\",\"after\":{\"name\":\"\xff\"}}":    `invalid-text: field "after.name": byte 0xff at byte 27 is not valid UTF-8`,
	} {
		_, _, err := d.Decode(nil, []byte(value), record.Position{})
		if got := badReason(t, err); got != want {
			t.Errorf("%.40s: %q, want %q", value, got, want)
		}
	}
}

func TestDebeziumVersions(t *testing.T) {
	mysql := []byte(`{"before":null,"after":{"id":1,"updated":1772359200000000},"source":{"connector":"mysql",
		"ts_ms":1772359200123,"file":"mysql-bin.000003","pos":154,"row":2},"op":"c"}`)
	row, _ := decodeOK(t, NewDecoder(pipeline(t, customers("file_pos", "json", ""))), nil, mysql)
	if want := int64(3)<<40 | 154<<8 | 2; row.Version != want {
		t.Errorf("file_pos version %d, want %d", row.Version, want)
	}
	row, _ = decodeOK(t, NewDecoder(pipeline(t, customers("ts_ms", "json", ""))), nil, mysql)
	if row.Version != 1772359200123 {
		t.Errorf("ts_ms version %d", row.Version)
	}
	_, _, err := NewDecoder(pipeline(t, customers("lsn", "json", ""))).Decode(nil, mysql, record.Position{})
	if got := badReason(t, err); got != "debezium-event: Debezium event: source.lsn: missing or null" {
		t.Errorf("lsn of a MySQL event: %q", got)
	}
	// A later binlog file orders after any position in an earlier one.
	later := strings.Replace(string(mysql), `"mysql-bin.000003","pos":154`, `"mysql-bin.000004","pos":4`, 1)
	row2, _ := decodeOK(t, NewDecoder(pipeline(t, customers("file_pos", "json", ""))), nil, []byte(later))
	if row2.Version <= row.Version {
		t.Errorf("file 4 pos 4 (%d) is not after file 3 pos 154", row2.Version)
	}
}

const debeziumAvro = `{"type":"record","name":"Envelope","namespace":"pg.public.customers","fields":[
	{"name":"before","type":["null",{"type":"record","name":"Value","fields":[
		{"name":"id","type":"int"},
		{"name":"name","type":["null","string"],"default":null},
		{"name":"price","type":["null",{"type":"bytes","scale":2,"precision":10,"connect.version":1,
			"connect.parameters":{"scale":"2","connect.decimal.precision":"10"},
			"connect.name":"org.apache.kafka.connect.data.Decimal","logicalType":"decimal"}],"default":null},
		{"name":"born","type":["null",{"type":"int","connect.version":1,"connect.name":"io.debezium.time.Date"}],"default":null},
		{"name":"updated","type":{"type":"long","connect.version":1,"connect.name":"io.debezium.time.MicroTimestamp"}}],
		"connect.name":"pg.public.customers.Value"}],"default":null},
	{"name":"after","type":["null","Value"],"default":null},
	{"name":"source","type":{"type":"record","name":"Source","namespace":"io.debezium.connector.postgresql","fields":[
		{"name":"connector","type":"string"},
		{"name":"ts_ms","type":"long"},
		{"name":"lsn","type":["null","long"],"default":null}]}},
	{"name":"op","type":"string"},
	{"name":"ts_ms","type":["null","long"],"default":null}],
	"connect.name":"pg.public.customers.Envelope"}`

// Debezium's Avro, through the registry: connect.name types and the Avro
// decimal give the same values as the JSON envelope.
func TestDebeziumAvro(t *testing.T) {
	reg := srtest.New(t)
	d := NewDecoder(registryPipeline(t, reg.URL(), customers("lsn", "avro", "apply")))
	value := reg.Avro("pg.public.customers-value", debeziumAvro, map[string]any{
		"before": nil,
		"after": map[string]any{"pg.public.customers.Value": map[string]any{
			"id": 1, "name": map[string]any{"string": "Ann"}, "price": map[string]any{"bytes.decimal": big.NewRat(1234, 100)},
			"born": map[string]any{"int": 19000}, "updated": int64(1772359200123456)}},
		"source": map[string]any{"connector": "postgresql", "ts_ms": int64(1772359200123), "lsn": map[string]any{"long": int64(23456)}},
		"op":     "c", "ts_ms": map[string]any{"long": int64(1772359200200)},
	})
	row, _ := decodeOK(t, d, nil, value)
	env, err := os.ReadFile(filepath.Join("testdata", "debezium", "pg_create_envelope.json"))
	if err != nil {
		t.Fatal(err)
	}
	jrow, _ := decodeOK(t, NewDecoder(pipeline(t, customers("lsn", "json", "apply"))), nil, env)
	for i := range row.Values {
		if row.Values[i] != jrow.Values[i] {
			t.Errorf("column %d: Avro %#v, JSON %#v", i, row.Values[i], jrow.Values[i])
		}
	}
	if row.ID != jrow.ID || row.Version != 23456 {
		t.Errorf("id %s (JSON %s), version %d", row.ID, jrow.ID, row.Version)
	}
}

// Debezium Avro rows go to the column conversion without a JSON round
// trip; the strict checks and their classes hold all the same.
func TestDebeziumAvroStrict(t *testing.T) {
	reg := srtest.New(t)
	d := NewDecoder(registryPipeline(t, reg.URL(), customers("lsn", "avro", "apply")))
	value := func(name string) []byte {
		return reg.Avro("pg.public.customers-value", debeziumAvro, map[string]any{
			"before": nil,
			"after": map[string]any{"pg.public.customers.Value": map[string]any{
				"id": 1, "name": map[string]any{"string": name}, "price": nil,
				"born": nil, "updated": int64(1772359200123456)}},
			"source": map[string]any{"connector": "postgresql", "ts_ms": int64(1772359200123), "lsn": map[string]any{"long": int64(23456)}},
			"op":     "c", "ts_ms": nil,
		})
	}
	id := reg.Register("other-value", sr.TypeJSON, `{"type":"object"}`)
	for name, tc := range map[string]struct {
		value []byte
		want  string
	}{
		"invalid UTF-8": {value("K\xf6ln"), `invalid-text: field after: field name: string "K\xf6ln" is not valid UTF-8 (schema id 2)`},
		"NUL":           {value("a\x00b"), `invalid-text: field "name" (column name text): text contains a NUL character at character 1, which PostgreSQL cannot store (schema id 2)`},
		"JSON schema":   {srtest.Frame(id, nil, []byte(`{}`)), `schema: schema id 1 is a JSON schema, but the pipeline reads avro`},
	} {
		_, _, err := d.Decode(nil, tc.value, record.Position{})
		if got := badReason(t, err); got != tc.want {
			t.Errorf("%s: %q, want %q", name, got, tc.want)
		}
	}
}
