package record

import (
	"testing"
	"time"
)

// Micro-benchmarks of the record id. Run them with
//
//	go test -run '^$' -bench . -benchmem ./internal/record/

// BenchmarkCanonical is the canonical encoding of the order-line key
// (bigint, integer), without the hash.
func BenchmarkCanonical(b *testing.B) {
	vals := []any{int64(123456789), int32(3)}
	types := []string{"bigint", "integer"}
	buf := make([]byte, 0, 256)
	b.ReportAllocs()
	for b.Loop() {
		buf = append(buf[:0], idDomain...)
		for i, v := range vals {
			buf = appendCanonical(buf, types[i], v)
		}
	}
}

// BenchmarkRecordID is canonical encoding and SHA-256 of a key.
func BenchmarkRecordID(b *testing.B) {
	for _, c := range []struct {
		name  string
		types []string
		vals  []any
	}{
		{"bigint,integer", []string{"bigint", "integer"}, []any{int64(123456789), int32(3)}},
		{"text,date", []string{"text", "date"}, []any{"customer-000123456", time.Date(2026, 3, 29, 0, 0, 0, 0, time.UTC)}},
		{"numeric,timestamptz,uuid", []string{"numeric", "timestamptz", "uuid"},
			[]any{Numeric("12.3"), time.Date(2026, 3, 29, 1, 30, 0, 0, time.UTC), [16]byte{1, 2, 3}}},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				RecordID(c.types, c.vals)
			}
		})
	}
}
