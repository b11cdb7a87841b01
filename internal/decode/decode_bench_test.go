package decode

import (
	"testing"

	"github.com/idemsink/idemsink/internal/record"
	"github.com/idemsink/idemsink/internal/srtest"
)

// The cost of a registry format beside its JSON twin: the schema is
// fetched once; each record is decoded to JSON, then converted.
func BenchmarkDecodeFormats(b *testing.B) {
	reg := srtest.New(b)
	values := map[string][]byte{
		"json": []byte(orderJSON),
		"avro": reg.Avro("a-value", orderAvroV1, orderAvroValue()),
		"protobuf": reg.Proto("p-value", orderProto, []int{1}, map[string]any{
			"id": int64(7), "amount": "12.30", "day": "2026-03-01", "uid": "6ba7b810-9dad-11d1-80b4-00c04fd430c8",
			"qty": int32(3), "customer": map[string]any{"name": "Zoë"},
			"at": map[string]any{"seconds": int64(1772359200), "nanos": int32(123456000)},
		}),
		"json_schema": reg.JSON("j-value", `{"type":"object"}`, orderJSON),
	}
	for _, format := range []string{"json", "avro", "protobuf", "json_schema"} {
		b.Run(format, func(b *testing.B) {
			d := NewDecoder(registryPipeline(b, reg.URL(), orders(format)))
			v := values[format]
			if _, _, err := d.Decode(nil, v, record.Position{}); err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(len(v)))
			b.ReportAllocs()
			for b.Loop() {
				if _, _, err := d.Decode(nil, v, record.Position{}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
