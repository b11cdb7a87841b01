package sink_test

import (
	"context"
	"strconv"
	"strings"
	"testing"

	"github.com/idemsink/idemsink/internal/batch"
	"github.com/idemsink/idemsink/internal/config"
	"github.com/idemsink/idemsink/internal/decode"
	"github.com/idemsink/idemsink/internal/sink"
)

// commitAs is c in another group: its ledger has applied nothing, so
// every record of the batch is applied again, as by `consumer replay`.
func commitAs(c sink.Commit, group string) sink.Commit {
	c.Group = group
	return c
}

func xmin(f *fixture, table string, id int) string {
	f.t.Helper()
	var x string
	if err := f.pool.QueryRow(context.Background(), "SELECT xmin::text FROM "+table+" WHERE id = $1", id).Scan(&x); err != nil {
		f.t.Fatalf("xmin of %d: %v", id, err)
	}
	return x
}

// The record a row came from restores it when the row was edited by hand
// at the same version: a replay reports it repaired, the content is the
// record's again, and a second replay writes nothing (xmin unchanged).
func TestReplayRepairsSameVersionDamage(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t, pipeline("rep", true))
	vals := []string{
		`{"id":1,"qty":1,"note":"a","v":3,"day":"2026-03-01"}`,
		`{"id":2,"qty":2,"note":"b","v":3,"day":"2026-03-01"}`,
		`{"id":3,"qty":3,"note":"c","v":3,"day":"2026-03-01"}`,
	}
	b := f.batchOf("rep", 0, vals...)
	if r, err := f.s.Apply(ctx, batch.Of(b), commitFor(b, 1)); err != nil || r.Inserted != 3 {
		t.Fatalf("first apply: %+v, %v", r, err)
	}
	// Damage by hand: same version, other content; and a NULL in a nullable column.
	if _, err := f.pool.Exec(ctx, `UPDATE rep SET qty = 99 WHERE id = 1; UPDATE rep SET note = NULL WHERE id = 2`); err != nil {
		t.Fatal(err)
	}
	untouched := xmin(f, "rep", 3)

	b = f.batchOf("rep", 0, vals...)
	r, err := f.s.Apply(ctx, batch.Of(b), commitAs(commitFor(b, 1), "replay-1"))
	if err != nil {
		t.Fatalf("replay: %v", err)
	}
	if r.Repaired != 2 || r.Updated != 0 || r.Inserted != 0 || r.Unchanged != 1 || r.Stale != 0 {
		t.Errorf("replay: %+v; want 2 repaired, 1 unchanged", r)
	}
	if n := f.count(`SELECT count(*) FROM rep WHERE (id, qty, note) IN ((1, 1, 'a'), (2, 2, 'b'), (3, 3, 'c'))`); n != 3 {
		t.Errorf("%d rows restored of 3", n)
	}
	if got := xmin(f, "rep", 3); got != untouched {
		t.Errorf("the undamaged row was written: xmin %s, was %s", got, untouched)
	}
	before := xmin(f, "rep", 1)
	b = f.batchOf("rep", 0, vals...)
	r, err = f.s.Apply(ctx, batch.Of(b), commitAs(commitFor(b, 1), "replay-2"))
	if err != nil || r.Unchanged != 3 || r.Repaired != 0 {
		t.Errorf("second replay: %+v, %v; want 3 unchanged", r, err)
	}
	if got := xmin(f, "rep", 1); got != before {
		t.Errorf("a repaired row was written again: xmin %s, was %s", got, before)
	}
}

// An older record still never writes, even over a damaged row; of two
// records of one key with the same version at different positions the
// later position wins, also against a row written by the earlier one.
func TestRepairRuleOlderAndEqualVersions(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t, pipeline("eq", true))
	// Offset 0: v2; offset 1: v2 again (same version, later position).
	b := f.batchOf("eq", 0, `{"id":1,"qty":1,"v":2,"day":"2026-03-01"}`, `{"id":1,"qty":2,"v":2,"day":"2026-03-01"}`)
	if r, err := f.s.Apply(ctx, batch.Of(b), commitFor(b, 1)); err != nil || r.Inserted != 1 || r.Superseded != 1 {
		t.Fatalf("apply: %+v, %v", r, err)
	}
	if n := f.count(`SELECT qty FROM eq WHERE id = 1`); n != 2 {
		t.Fatalf("qty %d, want 2 (the later position)", n)
	}
	// The earlier record alone, replayed: older position, never writes.
	b = f.batchOf("eq", 0, `{"id":1,"qty":1,"v":2,"day":"2026-03-01"}`)
	r, err := f.s.Apply(ctx, batch.Of(b), commitAs(commitFor(b, 1), "replay"))
	if err != nil || r.Stale != 1 || r.Repaired != 0 {
		t.Errorf("replay of the earlier record: %+v, %v; want 1 stale", r, err)
	}
	// Damage the row, then replay an older version: still stale, row stays damaged.
	if _, err := f.pool.Exec(ctx, `UPDATE eq SET qty = 77 WHERE id = 1`); err != nil {
		t.Fatal(err)
	}
	b = f.batchOf("eq", 0, `{"id":1,"qty":5,"v":1,"day":"2026-03-01"}`)
	r, err = f.s.Apply(ctx, batch.Of(b), commitAs(commitFor(b, 1), "replay-old"))
	if err != nil || r.Stale != 1 || r.Repaired != 0 || r.Updated != 0 {
		t.Errorf("replay of an older version: %+v, %v; want 1 stale", r, err)
	}
	if n := f.count(`SELECT qty FROM eq WHERE id = 1`); n != 77 {
		t.Errorf("an older record wrote the row: qty %d", n)
	}
}

// A deleted key is not brought back by a replay of the record it came
// from: the tombstone is newer.
func TestRepairDoesNotResurrectDeleted(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	p := pipeline("tomb", false)
	p.Deletes = "apply"
	f := newFixture(t, p)
	b := f.batchMixed("tomb", kafkaRec{0, "", `{"id":1,"qty":1,"day":"2026-03-01"}`}, kafkaRec{1, `{"id":1}`, ""})
	if _, err := f.s.Apply(ctx, batch.Of(b), commitFor(b, 1)); err != nil {
		t.Fatal(err)
	}
	b = f.batchMixed("tomb", kafkaRec{0, "", `{"id":1,"qty":1,"day":"2026-03-01"}`})
	r, err := f.s.Apply(ctx, batch.Of(b), commitAs(commitFor(b, 1), "replay"))
	if err != nil || r.Inserted != 0 || r.Repaired != 0 {
		t.Errorf("replay: %+v, %v", r, err)
	}
	if n := f.count(`SELECT count(*) FROM tomb`); n != 0 {
		t.Errorf("%d rows after replaying a deleted key's upsert, want 0", n)
	}
}

// Every application of a batch is kept, with its group and counts; the
// batches row holds the latest.
func TestBatchHistoryKeepsEveryApplication(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t, pipeline("hist", true))
	vals := []string{`{"id":1,"qty":1,"v":1,"day":"2026-03-01"}`, `{"id":2,"qty":2,"v":1,"day":"2026-03-01"}`}
	b := f.batchOf("hist", 0, vals...)
	if _, err := f.s.Apply(ctx, batch.Of(b), commitFor(b, 1)); err != nil {
		t.Fatal(err)
	}
	if _, err := f.pool.Exec(ctx, `UPDATE hist SET qty = 9 WHERE id = 2`); err != nil {
		t.Fatal(err)
	}
	b = f.batchOf("hist", 0, vals...)
	r, err := f.s.Apply(ctx, batch.Of(b), commitAs(commitFor(b, 1), "backfill"))
	if err != nil || len(r.Batches) != 1 || r.Batches[0].Applications != 2 {
		t.Fatalf("second application: %+v, %v", r, err)
	}
	rows, err := f.pool.Query(ctx, `SELECT application, group_id, inserted, repaired, unchanged FROM idemsink.batch_applications
WHERE batch_id = $1 ORDER BY application`, r.Batches[0].BatchID)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for rows.Next() {
		var app, ins, rep, unch int
		var group string
		if err := rows.Scan(&app, &group, &ins, &rep, &unch); err != nil {
			t.Fatal(err)
		}
		got = append(got, strings.Join([]string{group, itoa(app), itoa(ins), itoa(rep), itoa(unch)}, " "))
	}
	want := []string{"g 1 2 0 0", "backfill 2 0 1 1"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("history %q, want %q", got, want)
	}
	if n := f.count(`SELECT count(*) FROM idemsink.batches WHERE batch_id = $1 AND group_id = 'backfill' AND repaired = 1`, r.Batches[0].BatchID); n != 1 {
		t.Errorf("the batches row does not hold the latest application")
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

// A column the pipeline gained is added to the table by EnsureTables when
// it is nullable, and a replay of the same records fills it: every row
// is repaired from the record it came from.
func TestNewColumnAddedAndFilledByReplay(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	p := pipeline("evo", true)
	f := newFixture(t, p)
	vals := []string{`{"id":1,"qty":1,"v":1,"sku":"A","day":"2026-03-01"}`, `{"id":2,"qty":2,"v":1,"sku":"B","day":"2026-03-01"}`}
	b := f.batchOf("evo", 0, vals...)
	if _, err := f.s.Apply(ctx, batch.Of(b), commitFor(b, 1)); err != nil {
		t.Fatal(err)
	}
	// The pipeline gains a nullable column.
	p.Columns = append(p.Columns, config.Column{Name: "sku", Type: "text", Nullable: true})
	f2 := reopen(t, f, p)
	b = f2.batchOf("evo", 0, vals...)
	r, err := f2.s.Apply(ctx, batch.Of(b), commitAs(commitFor(b, 1), "backfill"))
	if err != nil || r.Repaired != 2 {
		t.Fatalf("replay after adding a column: %+v, %v; want 2 repaired", r, err)
	}
	if n := f.count(`SELECT count(*) FROM evo WHERE sku IS NOT NULL`); n != 2 {
		t.Errorf("%d rows have the new column filled, want 2", n)
	}
}

// A column that cannot be added (NOT NULL, table has rows), a type change
// and a dropped NOT NULL column are refused with the statement to run.
func TestEvolutionRefusals(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	p := pipeline("ref", false)
	f := newFixture(t, p)
	b := f.batchOf("ref", 0, `{"id":1,"qty":1,"day":"2026-03-01"}`)
	if _, err := f.s.Apply(ctx, batch.Of(b), commitFor(b, 1)); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		edit func(p *config.Pipeline)
		want string
	}{
		{"not null on rows", func(p *config.Pipeline) {
			p.Columns = append(p.Columns, config.Column{Name: "extra", Type: "text"})
		}, `ALTER TABLE "public"."ref" ADD COLUMN "extra" text NOT NULL DEFAULT`},
		{"type change", func(p *config.Pipeline) { p.Columns[2].Type = "bigint" }, `ALTER TABLE "public"."ref" ALTER COLUMN "qty" TYPE bigint`},
		{"removed not null", func(p *config.Pipeline) { p.Columns = p.Columns[:2] }, `ALTER TABLE "public"."ref" DROP COLUMN "qty"`},
	} {
		q := p
		q.Columns = append([]config.Column(nil), p.Columns...)
		c.edit(&q)
		cfg := testConfig(q)
		err := sink.New(f.pool, cfg, sink.Options{}).EnsureTables(ctx, cfg)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v; want an error with %q", c.name, err, c.want)
		}
	}
	if n := f.count(`SELECT count(*) FROM pg_attribute WHERE attrelid = 'ref'::regclass AND attname = 'extra'`); n != 0 {
		t.Errorf("a refused column was added")
	}
}

// reopen is f with its pipeline replaced by p, tables ensured again, on
// the same database.
func reopen(t *testing.T, f *fixture, p config.Pipeline) *fixture {
	t.Helper()
	g := &fixture{t: t, pool: f.pool, cfg: testConfig(p), dec: f.dec}
	g.s = sink.New(g.pool, g.cfg, sink.Options{})
	if err := g.s.EnsureTables(context.Background(), g.cfg); err != nil {
		t.Fatalf("EnsureTables after the pipeline changed: %v", err)
	}
	g.dec = map[string]*decode.Decoder{}
	for i := range g.cfg.Pipelines {
		g.dec[g.cfg.Pipelines[i].Name] = decode.NewDecoder(&g.cfg.Pipelines[i])
	}
	return g
}

// crash is what a fault hook panics with: the process "dies" at the point,
// its transaction never commits.
type crash struct{ point string }

// A repairing replay that dies between its upsert and its commit, at
// every batch in turn, leaves every batch either fully repaired or not at
// all; running it again repairs the rest, and the batch log shows only
// the applications that committed.
func TestCrashMidRepairRerunFixes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t, pipeline("crash", true))
	var vals [3][]string
	for b := range 3 {
		for i := range 4 {
			id := b*4 + i
			vals[b] = append(vals[b], `{"id":`+strconv.Itoa(id)+`,"qty":`+strconv.Itoa(id)+`,"v":1,"day":"2026-03-01"}`)
		}
	}
	batches := func(s *sink.Sink, group string) (repaired int, err error) {
		for b := range 3 {
			bt := f.batchOf("crash", int64(b*4), vals[b]...)
			r, err := s.Apply(ctx, batch.Of(bt), commitAs(commitFor(bt, 1), group))
			if err != nil {
				return repaired, err
			}
			repaired += r.Repaired
		}
		return repaired, nil
	}
	if _, err := batches(f.s, "g"); err != nil {
		t.Fatal(err)
	}
	// Damage one row of every batch at its own version.
	if _, err := f.pool.Exec(ctx, `UPDATE crash SET qty = -1 WHERE id IN (1, 5, 9)`); err != nil {
		t.Fatal(err)
	}
	for _, point := range []string{sink.FaultAfterStage, sink.FaultAfterUpsert} {
		// Crash at the second batch's point: the first batch is repaired
		// and committed, the second not at all.
		hits := 0
		s := sink.New(f.pool, f.cfg, sink.Options{Fault: func(p string) {
			if p == point {
				if hits++; hits == 2 {
					panic(crash{p})
				}
			}
		}})
		func() {
			defer func() {
				if r := recover(); r == nil {
					t.Fatalf("%s: no crash", point)
				} else if _, ok := r.(crash); !ok {
					panic(r)
				}
			}()
			_, _ = batches(s, "replay-"+point)
		}()
		if n := f.count(`SELECT count(*) FROM crash WHERE qty = -1`); n > 2 {
			t.Errorf("%s: %d damaged rows after the crash, want at most 2 (the first batch committed)", point, n)
		}
		if n := f.count(`SELECT count(*) FROM crash WHERE qty = -1 AND id = 5`); n != 1 {
			t.Errorf("%s: the crashed batch's row is half-applied", point)
		}
		// The rerun repairs whatever is left.
		if _, err := batches(f.s, "rerun-"+point); err != nil {
			t.Fatalf("%s: rerun: %v", point, err)
		}
		if n := f.count(`SELECT count(*) FROM crash WHERE qty <> id`); n != 0 {
			t.Errorf("%s: %d rows still damaged after the rerun", point, n)
		}
		if n := f.count(`SELECT count(*) FROM idemsink.batch_applications WHERE group_id = $1`, "replay-"+point); n != 1 {
			t.Errorf("%s: %d applications of the crashed replay in the batch log, want 1 (the committed batch)", point, n)
		}
		if _, err := f.pool.Exec(ctx, `UPDATE crash SET qty = -1 WHERE id IN (1, 5, 9)`); err != nil {
			t.Fatal(err)
		}
	}
}
