package replay

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/idemsink/idemsink/internal/config"
	"github.com/idemsink/idemsink/internal/kafka"
	"github.com/idemsink/idemsink/internal/kafkatest"
	"github.com/idemsink/idemsink/internal/pgtest"
	"github.com/idemsink/idemsink/internal/record"
	"github.com/idemsink/idemsink/internal/sink"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// setup parses a configuration for the test's database and brokers, and
// creates its target tables.
func setup(t *testing.T, yaml, brokers string) (*config.Config, *pgxpool.Pool, *sink.Sink) {
	t.Helper()
	url := pgtest.URL(t)
	cfg, err := config.Parse([]byte(yaml), func(k string) string {
		return map[string]string{"IDEMSINK_BROKERS": brokers, "IDEMSINK_DATABASE_URL": url}[k]
	})
	if err != nil {
		t.Fatal(err)
	}
	pool, err := pgxpool.New(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	s := sink.New(pool, cfg, sink.Options{})
	if err := s.EnsureTables(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	return cfg, pool, s
}

// A replay of dates dead-letters bad input as the daemon does: an oversize
// record keeps only record.KeptBytes of its key and value, with its
// headers (it used to be stored whole, headers copied by hand).
func TestDatesDeadLettersOversizeAsTheDaemon(t *testing.T) {
	k := kafkatest.New(t)
	topic := k.Topic("orders", 1)
	cfg, pool, s := setup(t, `group: g
pipelines:
  - name: orders
    topics: [`+topic+`]
    table: orders
    key: [id]
    max_record_bytes: 4KiB
    columns: [{name: id, type: bigint}, {name: ts, type: timestamptz}, {name: v, type: bigint}]
    date: {field: ts}
    version: {field: v}
`, strings.Join(k.Brokers, ","))
	big := strings.Repeat("x", 5000)
	k.Produce(
		&kgo.Record{Topic: topic, Partition: 0, Value: []byte(`{"id": 1, "ts": "2026-11-02T10:00:00Z", "v": 1}`)},
		&kgo.Record{Topic: topic, Partition: 0, Key: []byte(strings.Repeat("k", 3000)),
			Value:   []byte(`{"id": 2, "ts": "2026-11-02T11:00:00Z", "v": 1, "pad": "` + big + `"}`),
			Headers: []kgo.RecordHeader{{Key: "trace", Value: []byte("abc")}}},
	)
	day := record.Date{Year: 2026, Month: 11, Day: 2}
	reps, err := Dates(context.Background(), Options{Config: cfg, Sink: s}, []*config.Pipeline{&cfg.Pipelines[0]},
		record.Dates{From: day, To: day}, []kafka.Span{{TP: record.TP{Topic: topic}, Start: 0, End: 2}})
	if err != nil {
		t.Fatal(err)
	}
	if len(reps) != 1 || reps[0].Read != 2 || reps[0].Result.Inserted != 1 || reps[0].Result.DeadLettered != 1 {
		t.Fatalf("reports %+v; want 2 read, 1 inserted, 1 dead-lettered", reps)
	}
	var keyLen, valueLen int
	var reason string
	var headers []byte
	if err := pool.QueryRow(context.Background(), `SELECT length(key), length(value), reason, headers FROM idemsink.dead_letters
WHERE topic = $1 AND kafka_offset = 1`, topic).Scan(&keyLen, &valueLen, &reason, &headers); err != nil {
		t.Fatal(err)
	}
	if keyLen != record.KeptBytes || valueLen != record.KeptBytes || record.ClassOf(reason) != record.ClassOversize {
		t.Errorf("dead letter kept key %d and value %d bytes (reason %q); want %d of each, class %s",
			keyLen, valueLen, reason, record.KeptBytes, record.ClassOversize)
	}
	var h map[string]string
	if err := json.Unmarshal(headers, &h); err != nil || h["trace"] != "abc" {
		t.Errorf("dead letter headers %s (%v); want trace=abc", headers, err)
	}
}

// A dead-letter replay applies in batches of at most batch.max_records,
// and retries a database that does not answer (here the ledger table
// locked by another session, past apply_timeout) until it does, rather
// than failing at once.
func TestDeadLettersBatchCapAndRetry(t *testing.T) {
	cfg, pool, s := setup(t, `group: g
retry_backoff: 20ms
apply_timeout: 1s
pipelines:
  - name: items
    topics: [items]
    table: items
    key: [sku]
    batch: {max_records: 2}
    columns: [{name: sku, type: text}, {name: qty, type: integer}]
    date: {field: ts}
`, "127.0.0.1:9")
	ctx := context.Background()
	for i := range 5 {
		if _, err := pool.Exec(ctx, `INSERT INTO idemsink.dead_letters (pipeline, topic, partition, kafka_offset, key, value, reason, batch_id)
VALUES ('items', 'items', 0, $1, NULL, $2, 'out-of-range: since fixed', gen_random_uuid())`,
			i, fmt.Sprintf(`{"sku":"s%d","qty":%d,"ts":"2026-03-01"}`, i, i)); err != nil {
			t.Fatal(err)
		}
	}
	// The outage: the ledger table locked, so that every apply waits past
	// apply_timeout, until the lock goes.
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // released below; a no-op then
	if _, err := tx.Exec(ctx, "LOCK TABLE idemsink.offsets IN ACCESS EXCLUSIVE MODE"); err != nil {
		t.Fatal(err)
	}
	var retries atomic.Int32
	retried := make(chan struct{})
	o := Options{Config: cfg, Sink: s, OnRetry: func(attempt int, err error) {
		if retries.Add(1) == 1 {
			t.Logf("attempt %d failed: %v", attempt, err)
			close(retried)
		}
	}}
	type result struct {
		reps []DeadLetterReport
		err  error
	}
	done := make(chan result, 1)
	go func() {
		reps, err := DeadLetters(ctx, o, sink.DeadLetterFilter{Partition: -1})
		done <- result{reps, err}
	}()
	select {
	case <-retried:
	case r := <-done:
		t.Fatalf("the replay ended during the outage without a retry: %+v, %v", r.reps, r.err)
	case <-time.After(30 * time.Second):
		t.Fatal("no retry within 30s of the outage")
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	var r result
	select {
	case r = <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("the replay did not end within 60s of the outage's end")
	}
	if r.err != nil {
		t.Fatalf("replay after the outage: %v", r.err)
	}
	if len(r.reps) != 1 || r.reps[0].Replayed != 5 || r.reps[0].Failing != 0 || r.reps[0].Batches != 3 || r.reps[0].Applied.Inserted != 5 {
		t.Errorf("reports %+v; want 5 replayed and inserted in 3 batches (max_records 2)", r.reps)
	}
	var batches, maxRecords int
	if err := pool.QueryRow(ctx, `SELECT count(*), max(records) FROM idemsink.batches WHERE group_id = $1`, DeadLetterGroup("g")).Scan(&batches, &maxRecords); err != nil {
		t.Fatal(err)
	}
	if batches != 3 || maxRecords != 2 {
		t.Errorf("%d batches in the ledger, the largest of %d records; want 3, at most 2", batches, maxRecords)
	}
	var pending int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM idemsink.dead_letters WHERE replayed_at IS NULL`).Scan(&pending); err != nil || pending != 0 {
		t.Errorf("%d dead letters not marked replayed (%v)", pending, err)
	}
	if retries.Load() == 0 {
		t.Error("no retry heard")
	}
}
