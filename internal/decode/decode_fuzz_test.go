package decode

import (
	"encoding/json"
	"errors"
	"os"
	"testing"

	"github.com/twmb/franz-go/pkg/sr"

	"github.com/idemsink/idemsink/internal/config"
	"github.com/idemsink/idemsink/internal/record"
	"github.com/idemsink/idemsink/internal/srtest"
)

// fuzzFormat fuzzes the bytes after the Confluent header of one registry
// format: whatever they are, Decode returns a row or a *BadRecord whose
// reason starts with its class, never
// another error and never a panic, and a row's values came from a JSON
// object that the typed conversion accepted.
func fuzzFormat(f *testing.F, format string, register func(reg *srtest.Registry) (id int, index []int, seeds [][]byte)) {
	fuzzPipeline(f, orders(format), register)
}

func fuzzPipeline(f *testing.F, p config.Pipeline, register func(reg *srtest.Registry) (id int, index []int, seeds [][]byte)) {
	reg := srtest.New(f)
	id, index, seeds := register(reg)
	for _, s := range seeds {
		f.Add(s)
	}
	p.Deletes = "apply"
	d := NewDecoder(registryPipeline(f, reg.URL(), p))
	header := srtest.Frame(id, index, nil)
	f.Fuzz(func(t *testing.T, payload []byte) {
		value := append(append([]byte{}, header...), payload...)
		row, _, err := d.Decode([]byte(`{"id":1,"amount":1,"day":"2026-03-01","at":0,"uid":"6ba7b810-9dad-11d1-80b4-00c04fd430c8"}`), value, record.Position{})
		if err != nil {
			fuzzBad(t, err)
			return
		}
		if len(row.Values) != len(p.Columns) {
			t.Fatalf("%d values for %d columns", len(row.Values), len(p.Columns))
		}
		if _, err := json.Marshal(row.Values); err != nil {
			t.Fatalf("values do not encode: %v", err)
		}
	})
}

// fuzzBad fails unless err is a *BadRecord whose reason starts with its
// class.
func fuzzBad(t *testing.T, err error) {
	t.Helper()
	var br *record.BadRecord
	if !errors.As(err, &br) {
		t.Fatalf("error %v (%T) is not a *BadRecord", err, err)
	}
	if br.Class == "" || record.ClassOf(br.Reason) != br.Class {
		t.Fatalf("reason %q does not start with its class %q", br.Reason, br.Class)
	}
}

// FuzzAvro's seeds are valid encodings of the orders schema and its
// evolutions; testdata/fuzz/FuzzAvro holds the committed corpus.
func FuzzAvro(f *testing.F) {
	fuzzFormat(f, "avro", func(reg *srtest.Registry) (int, []int, [][]byte) {
		v1 := reg.Avro("s", orderAvroV1, orderAvroValue())
		v2value := orderAvroValue()
		v2value["note"] = "gift"
		v2 := reg.Avro("s", orderAvroV2, v2value)
		// Fuzz against the newest schema (id 2); v1 bytes are near misses.
		return 2, nil, [][]byte{v2[5:], v1[5:]}
	})
}

// FuzzResolvedAvro fuzzes v1 payloads read as the v2 reader schema
// (avro.reader_subject): skipped and defaulted fields follow the same
// rules. (Not named FuzzAvro...: -fuzz FuzzAvro must match one target.)
func FuzzResolvedAvro(f *testing.F) {
	p := orders("avro")
	p.Avro = &config.Avro{ReaderSubject: "s", ReaderVersion: "latest"}
	fuzzPipeline(f, p, func(reg *srtest.Registry) (int, []int, [][]byte) {
		v1 := reg.Avro("s", orderAvroV1, orderAvroValue())
		reg.Register("s", sr.TypeAvro, orderAvroV2)
		return 1, nil, [][]byte{v1[5:]}
	})
}

// FuzzProtobuf fuzzes the message index and the payload of the orders
// message; testdata/fuzz/FuzzProtobuf holds the committed corpus.
func FuzzProtobuf(f *testing.F) {
	fuzzFormat(f, "protobuf", func(reg *srtest.Registry) (int, []int, [][]byte) {
		v := reg.Proto("s", orderProto, []int{1}, map[string]any{
			"id": int64(7), "amount": "12.30", "day": "2026-03-01", "uid": "6ba7b810-9dad-11d1-80b4-00c04fd430c8",
			"qty": int32(3), "customer": map[string]any{"name": "Zoë"},
			"at": map[string]any{"seconds": int64(1772359200), "nanos": int32(123456000)},
		})
		// The index is part of the fuzzed bytes: frame with none.
		return 1, nil, [][]byte{v[5:], {0}, {2, 2, 0}}
	})
}

// TestFuzzCorpusCommitted checks the seed corpora are in the tree: go test
// runs every entry as a test case (grown by go test -fuzz, copied from the
// fuzz cache).
func TestFuzzCorpusCommitted(t *testing.T) {
	for _, name := range []string{"FuzzAvro", "FuzzProtobuf", "FuzzDebezium"} {
		entries, err := os.ReadDir("testdata/fuzz/" + name)
		if err != nil || len(entries) == 0 {
			t.Errorf("no committed corpus for %s: %v", name, err)
		}
	}
}

// FuzzDebezium fuzzes Debezium JSON events, envelope and all.
func FuzzDebezium(f *testing.F) {
	env, err := os.ReadFile("testdata/debezium/pg_create_envelope.json")
	if err != nil {
		f.Fatal(err)
	}
	for _, v := range [][]byte{env, event("u", `null`, `{"id":1,"name":"a","updated":1772359200000000}`, 300),
		event("d", `{"id":1}`, `null`, 20), []byte(`{"schema":{},"payload":{}}`)} {
		f.Add(v)
	}
	d := NewDecoder(pipeline(f, customers("lsn", "json", "apply")))
	f.Fuzz(func(t *testing.T, value []byte) {
		row, _, err := d.Decode([]byte(`{"id":1}`), value, record.Position{})
		if err != nil {
			fuzzBad(t, err)
			return
		}
		if !row.Delete && !row.Ignore && len(row.Values) != 5 {
			t.Fatalf("%d values", len(row.Values))
		}
	})
}
