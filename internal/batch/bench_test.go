package batch

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/idemsink/idemsink/internal/config"
	"github.com/idemsink/idemsink/internal/gen"
)

// Micro-benchmarks of the per-record work, on the order-line events the
// end-to-end benchmark (cmd/bench) produces. Run them with
//
//	go test -run '^$' -bench . -benchmem ./internal/batch/

// benchEvents returns n generated order-line events and their pipeline.
func benchEvents(b *testing.B, n int, o gen.Options) (*Decoder, [][]byte, [][]byte) {
	b.Helper()
	p := pipeline(b, gen.Pipeline("orders", "orders", "order_lines"))
	g := gen.New(o)
	keys, values := make([][]byte, n), make([][]byte, n)
	for i := range n {
		e := g.Next()
		keys[i], values[i] = gen.KafkaKey(e.Key()), e.Value
	}
	return NewDecoder(p), keys, values
}

func meanLen(vs [][]byte) int64 {
	var sum int
	for _, v := range vs {
		sum += len(v)
	}
	return int64(sum / len(vs))
}

// BenchmarkDecode is the whole per-record decode: JSON, eleven typed
// columns, target date, version and record_id.
func BenchmarkDecode(b *testing.B) {
	dec, keys, values := benchEvents(b, 1024, gen.Options{Seed: 1})
	b.SetBytes(meanLen(values))
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		j := i % len(values)
		if _, _, err := dec.Decode(keys[j], values[j], Position{TP: TP{"orders", 0}, Offset: int64(i)}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodeJSON is the generic JSON step alone, as Decode does it,
// to show its share of BenchmarkDecode.
func BenchmarkDecodeJSON(b *testing.B) {
	_, _, values := benchEvents(b, 1024, gen.Options{Seed: 1})
	b.SetBytes(meanLen(values))
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		var obj map[string]any
		if err := json.Unmarshal(values[i%len(values)], &obj); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkConvert is the typed conversion of one field by column type,
// from the values encoding/json hands over.
func BenchmarkConvert(b *testing.B) {
	for _, c := range []struct {
		typ string
		raw any
	}{
		{"text", "SKU-4711"},
		{"bigint", json.Number("123456789")},
		{"integer", json.Number("3")},
		{"numeric", json.Number("12.30")},
		{"numeric", "199.99"},
		{"timestamptz", "2026-03-29T01:30:00Z"},
		{"date", "2026-03-29"},
		{"uuid", "6ba7b810-9dad-11d1-80b4-00c04fd430c8"},
	} {
		b.Run(fmt.Sprintf("%s/%v", c.typ, c.raw), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := convert(config.ColumnType{Base: c.typ}, c.raw); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

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

// BenchmarkNumericValue is the conversion of a canonical Numeric to what
// pgx encodes, done once per numeric value at COPY time.
func BenchmarkNumericValue(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Numeric("12.3").NumericValue(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAdd is in-batch dedup: adding decoded rows to batches of the
// default size, with no duplicates and with a stream where a fifth of the
// records repeat or update a key of the same batch. One op is one row.
func BenchmarkAdd(b *testing.B) {
	for _, c := range []struct {
		name string
		o    gen.Options
	}{
		{"unique", gen.Options{Seed: 1}},
		{"dup5_update15", gen.Options{Seed: 1, DupRate: 0.05, UpdateRate: 0.15}},
	} {
		b.Run(c.name, func(b *testing.B) {
			dec, keys, values := benchEvents(b, 20000, c.o)
			rows := make([]Row, len(values))
			for i := range values {
				r, _, err := dec.Decode(keys[i], values[i], Position{TP: TP{"orders", 0}, Offset: int64(i)})
				if err != nil {
					b.Fatal(err)
				}
				rows[i] = r
			}
			p := dec.Pipeline()
			size := p.Batch.MaxRecords
			bt := New(p, Date{2026, 3, 29}, time.Time{})
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				if i%size == 0 {
					bt = New(p, Date{2026, 3, 29}, time.Time{})
				}
				bt.Add(rows[i%len(rows)])
			}
		})
	}
}

// BenchmarkBatchID is the deterministic batch id, computed once per batch.
func BenchmarkBatchID(b *testing.B) {
	dec, keys, values := benchEvents(b, 5000, gen.Options{Seed: 1})
	bt := New(dec.Pipeline(), Date{2026, 3, 29}, time.Time{})
	for i := range values {
		r, _, err := dec.Decode(keys[i], values[i], Position{TP: TP{"orders", int32(i % 6)}, Offset: int64(i)})
		if err != nil {
			b.Fatal(err)
		}
		bt.Add(r)
	}
	b.ReportAllocs()
	for b.Loop() {
		bt.ID()
	}
}
