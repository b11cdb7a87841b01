package sink_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/idemsink/idemsink/internal/batch"
	"github.com/idemsink/idemsink/internal/config"
	"github.com/idemsink/idemsink/internal/decode"
	"github.com/idemsink/idemsink/internal/pgtest"
	"github.com/idemsink/idemsink/internal/record"
	"github.com/idemsink/idemsink/internal/sink"
	"github.com/idemsink/idemsink/internal/waittest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func testConfig(pipelines ...config.Pipeline) *config.Config {
	cfg := &config.Config{Brokers: []string{"unused:9092"}, Group: "g", DatabaseURL: "unused", Pipelines: pipelines}
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		panic(err)
	}
	return cfg
}

func pipeline(name string, version bool) config.Pipeline {
	p := config.Pipeline{
		Name: name, Topics: []string{name + "-topic"}, Table: name, Key: []string{"id"},
		Columns: []config.Column{{Name: "id", Type: "bigint"}, {Name: "note", Type: "text", Nullable: true}, {Name: "qty", Type: "integer"}},
		Date:    config.Date{Field: "day"},
	}
	if version {
		p.Version = &config.Version{Field: "v"}
	}
	return p
}

type fixture struct {
	t    *testing.T
	pool *pgxpool.Pool
	cfg  *config.Config
	s    *sink.Sink
	dec  map[string]*decode.Decoder
}

func newFixture(t *testing.T, pipelines ...config.Pipeline) *fixture {
	t.Helper()
	f := &fixture{t: t, pool: pgtest.Pool(t), cfg: testConfig(pipelines...), dec: map[string]*decode.Decoder{}}
	f.s = sink.New(f.pool, f.cfg, sink.Options{})
	if err := f.s.EnsureTables(context.Background(), f.cfg); err != nil {
		t.Fatal(err)
	}
	for i := range f.cfg.Pipelines {
		f.dec[f.cfg.Pipelines[i].Name] = decode.NewDecoder(&f.cfg.Pipelines[i])
	}
	return f
}

// batchOf decodes JSON values at consecutive offsets of partition 0.
func (f *fixture) batchOf(pipeline string, first int64, values ...string) *batch.Batch {
	return f.batchOn(pipeline, 0, first, values...)
}

// batchOn decodes JSON values at consecutive offsets of a partition.
func (f *fixture) batchOn(pipeline string, partition int32, first int64, values ...string) *batch.Batch {
	f.t.Helper()
	d := f.dec[pipeline]
	b := batch.New(d.Pipeline(), record.Date{Year: 2026, Month: 3, Day: 1}, time.Now())
	for i, v := range values {
		pos := record.Position{TP: record.TP{Topic: pipeline + "-topic", Partition: partition}, Offset: first + int64(i)}
		row, _, err := d.Decode(nil, []byte(v), pos)
		if err != nil {
			b.AddDead(record.DeadLetter{Pos: pos, Value: []byte(v), Reason: err.Error()})
			continue
		}
		b.Add(row)
	}
	return b
}

func commitFor(b *batch.Batch, gen int32) sink.Commit {
	c := sink.Commit{Group: "g", Generation: gen, Member: "m", Applied: map[record.TP]int64{}}
	for _, r := range b.Ranges() {
		c.Applied[record.TP{Topic: r.Topic, Partition: r.Partition}] = r.Last
	}
	return c
}

func (f *fixture) count(q string, args ...any) int {
	f.t.Helper()
	var n int
	if err := f.pool.QueryRow(context.Background(), q, args...).Scan(&n); err != nil {
		f.t.Fatalf("%s: %v", q, err)
	}
	return n
}

// Applying the same batch twice leaves one copy of each row; the second
// application skips every record below the ledger's applied offset. It
// changed nothing, so the batch log keeps its one entry and the
// transaction's date is recorded as unchanged.
func TestApplySameBatchTwice(t *testing.T) {
	t.Parallel()
	f := newFixture(t, pipeline("items", false))
	b := f.batchOf("items", 0, `{"id":1,"qty":1,"day":"2026-03-01"}`, `{"id":2,"qty":2,"day":"2026-03-01"}`)
	ctx := context.Background()
	r1, err := f.s.Apply(ctx, batch.Of(b), commitFor(b, 1))
	if err != nil {
		t.Fatal(err)
	}
	r2, err := f.s.Apply(ctx, batch.Of(b), commitFor(b, 1))
	if err != nil {
		t.Fatal(err)
	}
	if r1.Inserted != 2 || r2.Inserted != 0 || r2.Skipped != 2 || r2.Staged != 0 {
		t.Errorf("first %+v, second %+v; want 2 inserted, then 2 skipped", r1, r2)
	}
	if r1.Batches[0].BatchID != r2.Batches[0].BatchID || r1.Batches[0].Applications != 1 || r2.Batches[0].Applications != 0 {
		t.Errorf("batch ids %x/%x, applications %d then %d; want equal ids, 1 then 0 (not logged)", r1.Batches[0].BatchID, r2.Batches[0].BatchID,
			r1.Batches[0].Applications, r2.Batches[0].Applications)
	}
	if n := f.count("SELECT count(*) FROM idemsink.batches WHERE applications = 1"); n != 1 {
		t.Errorf("%d batch-log entries applied once, want 1", n)
	}
	if n := f.count("SELECT count(*) FROM idemsink.unchanged_applications WHERE dates = '{2026-03-01}' AND records = 2 AND skipped = 2"); n != 1 {
		t.Errorf("%d unchanged applications of 2026-03-01 with 2 records skipped, want 1", n)
	}
	if n := f.count("SELECT count(*) FROM items"); n != 2 {
		t.Errorf("%d rows, want 2", n)
	}
	if n := f.count("SELECT count(*) FROM idemsink.batches"); n != 1 {
		t.Errorf("%d ledger batches, want 1", n)
	}
}

// After a ledger reset (a backfill), a replayed batch is applied again and
// finds every row unchanged; an older position with other content is stale.
func TestReplayAfterLedgerReset(t *testing.T) {
	t.Parallel()
	f := newFixture(t, pipeline("items", false))
	ctx := context.Background()
	b := f.batchOf("items", 0, `{"id":1,"qty":1,"day":"2026-03-01"}`, `{"id":1,"qty":5,"day":"2026-03-01"}`)
	if _, err := f.s.Apply(ctx, batch.Of(b), commitFor(b, 1)); err != nil {
		t.Fatal(err)
	}
	if _, err := f.pool.Exec(ctx, "DELETE FROM idemsink.offsets"); err != nil {
		t.Fatal(err)
	}
	// Offset 0 alone: older than the stored offset 1, with other content.
	old := f.batchOf("items", 0, `{"id":1,"qty":1,"day":"2026-03-01"}`)
	r, err := f.s.Apply(ctx, batch.Of(old), commitFor(old, 1))
	if err != nil {
		t.Fatal(err)
	}
	if r.Stale != 1 || r.Updated != 0 {
		t.Errorf("replayed old record: %+v; want 1 stale, 0 updated", r)
	}
	if n := f.count("SELECT qty FROM items WHERE id = 1"); n != 5 {
		t.Errorf("qty %d, want 5 (the newer record)", n)
	}
	r, err = f.s.Apply(ctx, batch.Of(b), commitFor(b, 1))
	if err != nil {
		t.Fatal(err)
	}
	if r.Unchanged != 1 || r.Updated != 0 || r.Superseded != 1 {
		t.Errorf("replayed batch: %+v; want 1 unchanged, 1 superseded", r)
	}
}

// A writer of an older generation is fenced: nothing it staged is written
// and the ledger does not move.
func TestFencedByNewerGeneration(t *testing.T) {
	t.Parallel()
	f := newFixture(t, pipeline("items", false))
	ctx := context.Background()
	if _, err := f.s.Claim(ctx, "g", 7, "new-owner", []record.TP{{Topic: "items-topic"}}); err != nil {
		t.Fatal(err)
	}
	b := f.batchOf("items", 0, `{"id":1,"qty":1,"day":"2026-03-01"}`)
	_, err := f.s.Apply(ctx, batch.Of(b), commitFor(b, 5))
	var fenced *sink.FencedError
	if !errors.As(err, &fenced) || !errors.Is(err, sink.ErrFenced) {
		t.Fatalf("apply from generation 5: %v, want a FencedError", err)
	}
	if tp := (record.TP{Topic: "items-topic"}); fenced.Ledger[tp] != -1 || fenced.Ledgered != 7 || fenced.TP != tp {
		t.Errorf("fenced error %+v: want the ledger's generation 7 and applied offset -1 for %s", fenced, tp)
	}
	if n := f.count("SELECT count(*) FROM items"); n != 0 {
		t.Errorf("fenced writer wrote %d rows", n)
	}
	if n := f.count("SELECT applied_offset FROM idemsink.offsets"); n != -1 {
		t.Errorf("ledger applied offset %d, want -1", n)
	}
	if _, err := f.s.Apply(ctx, batch.Of(b), commitFor(b, 7)); err != nil {
		t.Errorf("apply from generation 7: %v", err)
	}
}

// Two batches of one pipeline applied at once from two connections each
// merge only their own staged rows.
func TestConcurrentBatchesStageApart(t *testing.T) {
	t.Parallel()
	f := newFixture(t, pipeline("items", false))
	ctx := context.Background()
	var wg sync.WaitGroup
	results := make([]sink.Result, 8)
	errs := make([]error, 8)
	for i := range 8 {
		var vals []string
		for j := range 50 {
			vals = append(vals, `{"id":`+strconv.Itoa(i*1000+j)+`,"qty":1,"day":"2026-03-01"}`)
		}
		b := f.batchOn("items", int32(i), 0, vals...)
		c := commitFor(b, 1)
		wg.Go(func() { results[i], errs[i] = f.s.Apply(ctx, batch.Of(b), c) })
	}
	wg.Wait()
	for i := range 8 {
		if errs[i] != nil {
			t.Fatalf("batch %d: %v", i, errs[i])
		}
		if results[i].Staged != 50 || results[i].Inserted != 50 {
			t.Errorf("batch %d: staged %d inserted %d, want 50, 50", i, results[i].Staged, results[i].Inserted)
		}
	}
	if n := f.count("SELECT count(*) FROM items"); n != 400 {
		t.Errorf("%d rows, want 400", n)
	}
}

// A row PostgreSQL refuses is dead-lettered with the reason and its raw
// bytes; the rest of the batch is applied.
func TestRefusedRowIsDeadLettered(t *testing.T) {
	t.Parallel()
	f := newFixture(t, pipeline("items", false))
	ctx := context.Background()
	if _, err := f.pool.Exec(ctx, "ALTER TABLE items ADD CONSTRAINT qty_positive CHECK (qty > 0)"); err != nil {
		t.Fatal(err)
	}
	b := f.batchOf("items", 0, `{"id":1,"qty":1,"day":"2026-03-01"}`, `{"id":2,"qty":0,"day":"2026-03-01"}`,
		`not json`, `{"id":3,"qty":3,"day":"2026-03-01"}`)
	r, err := f.s.Apply(ctx, batch.Of(b), commitFor(b, 1))
	if err != nil {
		t.Fatal(err)
	}
	if r.Inserted != 2 || r.DeadLettered != 2 {
		t.Errorf("%+v; want 2 inserted, 2 dead-lettered", r)
	}
	rows, err := f.pool.Query(ctx, `SELECT kafka_offset, convert_from(value, 'UTF8'), reason FROM idemsink.dead_letters ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for rows.Next() {
		var off int64
		var value, reason string
		if err := rows.Scan(&off, &value, &reason); err != nil {
			t.Fatal(err)
		}
		got = append(got, strconv.FormatInt(off, 10)+" "+value+" "+reason)
	}
	if len(got) != 2 || !strings.Contains(got[0], `1 {"id":2,"qty":0`) || !strings.Contains(got[0], "23514") ||
		!strings.HasPrefix(got[1], "2 not json malformed-json: ") || !strings.HasPrefix(got[0], "1 {\"id\":2,\"qty\":0,\"day\":\"2026-03-01\"} refused-by-postgres: ") {
		t.Errorf("dead letters %q", got)
	}
	if n := f.count("SELECT applied_offset FROM idemsink.offsets"); n != 3 {
		t.Errorf("ledger applied offset %d, want 3: the partition moves on", n)
	}
}

// Verification runs inside the transaction: when the target silently
// refuses an update (here a trigger), the batch is rolled back whole and
// the ledger does not move.
func TestVerificationFailureRollsBack(t *testing.T) {
	t.Parallel()
	f := newFixture(t, pipeline("items", true))
	ctx := context.Background()
	b1 := f.batchOf("items", 0, `{"id":1,"qty":1,"v":1,"day":"2026-03-01"}`)
	if _, err := f.s.Apply(ctx, batch.Of(b1), commitFor(b1, 1)); err != nil {
		t.Fatal(err)
	}
	if _, err := f.pool.Exec(ctx, `CREATE FUNCTION swallow() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$;
CREATE TRIGGER swallow BEFORE UPDATE ON items FOR EACH ROW EXECUTE FUNCTION swallow()`); err != nil {
		t.Fatal(err)
	}
	b2 := f.batchOf("items", 1, `{"id":1,"qty":2,"v":2,"day":"2026-03-01"}`, `{"id":9,"qty":9,"v":1,"day":"2026-03-01"}`)
	_, err := f.s.Apply(ctx, batch.Of(b2), commitFor(b2, 1))
	var verr *sink.VerifyError
	if !errors.As(err, &verr) || verr.Behind != 1 {
		t.Fatalf("apply: %v, want a verification error with 1 row behind", err)
	}
	if !sink.Transient(err) {
		t.Error("a verification failure must be retried, not dead-lettered")
	}
	if n := f.count("SELECT count(*) FROM items"); n != 1 {
		t.Errorf("%d rows: the insert of id 9 must be rolled back with the batch", n)
	}
	if n := f.count("SELECT applied_offset FROM idemsink.offsets"); n != 0 {
		t.Errorf("ledger applied offset %d, want 0", n)
	}
	if _, err := f.pool.Exec(ctx, "DROP TRIGGER swallow ON items"); err != nil {
		t.Fatal(err)
	}
	if r, err := f.s.Apply(ctx, batch.Of(b2), commitFor(b2, 1)); err != nil || r.Updated != 1 || r.Inserted != 1 {
		t.Errorf("retry: %+v, %v; want 1 updated, 1 inserted", r, err)
	}
}

// EnsureTables refuses a table whose columns disagree with the config.
func TestEnsureTablesChecksColumns(t *testing.T) {
	t.Parallel()
	f := newFixture(t, pipeline("items", false))
	ctx := context.Background()
	if _, err := f.pool.Exec(ctx, "ALTER TABLE items ALTER COLUMN qty TYPE bigint"); err != nil {
		t.Fatal(err)
	}
	err := f.s.EnsureTables(ctx, f.cfg)
	if err == nil || !strings.Contains(err.Error(), `column "qty" is bigint, but pipeline items says integer`) {
		t.Errorf("EnsureTables: %v", err)
	}
}

// Every failure falls in the class that says how it is retried: outages
// with backoff, conflicts at once, data errors isolated, fences abandoned,
// anything else retried but shown as stuck.
func TestClassify(t *testing.T) {
	t.Parallel()
	pool := pgtest.Pool(t)
	raise := func(code string) error {
		_, err := pool.Exec(context.Background(), "DO $$ BEGIN RAISE EXCEPTION 'x' USING ERRCODE = '"+code+"'; END $$")
		return err
	}
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	_, canceledErr := pool.Exec(canceled, "SELECT 1")
	_, divErr := pool.Exec(context.Background(), "SELECT 1/0")
	_, readOnly := pool.Exec(context.Background(), "BEGIN READ ONLY; CREATE TABLE ro (x int); COMMIT")
	_, missing := pool.Exec(context.Background(), "SELECT * FROM no_such_table")
	for _, c := range []struct {
		name string
		err  error
		want sink.Class
	}{
		{"nil", nil, 0},
		{"canceled attempt", canceledErr, sink.Outage},
		{"deadline", fmt.Errorf("apply: %w", context.DeadlineExceeded), sink.Outage},
		{"admin shutdown", raise("57P01"), sink.Outage},
		{"cannot connect now", raise("57P03"), sink.Outage},
		{"connection failure", raise("08006"), sink.Outage},
		{"disk full", raise("53100"), sink.Outage},
		{"statement timeout", raise("57014"), sink.Outage},
		{"read-only", readOnly, sink.Outage},
		{"serialization failure", raise("40001"), sink.Conflict},
		{"deadlock", raise("40P01"), sink.Conflict},
		{"division by zero", divErr, sink.Data},
		{"check violation", raise("23514"), sink.Data},
		{"permission denied", raise("42501"), sink.Stuck},
		{"undefined table", missing, sink.Stuck},
		{"verification", &sink.VerifyError{Missing: 1}, sink.Stuck},
		{"fenced", &sink.FencedError{}, sink.Fenced},
		{"fenced sentinel", sink.ErrFenced, sink.Fenced},
	} {
		if got := sink.Classify(c.err); got != c.want {
			t.Errorf("%s (%v): class %v, want %v", c.name, c.err, got, c.want)
		}
		if want := c.want == sink.Outage || c.want == sink.Conflict || c.want == sink.Stuck; sink.Transient(c.err) != want {
			t.Errorf("%s: Transient %v, want %v", c.name, !want, want)
		}
	}
	if got := sink.SQLState(raise("42501")); got != "42501" {
		t.Errorf("SQLState: %q", got)
	}
}

// A new key inserted by another transaction between the upsert's probe and
// its insert (a unique violation for the plain insert) is settled by the
// row-by-row retry under ON CONFLICT: the newer row wins, nothing is
// dead-lettered.
func TestNewKeyInsertedConcurrently(t *testing.T) {
	t.Parallel()
	f := newFixture(t, pipeline("items", false))
	ctx := context.Background()
	tx, err := f.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // after Commit, a no-op
	b := f.batchOf("items", 5, `{"id":1,"qty":7,"day":"2026-03-01"}`)
	// The same record_id as the batch's row, at an older position.
	if _, err := tx.Exec(ctx, `INSERT INTO items (record_id, id, note, qty, _version, _src_topic, _src_partition, _src_offset, _batch_id, _applied_at)
VALUES ($1, 1, 'other', 1, 0, 'items-topic', 0, 0, $1, now())`, b.Rows[0].ID); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	var res sink.Result
	go func() {
		var err error
		res, err = f.s.Apply(ctx, batch.Of(b), commitFor(b, 1))
		done <- err
	}()
	// The batch's insert waits for the open transaction's uncommitted row.
	waittest.For(t, 10*time.Second, "the batch to wait on the open transaction's lock", func() bool {
		return f.count("SELECT count(*) FROM pg_locks WHERE NOT granted") > 0
	})
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("apply: %v", err)
	}
	if res.DeadLettered != 0 || res.Updated != 1 {
		t.Errorf("result %+v: want 1 updated, none dead-lettered", res)
	}
	if n := f.count("SELECT qty FROM items WHERE id = 1"); n != 7 {
		t.Errorf("qty %d, want the batch's 7", n)
	}
}
