package decode

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/idemsink/idemsink/internal/config"
	"github.com/idemsink/idemsink/internal/record"
)

// pipeline validates p inside an otherwise minimal configuration, so that a
// test never runs on a pipeline the daemon would refuse, and returns it with
// defaults applied.
func pipeline(t testing.TB, p config.Pipeline) *config.Pipeline {
	t.Helper()
	if p.Name == "" {
		p.Name = "p"
	}
	if p.Table == "" {
		p.Table = "t"
	}
	if p.Topics == nil {
		p.Topics = []string{"topic"}
	}
	c := config.Config{Brokers: []string{"localhost:9092"}, Group: "g", DatabaseURL: "postgres://x", Pipelines: []config.Pipeline{p}}
	c.SetDefaults()
	if err := c.Validate(); err != nil {
		t.Fatalf("test pipeline: %v", err)
	}
	return &c.Pipelines[0]
}

// col is a non-nullable column whose field is its name.
func col(name, typ string) config.Column { return config.Column{Name: name, Type: typ} }

// nullable is a nullable column whose field is its name.
func nullable(name, typ string) config.Column {
	return config.Column{Name: name, Type: typ, Nullable: true}
}

// badReason returns the reason of a *BadRecord, failing the test if err is
// anything else.
func badReason(t testing.TB, err error) string {
	t.Helper()
	var br *record.BadRecord
	if !errors.As(err, &br) {
		t.Fatalf("error %v (%T) is not a *BadRecord", err, err)
	}
	return br.Reason
}

// decodeJSONValues decodes a JSON array the way Decode reads values.
func decodeJSONValues(t testing.TB, s string) []any {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(s))
	dec.UseNumber()
	var vs []any
	if err := dec.Decode(&vs); err != nil {
		t.Fatalf("values %s: %v", s, err)
	}
	return vs
}

// keyID converts JSON values to the given column types and hashes them,
// as Decode does for key columns.
func keyID(t testing.TB, types []string, values string) record.ID {
	t.Helper()
	raws := decodeJSONValues(t, values)
	if len(raws) != len(types) {
		t.Fatalf("%d types for %d values in %s", len(types), len(raws), values)
	}
	vals := make([]any, len(raws))
	for i, raw := range raws {
		v, err := convert(config.ColumnType{Base: types[i]}, raw)
		if err != nil {
			t.Fatalf("convert %s %s: %v", types[i], values, err)
		}
		vals[i] = v
	}
	return record.RecordID(types, vals)
}
