package verify

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/idemsink/idemsink/internal/config"
	"github.com/idemsink/idemsink/internal/kafka"
	"github.com/idemsink/idemsink/internal/kafkatest"
	"github.com/idemsink/idemsink/internal/pgtest"
	"github.com/idemsink/idemsink/internal/record"
	"github.com/idemsink/idemsink/internal/replay"
	"github.com/idemsink/idemsink/internal/sink"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// Reconcile finds nothing on a table in step with its topic, then one
// finding of each kind, by key: a row deleted (missing), a row edited
// (differs), a row set back to an older version (older) and a row added
// by hand (extra).
func TestReconcileFindsEachKind(t *testing.T) {
	ctx := context.Background()
	k := kafkatest.New(t)
	topic := k.Topic("orders", 1)
	url := pgtest.URL(t)
	cfg, err := config.Parse([]byte(`group: g
pipelines:
  - name: orders
    topics: [`+topic+`]
    table: orders
    key: [id]
    columns: [{name: id, type: bigint}, {name: note, type: text}, {name: ts, type: timestamptz}, {name: v, type: bigint}]
    date: {field: ts}
    version: {field: v}
`), func(k2 string) string {
		return map[string]string{"IDEMSINK_BROKERS": strings.Join(k.Brokers, ","), "IDEMSINK_DATABASE_URL": url}[k2]
	})
	if err != nil {
		t.Fatal(err)
	}
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	s := sink.New(pool, cfg, sink.Options{})
	if err := s.EnsureTables(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	rec := func(id, v int, ts time.Time) *kgo.Record {
		return &kgo.Record{Topic: topic, Value: fmt.Appendf(nil, `{"id": %d, "note": "n", "ts": %q, "v": %d}`, id, ts.Format(time.RFC3339), v)}
	}
	d2 := time.Date(2026, 11, 2, 1, 0, 0, 0, time.UTC)
	// Keys 1..4 of day 2; key 5 of day 1 moves to day 2 with a newer version.
	k.Produce(rec(5, 1, d2.Add(-24*time.Hour)), rec(1, 1, d2), rec(2, 1, d2), rec(3, 1, d2), rec(4, 1, d2), rec(5, 2, d2.Add(time.Hour)))
	p := &cfg.Pipelines[0]
	spans := []kafka.Span{{TP: record.TP{Topic: topic}, Start: 0, End: 6}}
	all := record.Dates{From: record.Date{Year: 2026, Month: 11, Day: 1}, To: record.Date{Year: 2026, Month: 11, Day: 2}}
	if _, err := replay.Dates(ctx, replay.Options{Config: cfg, Sink: s}, []*config.Pipeline{p}, all, spans); err != nil {
		t.Fatal(err)
	}
	day2 := record.Dates{From: all.To, To: all.To}
	o := Options{Config: cfg, Pool: pool}
	r, err := Reconcile(ctx, o, p, day2, spans)
	if err != nil || r.Records != 6 || r.Keys != 5 || r.Matching != 5 || len(r.Findings) != 0 {
		t.Fatalf("reconcile of a clean table: %+v, %v; want 6 read, 5 keys, 5 matching, no finding", r, err)
	}
	for _, q := range []string{"DELETE FROM orders WHERE id = 1", "UPDATE orders SET note = 'by hand' WHERE id = 2",
		"UPDATE orders SET v = 1, _version = 1, _src_offset = 0 WHERE id = 5",
		`INSERT INTO orders (record_id, id, note, ts, v, _version, _src_topic, _src_partition, _src_offset, _batch_id, _applied_at)
VALUES (gen_random_uuid(), 999, 'by hand', '2026-11-02T12:00:00Z', 1, 1, 'x', 0, 0, gen_random_uuid(), now())`} {
		if _, err := pool.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	r, err = Reconcile(ctx, o, p, day2, spans)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, f := range r.Findings {
		got[f.Key] = f.Kind
	}
	want := map[string]string{"id=1": Missing, "id=2": Differs, "id=5": Older, "id=999": Extra}
	if fmt.Sprint(got) != fmt.Sprint(want) || r.Matching != 2 {
		t.Errorf("findings %v, %d matching; want %v, 2 matching", got, r.Matching, want)
	}
}
