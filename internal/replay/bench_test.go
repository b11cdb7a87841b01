package replay

import (
	"context"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/idemsink/idemsink/internal/config"
	"github.com/idemsink/idemsink/internal/decode"
	"github.com/idemsink/idemsink/internal/kafkatest"
	"github.com/idemsink/idemsink/internal/record"
)

// BenchmarkSearchDate measures one --to-date search of a partition of
// 100,000 records over 10 days: the bisection's single-record reads.
func BenchmarkSearchDate(b *testing.B) {
	k := kafkatest.New(b)
	topic := k.Topic("orders", 1)
	const n = 100_000
	recs := make([]*kgo.Record, 0, 5000)
	for i := range n {
		ts := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(i) * (10 * 24 * time.Hour / n))
		recs = append(recs, &kgo.Record{Topic: topic, Partition: 0,
			Value: []byte(`{"id": ` + strconv.Itoa(i) + `, "ts": "` + ts.Format(time.RFC3339) + `", "v": 1}`)})
		if len(recs) == cap(recs) {
			k.Produce(recs...)
			recs = recs[:0]
		}
	}
	cfg := benchConfig(b, k, topic)
	dec := decode.NewDecoder(&cfg.Pipelines[0])
	tp := record.TP{Topic: topic, Partition: 0}
	want := int64(n / 2) // day 6 starts halfway
	for b.Loop() {
		got, err := SearchDate(context.Background(), cfg, slog.New(slog.DiscardHandler), dec, tp, 0, n, record.Date{Year: 2026, Month: 11, Day: 6})
		if err != nil || got != want {
			b.Fatalf("SearchDate: %d, %v; want %d", got, err, want)
		}
	}
}

func benchConfig(b *testing.B, k *kafkatest.Cluster, topic string) *config.Config {
	cfg, err := config.Parse([]byte(`group: bench
pipelines:
  - name: orders
    topics: [`+topic+`]
    table: orders
    key: [id]
    columns: [{name: id, type: bigint}, {name: ts, type: timestamptz}, {name: v, type: bigint}]
    date: {field: ts}
`), func(k2 string) string {
		return map[string]string{"IDEMSINK_BROKERS": strings.Join(k.Brokers, ","), "IDEMSINK_DATABASE_URL": "postgres://unused"}[k2]
	})
	if err != nil {
		b.Fatal(err)
	}
	return cfg
}
