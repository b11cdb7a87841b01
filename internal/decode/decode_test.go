package decode

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/sr"
	"github.com/twmb/franz-go/pkg/sr/srfake"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"

	"github.com/idemsink/idemsink/internal/config"
	"github.com/idemsink/idemsink/internal/record"
	"github.com/idemsink/idemsink/internal/srtest"
)

// registryPipeline validates p with a schema registry at url.
func registryPipeline(t testing.TB, url string, p config.Pipeline) *config.Pipeline {
	t.Helper()
	p.Name, p.Table, p.Topics = "p", "t", []string{"topic"}
	c := config.Config{Brokers: []string{"localhost:9092"}, Group: "g", DatabaseURL: "postgres://x",
		Pipelines: []config.Pipeline{p}, SchemaRegistry: &config.SchemaRegistry{URL: url}}
	c.SetDefaults()
	if err := c.Validate(); err != nil {
		t.Fatalf("test pipeline: %v", err)
	}
	return &c.Pipelines[0]
}

// orders has a column of every logical type the registry formats map, all
// of them in the key, so that record_id depends on each.
func orders(format string) config.Pipeline {
	return config.Pipeline{
		Format: format,
		Key:    []string{"id", "amount", "day", "at", "uid"},
		Columns: []config.Column{
			col("id", "bigint"), col("amount", "numeric"), col("day", "date"), col("at", "timestamptz"),
			col("uid", "uuid"), col("qty", "integer"),
			{Name: "customer", Type: "text", Field: "customer.name"},
			nullable("note", "text"),
		},
		Date: config.Date{Field: "at"},
	}
}

const orderJSON = `{"id":7,"amount":"12.30","day":"2026-03-01","at":"2026-03-01T10:00:00.123456Z",
	"uid":"6ba7b810-9dad-11d1-80b4-00c04fd430c8","qty":3,"customer":{"name":"Zoë"},"note":null}`

const orderAvroV1 = `{"type":"record","name":"Order","namespace":"t","fields":[
	{"name":"id","type":"long"},
	{"name":"amount","type":{"type":"bytes","logicalType":"decimal","precision":12,"scale":2}},
	{"name":"day","type":{"type":"int","logicalType":"date"}},
	{"name":"at","type":{"type":"long","logicalType":"timestamp-micros"}},
	{"name":"uid","type":{"type":"string","logicalType":"uuid"}},
	{"name":"qty","type":"int"},
	{"name":"customer","type":{"type":"record","name":"Customer","fields":[{"name":"name","type":"string"}]}}]}`

// v2 adds an optional field; v3 drops qty, which the pipeline requires.
var (
	orderAvroV2 = strings.Replace(orderAvroV1, `]}}]}`, `]}},
	{"name":"note","type":["null","string"],"default":null}]}`, 1)
	orderAvroV3 = strings.Replace(orderAvroV1, `{"name":"qty","type":"int"},`, ``, 1)
)

func orderAvroValue() map[string]any {
	return map[string]any{
		"id": int64(7), "amount": big.NewRat(1230, 100), "day": time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC),
		"at": time.UnixMicro(1772359200123456).UTC(), "uid": "6ba7b810-9dad-11d1-80b4-00c04fd430c8",
		"qty": 3, "customer": map[string]any{"name": "Zoë"},
	}
}

func decodeOK(t *testing.T, d *Decoder, key, value []byte) (record.Row, record.Date) {
	t.Helper()
	row, date, err := d.Decode(key, value, record.Position{TP: record.TP{Topic: "topic", Partition: 0}, Offset: 1})
	if err != nil {
		t.Fatalf("decode: %v", err)
	}
	return row, date
}

// An Avro record and its JSON twin decode to the same typed values, the
// same target date and the same record_id: the canonical encoding does
// not depend on the format that carried the key.
func TestAvroMatchesJSONTwin(t *testing.T) {
	reg := srtest.New(t)
	jrow, jdate := decodeOK(t, NewDecoder(registryPipeline(t, reg.URL(), orders("json"))), nil, []byte(orderJSON))
	d := NewDecoder(registryPipeline(t, reg.URL(), orders("avro")))
	arow, adate := decodeOK(t, d, nil, reg.Avro("orders-value", orderAvroV1, orderAvroValue()))
	if arow.ID != jrow.ID {
		t.Errorf("record_id: Avro %s, JSON %s", arow.ID, jrow.ID)
	}
	if !reflect.DeepEqual(arow.Values, jrow.Values) {
		t.Errorf("values:\n Avro %#v\n JSON %#v", arow.Values, jrow.Values)
	}
	if adate != jdate || adate.String() != "2026-03-01" {
		t.Errorf("date: Avro %s, JSON %s", adate, jdate)
	}
	if got := arow.Values[1]; got != record.Numeric("12.30") { // the decimal's scale, kept by an unconstrained numeric
		t.Errorf("decimal(12,2) 12.30 became %#v", got)
	}
	// The id is pinned: a change to either path that moves it fails here.
	if want := keyID(t, []string{"bigint", "numeric", "date", "timestamptz", "uuid"},
		`[7, 12.3, "2026-03-01", "2026-03-01T10:00:00.123456Z", "6ba7b810-9dad-11d1-80b4-00c04fd430c8"]`); arow.ID != want {
		t.Errorf("record_id %s, want %s", arow.ID, want)
	}
}

// Writers move to new schemas mid-stream: an added optional field flows
// (and fills its nullable column), a removed optional field flows, and a
// schema without a required column's field is bad input that names the
// schema id.
func TestAvroSchemaEvolution(t *testing.T) {
	reg := srtest.New(t)
	d := NewDecoder(registryPipeline(t, reg.URL(), orders("avro")))
	r1, _ := decodeOK(t, d, nil, reg.Avro("orders-value", orderAvroV1, orderAvroValue()))
	v2 := orderAvroValue()
	v2["note"] = "gift"
	r2, _ := decodeOK(t, d, nil, reg.Avro("orders-value", orderAvroV2, v2))
	if r1.Values[7] != nil || r2.Values[7] != "gift" || r1.ID != r2.ID {
		t.Errorf("v1 note %v, v2 note %v, ids %s %s", r1.Values[7], r2.Values[7], r1.ID, r2.ID)
	}
	v3 := orderAvroValue()
	delete(v3, "qty")
	value := reg.Avro("orders-value", orderAvroV3, v3)
	_, _, err := d.Decode(nil, value, record.Position{})
	if got, want := badReason(t, err), `missing-field: field "qty" (column qty): missing or null (schema id 3)`; got != want {
		t.Errorf("reason %q, want %q", got, want)
	}
}

// A schema id the registry does not know is bad input; an outage is not:
// it is reported as RegistryUnavailableError, nothing is cached, and the
// same record decodes once the registry answers again.
func TestRegistryErrors(t *testing.T) {
	reg := srtest.New(t)
	d := NewDecoder(registryPipeline(t, reg.URL(), orders("avro")))
	d.SetRegistryBackoff(time.Nanosecond, time.Nanosecond) // asked again at once after the outage
	_, _, err := d.Decode(nil, srtest.Frame(99, nil, []byte{0}), record.Position{})
	if got := badReason(t, err); !strings.HasPrefix(got, "schema: schema id 99: unknown to the schema registry") {
		t.Errorf("unknown id: %q", got)
	}
	_, _, err = d.Decode(nil, []byte(`{"id":1}`), record.Position{})
	if got := badReason(t, err); !strings.HasPrefix(got, "malformed-payload: Confluent wire format: no magic byte 0") {
		t.Errorf("unframed value: %q", got)
	}
	value := reg.Avro("orders-value", orderAvroV1, orderAvroValue())
	restore := reg.Fail(http.StatusServiceUnavailable)
	_, _, err = d.Decode(nil, value, record.Position{})
	var br *record.BadRecord
	if !Unavailable(err) || errors.As(err, &br) {
		t.Fatalf("registry down: %v (%T), want RegistryUnavailableError", err, err)
	}
	restore()
	decodeOK(t, d, nil, value)

	// A JSON Schema id where Avro is read is bad input.
	js := reg.JSON("other-value", `{"type":"object"}`, orderJSON)
	_, _, err = d.Decode(nil, js, record.Position{})
	if got := badReason(t, err); !strings.Contains(got, "is a JSON schema, but the pipeline reads avro") {
		t.Errorf("wrong schema type: %q", got)
	}
	// Garbage after a valid header is bad input, not a panic.
	_, _, err = d.Decode(nil, srtest.Frame(1, nil, []byte{0xff, 0xff, 0xff}), record.Position{})
	badReason(t, err)
}

// A registry found out is not asked again until its backoff is over:
// meanwhile records whose schemas are not kept fail at once as unavailable,
// so a registry that hangs costs one request timeout, not one per record.
// Schemas already kept still decode, and once the backoff is over the
// registry is asked again.
func TestRegistryOutageBackoff(t *testing.T) {
	reg := srtest.New(t)
	kept := reg.Avro("orders-value", orderAvroV1, orderAvroValue())
	var values [][]byte
	for i := range 5 {
		schema := strings.Replace(orderAvroV1, `"name":"Order"`, fmt.Sprintf(`"name":"Order","doc":"v%d"`, i), 1) // an id of its own
		values = append(values, reg.Avro("orders-value", schema, orderAvroValue()))
	}
	var requests atomic.Int64
	release := make(chan struct{})
	defer close(release)
	hang := atomic.Bool{}
	reg.Intercept(func(w http.ResponseWriter, r *http.Request) bool {
		if !hang.Load() {
			return false
		}
		// Accepts the connection, never answers: the client's timeout ends it.
		requests.Add(1)
		select {
		case <-r.Context().Done():
		case <-release:
		}
		return true
	})
	p := registryPipeline(t, reg.URL(), orders("avro"))
	p.Registry().Timeout = 100 * time.Millisecond
	d := NewDecoder(p)
	d.SetRegistryBackoff(time.Hour, time.Hour)
	decodeOK(t, d, nil, kept)
	hang.Store(true)
	for i, v := range values {
		if _, _, err := d.Decode(nil, v, record.Position{}); !Unavailable(err) {
			t.Fatalf("record %d with the registry hanging: %v, want RegistryUnavailableError", i, err)
		}
	}
	if n := requests.Load(); n != 1 {
		t.Errorf("%d registry requests for %d records during one backoff, want 1", n, len(values))
	}
	decodeOK(t, d, nil, kept) // a kept schema needs no registry
	// The backoff is over (moved to the past, not waited for): the
	// registry is asked again, answers, and every record decodes.
	hang.Store(false)
	d.f.reg.mu.Lock()
	d.f.reg.quietUntil = time.Now().Add(-time.Second)
	d.f.reg.mu.Unlock()
	for _, v := range values {
		decodeOK(t, d, nil, v)
	}
	if n := requests.Load(); n != 1 {
		t.Errorf("%d requests to the hanging registry, want 1", n)
	}
}

const orderProto = `syntax = "proto3";
package t;
import "google/protobuf/timestamp.proto";
message Other { string x = 1; }
message Order {
  int64 id = 1;
  string amount = 2;
  string day = 3;
  google.protobuf.Timestamp at = 4;
  string uid = 5;
  int32 qty = 6;
  Customer customer = 7;
  optional string note = 8;
  message Customer { string name = 1; }
}`

// Protobuf, with a message index past the first message and a well-known
// import, decodes to the JSON twin's values and id.
func TestProtobufMatchesJSONTwin(t *testing.T) {
	reg := srtest.New(t)
	jrow, _ := decodeOK(t, NewDecoder(registryPipeline(t, reg.URL(), orders("json"))), nil, []byte(orderJSON))
	d := NewDecoder(registryPipeline(t, reg.URL(), orders("protobuf")))
	value := reg.Proto("orders-value", orderProto, []int{1}, map[string]any{
		"id": int64(7), "amount": "12.30", "day": "2026-03-01", "uid": "6ba7b810-9dad-11d1-80b4-00c04fd430c8",
		"qty": int32(3), "customer": map[string]any{"name": "Zoë"},
		"at": map[string]any{"seconds": int64(1772359200), "nanos": int32(123456000)},
	})
	prow, _ := decodeOK(t, d, nil, value)
	if prow.ID != jrow.ID || !reflect.DeepEqual(prow.Values, jrow.Values) {
		t.Errorf("Protobuf %s %#v\nJSON %s %#v", prow.ID, prow.Values, jrow.ID, jrow.Values)
	}
	// Index 0 is the other message: its schema lacks the columns' fields.
	other := srtest.Frame(1, []int{0}, nil)
	_, _, err := d.Decode(nil, other, record.Position{})
	if got := badReason(t, err); !strings.Contains(got, "(schema id 1)") || !strings.Contains(got, "missing") {
		t.Errorf("other message: %q", got)
	}
	_, _, err = d.Decode(nil, srtest.Frame(1, []int{5}, nil), record.Position{})
	if got := badReason(t, err); !strings.Contains(got, "no such message") {
		t.Errorf("bad index: %q", got)
	}
}

func TestJSONSchemaFramed(t *testing.T) {
	reg := srtest.New(t)
	jrow, _ := decodeOK(t, NewDecoder(registryPipeline(t, reg.URL(), orders("json"))), nil, []byte(orderJSON))
	d := NewDecoder(registryPipeline(t, reg.URL(), orders("json_schema")))
	row, _ := decodeOK(t, d, nil, reg.JSON("orders-value", `{"type":"object"}`, orderJSON))
	if row.ID != jrow.ID || !reflect.DeepEqual(row.Values, jrow.Values) {
		t.Errorf("JSON Schema %#v, JSON %#v", row.Values, jrow.Values)
	}
	_, _, err := d.Decode(nil, []byte(orderJSON), record.Position{})
	badReason(t, err)
}

// A tombstone under deletes: apply is a delete of the key its key format
// decodes, with the id an upsert of that key gets.
func TestTombstoneKeyFormats(t *testing.T) {
	reg := srtest.New(t)
	p := orders("avro")
	p.Deletes = "apply"
	d := NewDecoder(registryPipeline(t, reg.URL(), p))
	up, _ := decodeOK(t, d, nil, reg.Avro("orders-value", orderAvroV1, orderAvroValue()))
	keySchema := `{"type":"record","name":"Key","fields":[
		{"name":"id","type":"long"},
		{"name":"amount","type":{"type":"bytes","logicalType":"decimal","precision":12,"scale":2}},
		{"name":"day","type":{"type":"int","logicalType":"date"}},
		{"name":"at","type":{"type":"long","logicalType":"timestamp-micros"}},
		{"name":"uid","type":{"type":"string","logicalType":"uuid"}}]}`
	kv := orderAvroValue()
	delete(kv, "qty")
	delete(kv, "customer")
	del, date := decodeOK(t, d, reg.Avro("orders-key", keySchema, kv), nil)
	if !del.Delete || del.ID != up.ID || !date.IsZero() {
		t.Errorf("tombstone: delete %v, id %s (upsert %s), date %s", del.Delete, del.ID, up.ID, date)
	}

	// JSON key, JSON value; a scalar key for a one-column key.
	jp := config.Pipeline{Key: []string{"id"}, Columns: []config.Column{col("id", "bigint")}, Date: config.Date{Field: "ts"}, Deletes: "apply"}
	jd := NewDecoder(registryPipeline(t, reg.URL(), jp))
	a, _ := decodeOK(t, jd, []byte(`{"id":5}`), nil)
	b, _ := decodeOK(t, jd, []byte(`5`), nil)
	c, _ := decodeOK(t, jd, nil, []byte(`{"id":5,"ts":"2026-03-01"}`))
	if a.ID != c.ID || b.ID != c.ID {
		t.Errorf("ids: object key %s, scalar key %s, upsert %s", a.ID, b.ID, c.ID)
	}
	for key, want := range map[string]string{
		"":                          "tombstone: the value is null and there is no key: nothing says which row to delete",
		`{"x":1}`:                   `missing-field: delete key: field "id" (column id): missing or null`,
		`"abc"`:                     `wrong-type: delete key (column id bigint): "abc" is not an integer`,
		`not json`:                  `malformed-json: delete key "not json" is not a JSON object with the key fields`,
		`{"id":1.5}`:                `wrong-type: delete key: field "id" (column id bigint): "1.5" is not an integer`,
		`{"id":1e19}`:               `out-of-range: delete key: field "id" (column id bigint): "1e19" is out of range (-9223372036854775808 to 9223372036854775807)`,
		"{\"id\":1,\"x\":\"\xff\"}": `invalid-text: delete key: field "x": byte 0xff at byte 13 is not valid UTF-8`,
		"\"\xff\"":                  `invalid-text: delete key "\"\xff\"" is not valid UTF-8 or holds a lone UTF-16 surrogate`,
	} {
		_, _, err := jd.Decode([]byte(key), nil, record.Position{})
		if got := badReason(t, err); got != want {
			t.Errorf("key %q: %q, want %q", key, got, want)
		}
	}

	// A versioned pipeline needs the version in the key.
	jp.Version = &config.Version{Field: "v"}
	vd := NewDecoder(registryPipeline(t, reg.URL(), jp))
	r, _ := decodeOK(t, vd, []byte(`{"id":5,"v":9}`), nil)
	if r.Version != 9 {
		t.Errorf("version %d, want 9", r.Version)
	}
	_, _, err := vd.Decode([]byte(`{"id":5}`), nil, record.Position{})
	if got := badReason(t, err); !strings.Contains(got, "needs it in a tombstone's key") {
		t.Errorf("versioned tombstone without version: %q", got)
	}

	// deletes: ignore takes the tombstone and changes nothing.
	jp.Version, jp.Deletes = nil, "ignore"
	ig, _ := decodeOK(t, NewDecoder(registryPipeline(t, reg.URL(), jp)), []byte(`{"id":5}`), nil)
	if !ig.Ignore || ig.Delete {
		t.Errorf("deletes: ignore gave %+v", ig)
	}
}

// The strict checks of JSON hold for the registry formats too, with the
// same classes: every format becomes the same JSON row. A Protobuf message
// is checked by its own decoder; Avro strings are checked as they are
// read, since encoding/json would replace invalid UTF-8 silently.
func TestRegistryFormatsStrict(t *testing.T) {
	reg := srtest.New(t)
	d := NewDecoder(registryPipeline(t, reg.URL(), orders("avro")))
	for name, tc := range map[string]struct {
		customer, want string
	}{
		"invalid UTF-8": {"K\xf6ln", `invalid-text: field customer: field name: string "K\xf6ln" is not valid UTF-8 (schema id 1)`},
		"NUL":           {"a\x00b", `invalid-text: field "customer.name" (column customer text): text contains a NUL character at character 1, which PostgreSQL cannot store (schema id 1)`},
	} {
		v := orderAvroValue()
		v["customer"] = map[string]any{"name": tc.customer}
		_, _, err := d.Decode(nil, reg.Avro("orders-value", orderAvroV1, v), record.Position{})
		if got := badReason(t, err); got != tc.want {
			t.Errorf("%s: %q, want %q", name, got, tc.want)
		}
	}
	small := orders("avro")
	small.MaxRecordBytes = 16
	_, _, err := NewDecoder(registryPipeline(t, reg.URL(), small)).Decode(nil, reg.Avro("orders-value", orderAvroV1, orderAvroValue()), record.Position{})
	if got := badReason(t, err); !strings.HasPrefix(got, "oversize: record is ") {
		t.Errorf("oversize Avro: %q", got)
	}
	// An Avro value is decoded to a tree, not to JSON that checkJSON
	// would read: a value that is no record has the JSON class.
	str := reg.Avro("str-value", `"string"`, "x")
	_, _, err = d.Decode(nil, str, record.Position{})
	if got, want := badReason(t, err), fmt.Sprintf("not-an-object: expected an Avro record, got another type (schema id %d)", binary.BigEndian.Uint32(str[1:5])); got != want {
		t.Errorf("Avro string: %q, want %q", got, want)
	}
	for _, want := range []string{record.ClassPayload, record.ClassSchema, record.ClassEvent} {
		if record.ClassOf(want+": x") != want {
			t.Errorf("ClassOf does not know %s", want)
		}
	}
}

// Confluent's serializers register a Protobuf schema as a base64
// FileDescriptorProto, without json_name; it decodes like the source.
func TestProtobufDescriptorSchema(t *testing.T) {
	reg := srtest.New(t)
	md := srtest.Message(t, orderProto, []int{1})
	fdp := protodesc.ToFileDescriptorProto(md.ParentFile())
	for _, m := range fdp.MessageType {
		for _, f := range m.Field {
			f.JsonName = nil
		}
	}
	b, err := proto.Marshal(fdp)
	if err != nil {
		t.Fatal(err)
	}
	id := reg.Register("orders-value", sr.TypeProtobuf, base64.StdEncoding.EncodeToString(b))
	source := reg.Proto("source-value", orderProto, []int{1}, map[string]any{
		"id": int64(7), "amount": "12.30", "day": "2026-03-01", "uid": "6ba7b810-9dad-11d1-80b4-00c04fd430c8",
		"qty": int32(3), "customer": map[string]any{"name": "Zoë"},
		"at": map[string]any{"seconds": int64(1772359200), "nanos": int32(123456000)},
	})
	d := NewDecoder(registryPipeline(t, reg.URL(), orders("protobuf")))
	want, _ := decodeOK(t, d, nil, source)
	got, _ := decodeOK(t, d, nil, srtest.Frame(id, nil, source[5:]))
	if got.ID != want.ID || !reflect.DeepEqual(got.Values, want.Values) {
		t.Errorf("descriptor schema %#v, source schema %#v", got.Values, want.Values)
	}
	if jsonName("customer_id_2") != "customerId2" || jsonName("x") != "x" {
		t.Errorf("jsonName: %q %q", jsonName("customer_id_2"), jsonName("x"))
	}
}

// The registry over TLS with a private CA and basic auth, the password
// from the environment, as the configuration reference says.
func TestRegistryTLSAndBasicAuth(t *testing.T) {
	fake := srfake.NewRegistry(srfake.WithAuth("Basic " + base64.StdEncoding.EncodeToString([]byte("idemsink:s3cret"))))
	srv := httptest.NewTLSServer(fake.Handler())
	t.Cleanup(srv.Close)
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	id, _, err := fake.RegisterSchema("orders-value", sr.Schema{Schema: orderAvroV1, Type: sr.TypeAvro})
	if err != nil {
		t.Fatal(err)
	}
	s, err := parseAvro(orderAvroV1)
	if err != nil {
		t.Fatal(err)
	}
	payload, err := avroAPI.Marshal(s, orderAvroValue())
	if err != nil {
		t.Fatal(err)
	}
	value := srtest.Frame(id, nil, payload)
	yaml := fmt.Sprintf(`brokers: [localhost:9092]
group: g
database_url: postgres://x
schema_registry: {url: %q, user: idemsink, password: wrong, ca_file: %q}
pipelines:
  - name: p
    topics: [t]
    table: t
    format: avro
    key: [id]
    columns: [{name: id, type: bigint}]
    date: {field: at}
`, srv.URL, ca)
	decoder := func(password string) *Decoder {
		cfg, err := config.Parse([]byte(yaml), func(k string) string {
			if k == config.EnvSchemaRegistryPassword {
				return password
			}
			return ""
		})
		if err != nil {
			t.Fatal(err)
		}
		return NewDecoder(&cfg.Pipelines[0])
	}
	if _, _, err := decoder("s3cret").Decode(nil, value, record.Position{}); err != nil {
		t.Errorf("with the password from the environment: %v", err)
	}
	// Refused credentials are an outage (fix the configuration), not bad
	// input: nothing is dead-lettered.
	if _, _, err := decoder("").Decode(nil, value, record.Position{}); !Unavailable(err) {
		t.Errorf("with the file's wrong password: %v, want RegistryUnavailableError", err)
	}
}

// Schemas that refer to other subjects: an Avro record whose field's type
// is defined in another subject, and a Protobuf schema importing another.
func TestRegistryReferences(t *testing.T) {
	reg := srtest.New(t)
	jrow, _ := decodeOK(t, NewDecoder(registryPipeline(t, reg.URL(), orders("json"))), nil, []byte(orderJSON))

	reg.Register("customer", sr.TypeAvro, `{"type":"record","name":"Customer","namespace":"t","fields":[{"name":"name","type":"string"}]}`)
	withRef := strings.Replace(orderAvroV1, `{"type":"record","name":"Customer","fields":[{"name":"name","type":"string"}]}`, `"t.Customer"`, 1)
	id := reg.Register("orders-value", sr.TypeAvro, withRef, sr.SchemaReference{Name: "t.Customer", Subject: "customer", Version: 1})
	plain := reg.Avro("plain-value", orderAvroV1, orderAvroValue())
	row, _ := decodeOK(t, NewDecoder(registryPipeline(t, reg.URL(), orders("avro"))), nil, srtest.Frame(id, nil, plain[5:]))
	if row.ID != jrow.ID || !reflect.DeepEqual(row.Values, jrow.Values) {
		t.Errorf("Avro with a reference: %#v, want %#v", row.Values, jrow.Values)
	}

	reg.Register("customer.proto", sr.TypeProtobuf, "syntax = \"proto3\";\npackage c;\nmessage Customer { string name = 1; }")
	importing := strings.NewReplacer(
		`import "google/protobuf/timestamp.proto";`, "import \"google/protobuf/timestamp.proto\";\nimport \"customer.proto\";",
		"  Customer customer = 7;", "  c.Customer customer = 7;",
		"  message Customer { string name = 1; }\n", "").Replace(orderProto)
	pid := reg.Register("porders-value", sr.TypeProtobuf, importing, sr.SchemaReference{Name: "customer.proto", Subject: "customer.proto", Version: 1})
	source := reg.Proto("source-value", orderProto, []int{1}, map[string]any{
		"id": int64(7), "amount": "12.30", "day": "2026-03-01", "uid": "6ba7b810-9dad-11d1-80b4-00c04fd430c8",
		"qty": int32(3), "customer": map[string]any{"name": "Zoë"},
		"at": map[string]any{"seconds": int64(1772359200), "nanos": int32(123456000)},
	})
	prow, _ := decodeOK(t, NewDecoder(registryPipeline(t, reg.URL(), orders("protobuf"))), nil, srtest.Frame(pid, []int{1}, source[7:]))
	if prow.ID != jrow.ID || !reflect.DeepEqual(prow.Values, jrow.Values) {
		t.Errorf("Protobuf with an import: %#v, want %#v", prow.Values, jrow.Values)
	}

	// A reference the registry does not have is bad input.
	bad := reg.Register("bad-value", sr.TypeAvro, withRef)
	_, _, err := NewDecoder(registryPipeline(t, reg.URL(), orders("avro"))).Decode(nil, srtest.Frame(bad, nil, plain[5:]), record.Position{})
	if got := badReason(t, err); !strings.HasPrefix(got, fmt.Sprintf("schema: schema id %d: ", bad)) {
		t.Errorf("unresolved named type: %q", got)
	}
}

// An unknown schema id (404: a registry replica lagging) is bad input for
// now, not for ever: within the backoff it is not asked again; after it,
// the registry is asked again and a schema registered meanwhile decodes.
func TestRegistryUnknownIDAskedAgain(t *testing.T) {
	reg := srtest.New(t)
	var requests atomic.Int64
	reg.Intercept(func(http.ResponseWriter, *http.Request) bool { requests.Add(1); return false })
	d := NewDecoder(registryPipeline(t, reg.URL(), orders("avro")))
	d.SetRegistryBackoff(time.Minute, time.Hour)
	if _, err := d.f.registry(); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	d.f.reg.now = func() time.Time { return now }
	// Registered after the record was framed with its id: the id the
	// registry will give the first schema.
	value := srtest.Frame(1, nil, []byte{})
	for range 3 {
		_, _, err := d.Decode(nil, value, record.Position{})
		if got := badReason(t, err); !strings.HasPrefix(got, "schema: schema id 1: unknown to the schema registry") {
			t.Fatalf("before registration: %q", got)
		}
	}
	if n := requests.Load(); n != 1 {
		t.Errorf("%d requests for one unknown id within the backoff, want 1", n)
	}
	framed := reg.Avro("orders-value", orderAvroV1, orderAvroValue())
	if got := framed[1:5]; string(got) != "\x00\x00\x00\x01" {
		t.Fatalf("the schema got id %v, the test wants 1", got)
	}
	now = now.Add(time.Minute)
	decodeOK(t, d, nil, framed)
	if n := requests.Load(); n != 2 { // one ask more, after the backoff
		t.Errorf("%d requests, want 2", n)
	}
}

// Bytes after an Avro or Protobuf record are bad input, as trailing data
// after JSON is; so is an Avro record that ends early, and a Protobuf
// message-index count of -64 is reported as that, not as a bad header.
func TestRegistryTrailingAndIndex(t *testing.T) {
	reg := srtest.New(t)
	d := NewDecoder(registryPipeline(t, reg.URL(), orders("avro")))
	value := reg.Avro("orders-value", orderAvroV1, orderAvroValue())
	decodeOK(t, d, nil, value)
	for name, tc := range map[string]struct {
		value []byte
		want  string
	}{
		"avro trailing": {append(slices.Clone(value), 0), "malformed-payload: decode Avro: bytes after the record (trailing data) (schema id 1)"},
		"avro short":    {value[:len(value)-3], "malformed-payload: decode Avro: the payload ends inside the record (schema id 1)"},
	} {
		_, _, err := d.Decode(nil, tc.value, record.Position{})
		if got := badReason(t, err); got != tc.want {
			t.Errorf("%s: %q, want %q", name, got, tc.want)
		}
	}
	p := NewDecoder(registryPipeline(t, reg.URL(), orders("protobuf")))
	pv := reg.Proto("orders-pb-value", orderProto, []int{1}, map[string]any{"id": int64(7)})
	id := int(binary.BigEndian.Uint32(pv[1:5]))
	for name, tc := range map[string]struct {
		value []byte
		want  string
	}{
		// 0x08 0x07: field 1 again is a valid field; 0xa0 0x06 0x01 is
		// field 100, which Order does not have.
		"protobuf trailing": {append(slices.Clone(pv), 0xa0, 0x06, 0x01), "decode Protobuf t.Order: 3 bytes are fields its writer schema does not have (trailing or foreign data)"},
		"count -64":         {srtest.Frame(id, nil, []byte{0x7f}), "Protobuf message index: count -64 is negative"},
		"count 40":          {srtest.Frame(id, nil, []byte{80}), "Protobuf message index: count 40 is more than 32"},
		"index cut":         {srtest.Frame(id, nil, []byte{4, 2}), "Protobuf message index: index 2 of 2 is missing or not a varint"},
	} {
		_, _, err := p.Decode(nil, tc.value, record.Position{})
		if got := badReason(t, err); !strings.HasPrefix(got, "malformed-payload: "+tc.want) {
			t.Errorf("%s: %q, want %q", name, got, tc.want)
		}
	}
}

// Avro local-timestamp-millis/micros are a wall clock: the same record is
// the same value whatever the host's zone (hamba/avro alone would read it
// through time.Local: 10:00 became 04:30Z in Asia/Kolkata).
func TestAvroLocalTimestampHostZone(t *testing.T) {
	schema := `{"type":"record","name":"E","fields":[{"name":"id","type":"long"},
		{"name":"at","type":{"type":"long","logicalType":"local-timestamp-micros"}},
		{"name":"ms","type":{"type":"long","logicalType":"local-timestamp-millis"}}]}`
	payload := binary.AppendVarint(nil, 7)
	payload = binary.AppendVarint(payload, 1772359200123456) // 2026-03-01 10:00:00.123456
	payload = binary.AppendVarint(payload, 1772359200123)
	p := config.Pipeline{Format: "avro", Key: []string{"id"},
		Columns: []config.Column{col("id", "bigint"), col("at", "timestamp"), col("ms", "timestamptz")}, Date: config.Date{Field: "at"}}
	want := []any{int64(7), time.Date(2026, 3, 1, 10, 0, 0, 123456000, time.UTC), time.Date(2026, 3, 1, 10, 0, 0, 123000000, time.UTC)}
	local := time.Local
	defer func() { time.Local = local }()
	for _, zone := range []string{"UTC", "Asia/Kolkata", "America/New_York"} {
		loc, err := time.LoadLocation(zone)
		if err != nil {
			t.Fatal(err)
		}
		// A registry per zone, started after time.Local is set and closed
		// before it is set again: its HTTP server reads time.Local too
		// (go test -race).
		time.Local = loc
		reg := srtest.New(t)
		id := reg.Register("e-value", sr.TypeAvro, schema)
		d := NewDecoder(registryPipeline(t, reg.URL(), p)) // a registry client of its own: schemas parsed anew
		row, date := decodeOK(t, d, nil, srtest.Frame(id, nil, payload))
		reg.Close()
		if !reflect.DeepEqual(row.Values, want) || date.String() != "2026-03-01" {
			t.Errorf("TZ=%s: %v on %s, want %v", zone, row.Values, date, want)
		}
	}
}
