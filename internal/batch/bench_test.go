package batch

import (
	"testing"
	"time"

	"github.com/idemsink/idemsink/internal/decode"
	"github.com/idemsink/idemsink/internal/gen"
	"github.com/idemsink/idemsink/internal/record"
)

// Micro-benchmarks of the per-record work, on the order-line events the
// end-to-end benchmark (cmd/bench) produces. Run them with
//
//	go test -run '^$' -bench . -benchmem ./internal/batch/

// benchEvents returns n generated order-line events and their pipeline.
func benchEvents(b *testing.B, n int, o gen.Options) (*decode.Decoder, [][]byte, [][]byte) {
	b.Helper()
	p := pipeline(b, gen.Pipeline("orders", "orders", "order_lines"))
	g := gen.New(o)
	keys, values := make([][]byte, n), make([][]byte, n)
	for i := range n {
		e := g.Next()
		keys[i], values[i] = gen.KafkaKey(e.Key()), e.Value
	}
	return decode.NewDecoder(p), keys, values
}

func meanLen(vs [][]byte) int64 {
	var sum int
	for _, v := range vs {
		sum += len(v)
	}
	return int64(sum / len(vs))
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
			rows := make([]record.Row, len(values))
			for i := range values {
				r, _, err := dec.Decode(keys[i], values[i], record.Position{TP: record.TP{Topic: "orders", Partition: 0}, Offset: int64(i)})
				if err != nil {
					b.Fatal(err)
				}
				rows[i] = r
			}
			p := dec.Pipeline()
			size := p.Batch.MaxRecords
			bt := New(p, record.Date{Year: 2026, Month: 3, Day: 29}, time.Time{})
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				if i%size == 0 {
					bt = New(p, record.Date{Year: 2026, Month: 3, Day: 29}, time.Time{})
				}
				bt.Add(rows[i%len(rows)])
			}
		})
	}
}

// BenchmarkBatchID is the deterministic batch id, computed once per batch.
func BenchmarkBatchID(b *testing.B) {
	dec, keys, values := benchEvents(b, 5000, gen.Options{Seed: 1})
	bt := New(dec.Pipeline(), record.Date{Year: 2026, Month: 3, Day: 29}, time.Time{})
	for i := range values {
		r, _, err := dec.Decode(keys[i], values[i], record.Position{TP: record.TP{Topic: "orders", Partition: int32(i % 6)}, Offset: int64(i)})
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
