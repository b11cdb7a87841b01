package decode

import (
	"encoding/json"
	"fmt"
	"testing"

	"github.com/idemsink/idemsink/internal/config"
	"github.com/idemsink/idemsink/internal/gen"
	"github.com/idemsink/idemsink/internal/record"
)

// Micro-benchmarks of the per-record work, on the order-line events the
// end-to-end benchmark (cmd/bench) produces. Run them with
//
//	go test -run '^$' -bench . -benchmem ./internal/decode/

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
		if _, _, err := dec.Decode(keys[j], values[j], record.Position{TP: record.TP{Topic: "orders", Partition: 0}, Offset: int64(i)}); err != nil {
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

// BenchmarkNumericValue is the conversion of a canonical Numeric to what
// pgx encodes, done once per numeric value at COPY time.
func BenchmarkNumericValue(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := record.Numeric("12.3").NumericValue(); err != nil {
			b.Fatal(err)
		}
	}
}
