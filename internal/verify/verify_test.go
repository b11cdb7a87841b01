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

// A Debezium update that left a TOAST value alone carries the placeholder:
// the table keeps the stored value, and Reconcile takes it from the key's
// older record (or, with none read, leaves the column out), so a table in
// step with its topic has no finding; a stored value edited by hand is
// still found.
func TestReconcileUnchangedToastValue(t *testing.T) {
	ctx := context.Background()
	k := kafkatest.New(t)
	topic := k.Topic("docs", 1)
	url := pgtest.URL(t)
	cfg, err := config.Parse([]byte(`group: g
pipelines:
  - name: docs
    topics: [`+topic+`]
    table: docs
    key: [id]
    format: debezium
    debezium: {version: lsn}
    columns: [{name: id, type: bigint}, {name: body, type: text}, {name: qty, type: integer}, {name: day, type: date, semantic_type: io.debezium.time.Date}]
    date: {field: day}
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
	ev := func(op string, id int, body string, qty, lsn int) *kgo.Record {
		return &kgo.Record{Topic: topic, Value: fmt.Appendf(nil, `{"before":null,"after":{"id":%d,"body":%s,"qty":%d,"day":20759},"source":{"lsn":%d},"op":%q}`,
			id, body, qty, lsn, op)}
	}
	const ph = `"__debezium_unavailable_value"`
	big := `"` + strings.Repeat("x", 5000) + `"`
	// Key 1: created, then updated without its body. Key 2: only the update
	// (its create is before the log start), with the body already stored.
	k.Produce(ev("c", 1, big, 1, 10), ev("u", 1, ph, 2, 20), ev("u", 2, ph, 5, 30))
	if _, err := pool.Exec(ctx, `INSERT INTO docs (record_id, id, body, qty, day, _version, _src_topic, _src_partition, _src_offset, _batch_id, _applied_at)
SELECT record_id, 2, 'stored long ago', 4, '2026-11-02', 1, 'old', 0, 0, gen_random_uuid(), now() FROM (SELECT $1::uuid AS record_id) x`,
		keyID(t, cfg, 2)); err != nil {
		t.Fatal(err)
	}
	p := &cfg.Pipelines[0]
	spans := []kafka.Span{{TP: record.TP{Topic: topic}, Start: 0, End: 3}}
	day := record.Dates{From: record.Date{Year: 2026, Month: 11, Day: 2}, To: record.Date{Year: 2026, Month: 11, Day: 2}}
	if _, err := replay.Dates(ctx, replay.Options{Config: cfg, Sink: s}, []*config.Pipeline{p}, day, spans); err != nil {
		t.Fatal(err)
	}
	var body string
	if err := pool.QueryRow(ctx, "SELECT body FROM docs WHERE id = 1").Scan(&body); err != nil || len(body) != 5000 {
		t.Fatalf("key 1's body after the update: %d characters, %v; want the 5000 stored", len(body), err)
	}
	o := Options{Config: cfg, Pool: pool}
	r, err := Reconcile(ctx, o, p, day, spans)
	if err != nil || r.Keys != 2 || r.Matching != 2 || len(r.Findings) != 0 {
		t.Fatalf("reconcile: %+v, %v; want 2 keys matching, no finding", r, err)
	}
	if _, err := pool.Exec(ctx, "UPDATE docs SET body = 'by hand' WHERE id = 1"); err != nil {
		t.Fatal(err)
	}
	r, err = Reconcile(ctx, o, p, day, spans)
	if err != nil || len(r.Findings) != 1 || r.Findings[0].Key != "id=1" || r.Findings[0].Kind != Differs {
		t.Errorf("reconcile after a hand edit of the kept value: %+v, %v; want id=1 differs", r.Findings, err)
	}
}

// keyID is the record id of a bigint key, as the decoder derives it.
func keyID(t *testing.T, cfg *config.Config, id int64) [16]byte {
	t.Helper()
	return record.RecordID([]string{"bigint"}, []any{id})
}
