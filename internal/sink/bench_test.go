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

// BenchmarkCopyEncode is the client side of staging one row: rowSource
// hands the row's values to pgx, which encodes each in the binary COPY
// format, as CopyFrom does. It needs no database. One op is one row.
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
	oids := []uint32{pgtype.UUIDOID}
	for _, col := range p.Columns {
		oids = append(oids, oidOf(b, col.Type))
	}
	oids = append(oids, pgtype.Int8OID, pgtype.TextOID, pgtype.Int4OID, pgtype.Int8OID, pgtype.UUIDOID)
	m := pgtype.NewMap()
	buf := make([]byte, 0, 1024)
	dated := make([]batch.Dated, len(rows))
	for i := range rows {
		dated[i] = batch.Dated{Row: &rows[i]}
	}
	src := &rowSource{rows: dated, ids: []record.ID{{1}}}
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
			if buf, err = m.Encode(oids[i], pgtype.BinaryFormatCode, v, buf); err != nil {
				b.Fatal(err)
			}
		}
	}
}

func oidOf(b *testing.B, typ string) uint32 {
	switch typ {
	case "text":
		return pgtype.TextOID
	case "bigint":
		return pgtype.Int8OID
	case "integer":
		return pgtype.Int4OID
	case "smallint":
		return pgtype.Int2OID
	case "numeric":
		return pgtype.NumericOID
	case "double precision":
		return pgtype.Float8OID
	case "boolean":
		return pgtype.BoolOID
	case "date":
		return pgtype.DateOID
	case "timestamptz":
		return pgtype.TimestamptzOID
	case "uuid":
		return pgtype.UUIDOID
	case "jsonb":
		return pgtype.JSONBOID
	}
	b.Fatalf("no OID for %s", typ)
	return 0
}
