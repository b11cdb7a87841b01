package sink

import (
	"testing"

	"github.com/jackc/pgx/v5/pgtype"

	"github.com/idemsink/idemsink/internal/batch"
	"github.com/idemsink/idemsink/internal/config"
	"github.com/idemsink/idemsink/internal/decode"
	"github.com/idemsink/idemsink/internal/gen"
	"github.com/idemsink/idemsink/internal/record"
)

// BenchmarkCopyEncode is the client side of staging one row of the
// bench's orders pipeline in the binary COPY format. It needs no database.
// One op is one row. pgx: rowSource hands the row's values to pgx, which
// encodes each as pgx.CopyFrom does (Map.Encode, a plan lookup per value),
// the sink's staging before copy.go. plans: copy.go's encoder with pgx's
// plans only, resolved once per column. hand: copy.go's encoder as the
// sink runs it.
//
//	go test -run '^$' -bench CopyEncode -benchmem ./internal/sink/
func BenchmarkCopyEncode(b *testing.B) {
	c := config.Config{Pipelines: []config.Pipeline{gen.Pipeline("orders", "orders", "order_lines")}}
	c.SetDefaults()
	p := &c.Pipelines[0]
	dec := decode.NewDecoder(p)
	g := gen.New(gen.Options{Seed: 1})
	rows := make([]record.Row, 5000)
	for i := range rows {
		e := g.NextNew()
		r, _, err := dec.Decode(gen.KafkaKey(e.Key()), e.Value, record.Position{TP: record.TP{Topic: "orders"}, Offset: int64(i)})
		if err != nil {
			b.Fatal(err)
		}
		rows[i] = r
	}
	st := buildStatements(p)
	dated := make([]batch.Dated, len(rows))
	for i := range rows {
		dated[i] = batch.Dated{Row: &rows[i]}
	}
	ids := []record.ID{{1}}
	b.Run("pgx", func(b *testing.B) {
		m := pgtype.NewMap()
		buf := make([]byte, 0, 1024)
		src := &rowSource{rows: dated, ids: ids, unavailable: st.unavailable}
		b.ReportAllocs()
		for b.Loop() {
			if !src.Next() {
				src.i = 0
				src.Next()
			}
			vals, err := src.Values()
			if err != nil {
				b.Fatal(err)
			}
			buf = buf[:0]
			for i, v := range vals {
				if buf, err = m.Encode(st.stageOIDs[i], pgtype.BinaryFormatCode, v, buf); err != nil {
					b.Fatal(err)
				}
			}
		}
	})
	for _, plansOnly := range []bool{true, false} {
		name := "hand"
		if plansOnly {
			name = "plans"
		}
		b.Run(name, func(b *testing.B) {
			enc := newRowEncoder(pgtype.NewMap(), st.stageOIDs, st.unavailable)
			enc.plansOnly = plansOnly
			buf := make([]byte, 0, 1024)
			i := 0
			b.ReportAllocs()
			for b.Loop() {
				if i == len(dated) {
					i = 0
				}
				var err error
				if buf, err = enc.appendRow(buf[:0], dated[i].Row, ids[0]); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
	}
}
