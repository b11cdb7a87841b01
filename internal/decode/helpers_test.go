package decode

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/idemsink/idemsink/internal/config"
	"github.com/idemsink/idemsink/internal/config/configtest"
	"github.com/idemsink/idemsink/internal/record"
)

// The configuration helpers are configtest's, under the short names the
// tests use.
var (
	pipeline = configtest.Pipeline
	col      = configtest.Col
	nullable = configtest.Nullable
)

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
