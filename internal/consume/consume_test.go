package consume_test

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/idemsink/idemsink/internal/batch"
	"github.com/idemsink/idemsink/internal/config"
	"github.com/idemsink/idemsink/internal/consume"
	"github.com/idemsink/idemsink/internal/gen"
	"github.com/idemsink/idemsink/internal/kafkatest"
	"github.com/idemsink/idemsink/internal/record"
	"github.com/idemsink/idemsink/internal/waittest"
)

func orderRecords(topic string, parts int32, events []gen.Event) []*kgo.Record {
	recs := make([]*kgo.Record, len(events))
	for i, ev := range events {
		recs[i] = &kgo.Record{Topic: topic, Partition: int32(ev.Line.OrderID % int64(parts)), Key: gen.KafkaKey(ev.Key()), Value: ev.Value}
	}
	return recs
}

// tableStats returns pg_stat_user_tables' insert and update counts, after
// making sure every backend's pending stats are flushed: the pool's
// connections are closed, and the wait lasts until the ledger's own
// inserts are all counted.
func (e *env) tableStats(table string) (ins, upd int) {
	e.t.Helper()
	e.pool.Reset()
	batches := e.count("SELECT count(*) FROM idemsink.batches")
	waittest.For(e.t, 30*time.Second, "table statistics to be flushed", func() bool {
		return e.count("SELECT n_tup_ins FROM pg_stat_user_tables WHERE schemaname = 'idemsink' AND relname = 'batches'") >= batches
	})
	if err := e.pool.QueryRow(context.Background(), "SELECT n_tup_ins, n_tup_upd FROM pg_stat_user_tables WHERE relname = $1", table).Scan(&ins, &upd); err != nil {
		e.t.Fatal(err)
	}
	return ins, upd
}

// The seed article's table of runs: the first load inserts, a re-run of the
// same records writes nothing, new data inserts and updates exactly what
// is new or changed.
func TestArticleRuns(t *testing.T) {
	t.Parallel()
	k := kafkatest.New(t)
	const parts = 3
	t1, t2, t3 := k.Topic("run1", parts), k.Topic("run2", parts), k.Topic("run3", parts)
	e := newEnv(t, k, gen.Pipeline("orders", t1, "order_lines"))
	g := gen.New(gen.Options{Seed: 1, Days: 3, LateRate: 0.1})
	var first []gen.Event
	for range 500 {
		first = append(first, g.NextNew())
	}

	run := func(name, topic string, events []gen.Event) (ins, upd, unch int) {
		t.Helper()
		if topic != t1 {
			// A re-run reaches Kafka later than the first run: the same
			// records sit at higher offsets, so the version guard alone
			// would let them through and only change detection holds
			// them back. A malformed record heading each partition
			// shifts the offsets (and is dead-lettered).
			for p := range int32(parts) {
				k.Produce(&kgo.Record{Topic: topic, Partition: p, Value: []byte("{not json")})
			}
		}
		k.Produce(orderRecords(topic, parts, events)...)
		group := kafkatest.Name(t, name)
		cfg := e.config(group, gen.Pipeline("orders", topic, "order_lines"))
		mb := e.start(cfg, consume.Options{})
		e.waitApplied(group, topic)
		if err := mb.stop(); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		s := mb.sum()
		t.Logf("%s: %+v", name, s)
		return s.Inserted, s.Updated, s.Unchanged
	}

	ins, upd, unch := run("first", t1, first)
	if ins != 500 || upd != 0 || unch != 0 {
		t.Errorf("1st run: inserted %d, updated %d, unchanged %d; want 500, 0, 0", ins, upd, unch)
	}
	if n := e.count("SELECT count(*) FROM order_lines"); n != 500 {
		t.Errorf("after 1st run: %d rows, want 500", n)
	}
	before := e.xmins("order_lines")
	insBefore, updBefore := e.tableStats("order_lines")
	if insBefore != 500 || updBefore != 0 {
		t.Errorf("after 1st run: n_tup_ins %d, n_tup_upd %d; want 500, 0", insBefore, updBefore)
	}

	ins, upd, unch = run("rerun", t2, first)
	if ins != 0 || upd != 0 || unch != 500 {
		t.Errorf("re-run: inserted %d, updated %d, unchanged %d; want 0, 0, 500", ins, upd, unch)
	}
	after := e.xmins("order_lines")
	for id, x := range before {
		if after[id] != x {
			t.Errorf("re-run rewrote row %s (xmin %s → %s)", id, x, after[id])
			break
		}
	}
	// Not even locked: a row lock sets xmax and dirties the page (WAL).
	if n := e.count("SELECT count(*) FROM order_lines WHERE xmax <> 0"); n != 0 {
		t.Errorf("re-run locked %d unchanged rows", n)
	}
	if insAfter, updAfter := e.tableStats("order_lines"); insAfter != insBefore || updAfter != updBefore {
		t.Errorf("re-run wrote rows: n_tup_ins %d → %d, n_tup_upd %d → %d", insBefore, insAfter, updBefore, updAfter)
	}

	// The 500 with 7 changed, and 20 new.
	third := append([]gen.Event(nil), first...)
	changed := map[gen.Key]bool{}
	for i := range 7 {
		l := third[i*50].Line
		l.Version, l.Status, l.Quantity = 2, "paid", l.Quantity+1
		v, _ := json.Marshal(l)
		third[i*50] = gen.Event{Line: l, Kind: gen.Update, Value: v}
		changed[third[i*50].Key()] = true
	}
	for range 20 {
		third = append(third, g.NextNew())
	}
	ins, upd, unch = run("third", t3, third)
	if ins != 20 || upd != 7 || unch != 493 {
		t.Errorf("3rd run: inserted %d, updated %d, unchanged %d; want 20, 7, 493", ins, upd, unch)
	}
	if n := e.count("SELECT count(*) FROM order_lines"); n != 520 {
		t.Errorf("after 3rd run: %d rows, want 520", n)
	}
	final := e.xmins("order_lines")
	rewritten := 0
	for id, x := range before {
		if final[id] != x {
			rewritten++
		}
	}
	if rewritten != 7 {
		t.Errorf("3rd run rewrote %d existing rows, want exactly the 7 changed", rewritten)
	}
	if n := e.count("SELECT count(*) FROM order_lines WHERE status = 'paid' AND version = 2"); n != 7 {
		t.Errorf("%d rows carry the change, want 7", n)
	}
}

// A batch applied to PostgreSQL whose Kafka commit never happened (the
// client stopped in between) is not applied again: the next member resumes
// from the ledger, and the tables and ledger stay as they were.
func TestCrashBeforeKafkaCommit(t *testing.T) {
	t.Parallel()
	k := kafkatest.New(t)
	topic := k.Topic("orders", 2)
	e := newEnv(t, k, gen.Pipeline("orders", topic, "order_lines"))
	g := gen.New(gen.Options{Seed: 2})
	var events []gen.Event
	for range 100 {
		events = append(events, g.NextNew())
	}
	k.Produce(orderRecords(topic, 2, events)...)

	first := e.start(e.cfg, consume.Options{NoKafkaCommit: true})
	e.waitApplied(e.cfg.Group, topic)
	if err := first.stop(); err != nil {
		t.Fatal(err)
	}
	for p, off := range k.Committed(e.cfg.Group, topic) {
		t.Fatalf("partition %d has Kafka commit %d; the first member must not have committed", p, off)
	}
	rows, batches := e.xmins("order_lines"), e.count("SELECT count(*) FROM idemsink.batches")

	second := e.start(e.cfg, consume.Options{})
	ends := k.Ends(topic)
	waittest.For(t, 30*time.Second, "the ledger position to reach Kafka", func() bool {
		c := k.Committed(e.cfg.Group, topic)
		return c[0] == ends[0] && c[1] == ends[1]
	})
	if err := second.stop(); err != nil {
		t.Fatal(err)
	}
	if got := second.c.SkippedOnResume(); got != 100 {
		t.Errorf("second member skipped %d records on resume, want 100", got)
	}
	if s := second.sum(); s.Records != 0 {
		t.Errorf("second member applied %d records again, want 0", s.Records)
	}
	if n := e.count("SELECT count(*) FROM idemsink.batches"); n != batches {
		t.Errorf("ledger has %d batches after the second member, want %d", n, batches)
	}
	after := e.xmins("order_lines")
	if len(after) != len(rows) {
		t.Fatalf("%d rows, want %d", len(after), len(rows))
	}
	for id, x := range rows {
		if after[id] != x {
			t.Fatalf("row %s rewritten", id)
		}
	}
}

func simplePipeline(name, topic, table string, version bool) config.Pipeline {
	p := config.Pipeline{
		Name: name, Topics: []string{topic}, Table: table, Key: []string{"id"},
		Columns: []config.Column{
			{Name: "id", Type: "bigint"},
			{Name: "status", Type: "text"},
			{Name: "qty", Type: "integer"},
			{Name: "ts", Type: "timestamptz"},
		},
		Date: config.Date{Field: "ts", TimeZone: "UTC"},
	}
	if version {
		p.Version = &config.Version{Field: "v"}
		p.Columns = append(p.Columns, config.Column{Name: "v", Type: "bigint"})
	}
	return p
}

type rec struct {
	ID     int64  `json:"id"`
	Status string `json:"status"`
	Qty    int    `json:"qty"`
	TS     string `json:"ts"`
	V      int64  `json:"v,omitempty"`
}

// An older version replayed after a newer one is applied never overwrites it.
func TestOldVersionNeverOverwrites(t *testing.T) {
	t.Parallel()
	k := kafkatest.New(t)
	topic := k.Topic("t", 1)
	e := newEnv(t, k, simplePipeline("p", topic, "items", true))
	mb := e.start(e.cfg, consume.Options{})
	k.Produce(kafkaRecord(topic, 0, rec{ID: 1, Status: "shipped", Qty: 2, TS: "2026-03-01T10:00:00Z", V: 5}))
	e.waitApplied(e.cfg.Group, topic)
	k.Produce(kafkaRecord(topic, 0, rec{ID: 1, Status: "placed", Qty: 1, TS: "2026-03-01T09:00:00Z", V: 3}))
	e.waitApplied(e.cfg.Group, topic)
	if err := mb.stop(); err != nil {
		t.Fatal(err)
	}
	var status string
	var v int64
	if err := e.pool.QueryRow(context.Background(), "SELECT status, v FROM items WHERE id = 1").Scan(&status, &v); err != nil {
		t.Fatal(err)
	}
	if status != "shipped" || v != 5 {
		t.Errorf("row is %s v%d, want shipped v5", status, v)
	}
	if s := mb.sum(); s.Stale != 1 || s.Inserted != 1 || s.Updated != 0 {
		t.Errorf("inserted %d updated %d stale %d; want 1, 0, 1", s.Inserted, s.Updated, s.Stale)
	}
}

// Records of two pipelines and two target dates arriving in one poll land
// in the right tables and in one batch per pipeline and date.
func TestPipelinesAndDatesSplit(t *testing.T) {
	t.Parallel()
	k := kafkatest.New(t)
	ta, tb := k.Topic("a", 1), k.Topic("b", 1)
	pa, pb := simplePipeline("pa", ta, "table_a", false), simplePipeline("pb", tb, "table_b", false)
	pa.Batch.Linger, pb.Batch.Linger = time.Hour, time.Hour
	e := newEnv(t, k, pa, pb)
	var recs []*kgo.Record
	for i, ts := range []string{"2026-03-01T23:59:59Z", "2026-03-02T00:00:00Z", "2026-03-01T01:00:00Z", "2026-03-02T12:00:00Z"} {
		recs = append(recs, kafkaRecord(ta, 0, rec{ID: int64(i), Status: "a", Qty: 1, TS: ts}))
		recs = append(recs, kafkaRecord(tb, 0, rec{ID: int64(i), Status: "b", Qty: 1, TS: ts}), kafkaRecord(tb, 0, rec{ID: int64(10 + i), Status: "b", Qty: 1, TS: ts}))
	}
	k.Produce(recs...)
	mb := e.start(e.cfg, consume.Options{})
	waittest.For(t, 30*time.Second, "all records buffered", func() bool { return testutil.ToFloat64(mb.m.Buffered) == 12 })
	if err := mb.stop(); err != nil { // the shutdown flush applies the open batches
		t.Fatal(err)
	}
	if a, b := e.count("SELECT count(*) FROM table_a WHERE status = 'a'"), e.count("SELECT count(*) FROM table_b WHERE status = 'b'"); a != 4 || b != 8 {
		t.Errorf("table_a %d rows, table_b %d rows; want 4 and 8", a, b)
	}
	rows, err := e.pool.Query(context.Background(), "SELECT pipeline, target_date::text, run_id::text, records FROM idemsink.batches ORDER BY 1, 2")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for rows.Next() {
		var p, d, run string
		var n int
		if err := rows.Scan(&p, &d, &run, &n); err != nil {
			t.Fatal(err)
		}
		date, _ := record.ParseDate(d)
		id := batch.RunID(p, date)
		if want := uuidString(id); run != want {
			t.Errorf("batch %s/%s has run id %s, want %s", p, d, run, want)
		}
		got = append(got, p+"/"+d+"/"+strconv.Itoa(n))
	}
	want := "pa/2026-03-01/2 pa/2026-03-02/2 pb/2026-03-01/4 pb/2026-03-02/4"
	if strings.Join(got, " ") != want {
		t.Errorf("batches %v, want %s", got, want)
	}
}

// Shutdown flushes the open batch, commits it to both ledger and Kafka,
// and leaves the group.
func TestShutdownFlushesAndCommits(t *testing.T) {
	t.Parallel()
	k := kafkatest.New(t)
	topic := k.Topic("t", 1)
	p := simplePipeline("p", topic, "items", false)
	p.Batch.Linger = time.Hour
	e := newEnv(t, k, p)
	for i := range 10 {
		k.Produce(kafkaRecord(topic, 0, rec{ID: int64(i), Status: "x", Qty: 1, TS: "2026-03-01T10:00:00Z"}))
	}
	mb := e.start(e.cfg, consume.Options{})
	waittest.For(t, 30*time.Second, "records buffered", func() bool { return testutil.ToFloat64(mb.m.Buffered) == 10 })
	if n := e.count("SELECT count(*) FROM items"); n != 0 {
		t.Fatalf("%d rows before shutdown; the batch should still be open", n)
	}
	if err := mb.stop(); err != nil {
		t.Fatal(err)
	}
	if n := e.count("SELECT count(*) FROM items"); n != 10 {
		t.Errorf("%d rows after shutdown, want 10", n)
	}
	if c := k.Committed(e.cfg.Group, topic); c[0] != 10 {
		t.Errorf("Kafka committed %d after shutdown, want 10", c[0])
	}
	if n := e.count("SELECT applied_offset FROM idemsink.offsets WHERE topic = $1", topic); n != 9 {
		t.Errorf("ledger applied offset %d, want 9", n)
	}
}

func uuidString(id [16]byte) string {
	const hexd = "0123456789abcdef"
	var b strings.Builder
	for i, c := range id {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			b.WriteByte('-')
		}
		b.WriteByte(hexd[c>>4])
		b.WriteByte(hexd[c&15])
	}
	return b.String()
}

// A second member joining takes partitions from the first; the first
// flushes and commits what it holds of them on revocation, so every
// record is applied exactly once across the two.
func TestRevocationFlushesBeforeHandOver(t *testing.T) {
	t.Parallel()
	k := kafkatest.New(t)
	const parts = 4
	topic := k.Topic("orders", parts)
	p := gen.Pipeline("orders", topic, "order_lines")
	p.Batch.Linger = 3 * time.Second // batches are open when the rebalance comes
	e := newEnv(t, k, p)
	g := gen.New(gen.Options{Seed: 3})
	var events []gen.Event
	for range 400 {
		events = append(events, g.NextNew())
	}
	k.Produce(orderRecords(topic, parts, events)...)
	first := e.start(e.cfg, consume.Options{})
	waittest.For(t, 30*time.Second, "the first member to buffer records", func() bool { return testutil.ToFloat64(first.m.Buffered) > 0 })
	second := e.start(e.cfg, consume.Options{})
	waittest.For(t, 30*time.Second, "the second member to own partitions", func() bool { return len(second.c.Applied()) > 0 })
	if n := e.count("SELECT count(*) FROM order_lines"); n == 0 {
		t.Error("nothing applied after the rebalance: the first member did not flush on revocation")
	}
	var more []gen.Event
	for range 400 {
		more = append(more, g.NextNew())
	}
	k.Produce(orderRecords(topic, parts, more)...)
	e.waitApplied(e.cfg.Group, topic)
	if err := errors.Join(first.stop(), second.stop()); err != nil {
		t.Fatal(err)
	}
	a, b := first.sum(), second.sum()
	if a.Records+b.Records != 800 {
		t.Errorf("members applied %d + %d records, want 800 in all: a record was applied twice or never", a.Records, b.Records)
	}
	if b.Records == 0 {
		t.Error("the second member applied nothing")
	}
	if n := e.count("SELECT count(*) FROM order_lines"); n != 800 {
		t.Errorf("%d rows, want 800", n)
	}
	if n := e.count("SELECT coalesce(sum(records), 0) FROM idemsink.batches"); n != 800 {
		t.Errorf("the ledger's batches hold %d records, want 800", n)
	}
}

// A failed verification rolls the batch back and is retried; offsets do
// not move until it passes.
func TestVerificationFailureIsRetried(t *testing.T) {
	t.Parallel()
	k := kafkatest.New(t)
	topic := k.Topic("t", 1)
	e := newEnv(t, k, simplePipeline("p", topic, "items", true))
	mb := e.start(e.cfg, consume.Options{})
	k.Produce(kafkaRecord(topic, 0, rec{ID: 1, Status: "placed", Qty: 1, TS: "2026-03-01T10:00:00Z", V: 1}))
	e.waitApplied(e.cfg.Group, topic)
	ctx := context.Background()
	if _, err := e.pool.Exec(ctx, `CREATE FUNCTION swallow() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$;
CREATE TRIGGER swallow BEFORE UPDATE ON items FOR EACH ROW EXECUTE FUNCTION swallow()`); err != nil {
		t.Fatal(err)
	}
	k.Produce(kafkaRecord(topic, 0, rec{ID: 1, Status: "paid", Qty: 1, TS: "2026-03-01T10:00:00Z", V: 2}))
	waittest.For(t, 30*time.Second, "verification failures to be retried", func() bool {
		return testutil.ToFloat64(mb.m.VerifyFailures.WithLabelValues("p")) >= 2
	})
	if n := e.count("SELECT applied_offset FROM idemsink.offsets"); n != 0 {
		t.Errorf("ledger applied offset %d while verification fails, want 0", n)
	}
	if c := k.Committed(e.cfg.Group, topic); c[0] > 1 {
		t.Errorf("Kafka committed %d while verification fails, want at most 1", c[0])
	}
	if mb.c.Ready() {
		t.Error("consumer reports ready while its batch keeps failing")
	}
	if _, err := e.pool.Exec(ctx, "DROP TRIGGER swallow ON items"); err != nil {
		t.Fatal(err)
	}
	e.waitApplied(e.cfg.Group, topic)
	if n := e.count("SELECT count(*) FROM items WHERE status = 'paid' AND v = 2"); n != 1 {
		t.Error("the update was not applied after verification passed")
	}
	waittest.For(t, 10*time.Second, "readiness", mb.c.Ready)
}

// Bad records are dead-lettered with their raw bytes in the batch's
// transaction, and the partition moves on.
func TestBadRecordsDeadLettered(t *testing.T) {
	t.Parallel()
	k := kafkatest.New(t)
	topic := k.Topic("t", 1)
	e := newEnv(t, k, simplePipeline("p", topic, "items", false))
	k.Produce(
		kafkaRecord(topic, 0, rec{ID: 1, Status: "ok", Qty: 1, TS: "2026-03-01T10:00:00Z"}),
		&kgo.Record{Topic: topic, Value: []byte(`{"id": 2, "status": "x", "qty": 1, "ts": "yesterday"}`)},
		&kgo.Record{Topic: topic, Value: []byte(`[1,2,3]`), Headers: []kgo.RecordHeader{{Key: "source", Value: []byte("legacy")}}},
		&kgo.Record{Topic: topic, Key: []byte("k"), Value: nil},
		kafkaRecord(topic, 0, rec{ID: 3, Status: "ok", Qty: 99999999, TS: "2026-03-01T10:00:00Z"}),
		&kgo.Record{Topic: topic, Value: []byte(`{"id": 4, "status": "ok", "qty": 4000000000, "ts": "2026-03-01T10:00:00Z"}`)},
	)
	mb := e.start(e.cfg, consume.Options{})
	e.waitApplied(e.cfg.Group, topic)
	if err := mb.stop(); err != nil {
		t.Fatal(err)
	}
	if n := e.count("SELECT count(*) FROM items"); n != 2 {
		t.Errorf("%d rows, want 2", n)
	}
	rows, err := e.pool.Query(context.Background(), `SELECT kafka_offset, reason, coalesce(headers->>'source', '') FROM idemsink.dead_letters ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for rows.Next() {
		var off int64
		var reason, hdr string
		if err := rows.Scan(&off, &reason, &hdr); err != nil {
			t.Fatal(err)
		}
		got = append(got, strconv.FormatInt(off, 10)+": "+reason+" "+hdr)
	}
	want := []string{
		`1: wrong-type: field "ts" (column ts timestamptz): "yesterday" is not an RFC 3339 timestamp `,
		`2: not-an-object: expected a JSON object, got an array legacy`,
		`3: tombstone: the value is null; deletes are dead-lettered (pipeline deletes: dead_letter) `,
		`5: out-of-range: field "qty" (column qty integer): 4000000000 is out of range (-2147483648 to 2147483647) `,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("dead letters:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if c := k.Committed(e.cfg.Group, topic); c[0] != 6 {
		t.Errorf("Kafka committed %d, want 6: the partition moves on past bad records", c[0])
	}
}

// A member with no partitions (more members than partitions) is a healthy
// standby: ready, so that an orchestrator does not restart it forever.
func TestStandbyMemberIsReady(t *testing.T) {
	t.Parallel()
	k := kafkatest.New(t)
	topic := k.Topic("t", 1)
	e := newEnv(t, k, simplePipeline("p", topic, "items", false))
	a := e.start(e.cfg, consume.Options{})
	b := e.start(e.cfg, consume.Options{})
	// Readiness comes with joining; the assignment may still settle.
	waittest.For(t, 30*time.Second, "both members ready, one owning the partition", func() bool {
		return a.c.Ready() && b.c.Ready() && len(a.c.Applied())+len(b.c.Applied()) == 1
	})
	if err := a.stop(); err != nil {
		t.Fatal(err)
	}
	if a.c.Ready() {
		t.Error("a stopped member reports ready")
	}
}
