package sink_test

import (
	"context"
	"maps"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/idemsink/idemsink/internal/batch"
	"github.com/idemsink/idemsink/internal/metrics"
	"github.com/idemsink/idemsink/internal/record"
	"github.com/idemsink/idemsink/internal/sink"
)

// idemsink_dead_letters_total counts the dead letters a batch committed, by
// the class their reason starts with ("other" for none): those the decoder
// made and those PostgreSQL refused, not those a redelivery skips, and
// nothing of a batch whose transaction rolls back.
func TestDeadLettersCountedByClass(t *testing.T) {
	t.Parallel()
	f := newFixture(t, pipeline("items", false))
	m := metrics.New(prometheus.NewRegistry())
	f.s = sink.New(f.pool, f.cfg, sink.Options{Metrics: m})
	ctx := context.Background()
	if _, err := f.pool.Exec(ctx, "ALTER TABLE items ADD CONSTRAINT qty_positive CHECK (qty > 0)"); err != nil {
		t.Fatal(err)
	}
	counts := func() map[string]float64 {
		got := map[string]float64{}
		for _, class := range append([]string{sink.ClassOther}, record.Classes...) {
			if n := testutil.ToFloat64(m.DeadLetters.WithLabelValues("items", class)); n != 0 {
				got[class] = n
			}
		}
		return got
	}
	checkCounts := func(when string, got, want map[string]float64) {
		t.Helper()
		if !maps.Equal(got, want) {
			t.Errorf("%s: dead letters by class %v, want %v", when, got, want)
		}
	}
	check := func(when string, want map[string]float64) {
		t.Helper()
		checkCounts(when, counts(), want)
	}
	if n := testutil.CollectAndCount(m.DeadLetters); n != len(record.Classes)+1 {
		t.Errorf("%d dead-letter series before any batch, want %d: every class of the pipeline at 0", n, len(record.Classes)+1)
	}

	b := f.batchOf("items", 0, `{"id":1,"qty":1,"day":"2026-03-01"}`, `not json`, `[1]`, `{"qty":2,"day":"2026-03-01"}`,
		`{"id":2,"qty":0,"day":"2026-03-01"}`, `{oops`)
	b.AddDead(record.DeadLetter{Pos: record.Position{TP: record.TP{Topic: "items-topic"}, Offset: 6}, Reason: "a reason with no class"})
	r, err := f.s.Apply(ctx, batch.Of(b), commitFor(b, 1))
	if err != nil {
		t.Fatal(err)
	}
	if r.DeadLettered != 6 {
		t.Errorf("%+v; want 6 dead-lettered", r)
	}
	var total sink.Result
	total.Add(r)
	want := map[string]float64{record.ClassMalformed: 2, record.ClassNotObject: 1, record.ClassMissing: 1, record.ClassRefused: 1, sink.ClassOther: 1}
	check("after the batch", want)
	if got := testutil.ToFloat64(m.Records.WithLabelValues("items", "dead_lettered")); got != 6 {
		t.Errorf("records_total{dead_lettered} %v, want 6, the sum over classes", got)
	}

	// A redelivery skips what the ledger has: nothing new is written.
	if r, err := f.s.Apply(ctx, batch.Of(b), commitFor(b, 1)); err != nil || r.Skipped != 7 {
		t.Fatalf("redelivery: %+v, %v; want 7 skipped", r, err)
	}
	check("after a redelivery", want)

	// A batch whose commit fails (here a deferred trigger on the dead
	// letters, run at commit after they are written) counts nothing.
	if _, err := f.pool.Exec(ctx, `CREATE FUNCTION refuse_dead() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'no dead letters today'; END $$;
CREATE CONSTRAINT TRIGGER refuse_dead AFTER INSERT ON idemsink.dead_letters DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION refuse_dead()`); err != nil {
		t.Fatal(err)
	}
	b2 := f.batchOf("items", 7, `{"id":3,"qty":3,"day":"2026-03-01"}`, `"a string"`, `{"id":"x","qty":1,"day":"2026-03-01"}`)
	if _, err := f.s.Apply(ctx, batch.Of(b2), commitFor(b2, 1)); err == nil {
		t.Fatal("apply with a failing commit: no error")
	}
	check("after a rolled-back batch", want)
	if n := f.count("SELECT count(*) FROM idemsink.dead_letters"); n != 6 {
		t.Errorf("%d dead letters stored, want 6: the failed batch's are rolled back", n)
	}

	if _, err := f.pool.Exec(ctx, "DROP TRIGGER refuse_dead ON idemsink.dead_letters"); err != nil {
		t.Fatal(err)
	}
	r, err = f.s.Apply(ctx, batch.Of(b2), commitFor(b2, 1))
	if err != nil {
		t.Fatal(err)
	}
	total.Add(r)
	want[record.ClassNotObject]++
	want[record.ClassType] = 1
	check("after the retried batch", want)
	added := map[string]float64{}
	for class, n := range total.DeadClasses {
		added[class] = float64(n)
	}
	checkCounts("the results added up", added, want)

	// An offset reset (here a new group, whose ledger is empty) applies
	// the batches again: their dead letters are stored already, and are
	// not counted again.
	for _, bb := range []*batch.Batch{b, b2} {
		r, err := f.s.Apply(ctx, batch.Of(bb), commitAs(commitFor(bb, 1), "reset"))
		if err != nil || r.Skipped != 0 || r.DeadLettered == 0 {
			t.Fatalf("after the reset: %+v, %v; want the batch applied again", r, err)
		}
		if len(r.DeadClasses) != 0 {
			t.Errorf("after the reset: dead classes %v, want none new", r.DeadClasses)
		}
	}
	check("after an offset reset", want)
}
