package sink_test

import (
	"context"
	"testing"
	"time"

	"github.com/idemsink/idemsink/internal/batch"
	"github.com/idemsink/idemsink/internal/config"
	"github.com/idemsink/idemsink/internal/record"
	"github.com/idemsink/idemsink/internal/sink"
)

func deletingPipeline(name string, version bool) config.Pipeline {
	p := pipeline(name, version)
	p.Deletes = "apply"
	return p
}

// kafkaRec is one Kafka record for batchMixed: a tombstone when value is "".
type kafkaRec struct {
	offset     int64
	key, value string
}

// batchMixed decodes records of partition 0, tombstones included, into
// one batch as the consumer would (deletes carry no target date; the
// tests put everything in one batch to exercise both paths at once).
func (f *fixture) batchMixed(pipeline string, recs ...kafkaRec) *batch.Batch {
	f.t.Helper()
	d := f.dec[pipeline]
	b := batch.New(d.Pipeline(), record.Date{}, time.Now())
	for _, r := range recs {
		pos := record.Position{TP: record.TP{Topic: pipeline + "-topic"}, Offset: r.offset}
		var value []byte
		if r.value != "" {
			value = []byte(r.value)
		}
		row, _, err := d.Decode([]byte(r.key), value, pos)
		if err != nil {
			f.t.Fatalf("decode %+v: %v", r, err)
		}
		b.Add(row)
	}
	return b
}

func (f *fixture) apply(b *batch.Batch) sink.Result {
	f.t.Helper()
	res, err := f.s.Apply(context.Background(), batch.Of(b), commitFor(b, 1))
	if err != nil {
		f.t.Fatalf("apply: %v", err)
	}
	return res
}

func (f *fixture) qty(table string, id int) (int, bool) {
	f.t.Helper()
	var q int
	err := f.pool.QueryRow(context.Background(), "SELECT qty FROM "+table+" WHERE id = $1", id).Scan(&q)
	if err != nil {
		return 0, false
	}
	return q, true
}

// A tombstone deletes its key's row, counts it, and leaves a tombstone
// that a redelivered older upsert cannot get past.
func TestDeleteByTombstone(t *testing.T) {
	t.Parallel()
	f := newFixture(t, deletingPipeline("gone", false))
	f.apply(f.batchMixed("gone",
		kafkaRec{0, "", `{"id":1,"qty":1,"day":"2026-03-01"}`},
		kafkaRec{1, "", `{"id":2,"qty":2,"day":"2026-03-01"}`}))
	res := f.apply(f.batchMixed("gone", kafkaRec{2, `{"id":1}`, ""}))
	if res.Deleted != 1 {
		t.Errorf("deleted %d, want 1 (%+v)", res.Deleted, res)
	}
	if _, ok := f.qty("gone", 1); ok {
		t.Error("row 1 is still there after its tombstone")
	}
	if q, ok := f.qty("gone", 2); !ok || q != 2 {
		t.Errorf("row 2: %d, %v; the delete of 1 touched it", q, ok)
	}
	if n := f.count("SELECT count(*) FROM idemsink.tombstones WHERE pipeline = 'gone' AND src_offset = 2"); n != 1 {
		t.Errorf("%d tombstones at offset 2, want 1", n)
	}
	var deleted int
	if err := f.pool.QueryRow(context.Background(), "SELECT deleted FROM idemsink.batches WHERE batch_id = $1", res.Batches[0].BatchID[:]).Scan(&deleted); err != nil || deleted != 1 {
		t.Errorf("ledger says deleted %d (%v), want 1", deleted, err)
	}

	// The first upsert again, as after an offset reset: older than the
	// tombstone, so stale; the row stays deleted.
	if _, err := f.s.ResetLedger(context.Background(), "g", []string{"gone-topic"}); err != nil {
		t.Fatal(err)
	}
	res = f.apply(f.batchMixed("gone", kafkaRec{0, "", `{"id":1,"qty":1,"day":"2026-03-01"}`}))
	if res.Stale != 1 || res.Inserted != 0 {
		t.Errorf("replayed upsert: %+v, want 1 stale, 0 inserted", res)
	}
	if _, ok := f.qty("gone", 1); ok {
		t.Error("a replayed older upsert brought the deleted row back")
	}
	// The delete again: nothing to delete, and the ledger's row of the
	// batch says what this application did.
	res = f.apply(f.batchMixed("gone", kafkaRec{2, `{"id":1}`, ""}))
	if res.Deleted != 0 || res.Batches[0].Applications != 2 {
		t.Errorf("replayed delete: %+v, want 0 deleted, second application", res)
	}
	if n := f.count("SELECT deleted FROM idemsink.batches WHERE batch_id = $1", res.Batches[0].BatchID[:]); n != 0 {
		t.Errorf("the replayed batch's ledger row says %d deleted", n)
	}
	// A newer upsert of the key is a new row.
	res = f.apply(f.batchMixed("gone", kafkaRec{3, "", `{"id":1,"qty":3,"day":"2026-03-01"}`}))
	if q, ok := f.qty("gone", 1); !ok || q != 3 || res.Inserted != 1 {
		t.Errorf("upsert after the delete: qty %d, %v, %+v; want the row back with qty 3", q, ok, res)
	}
}

// With a version field, a tombstone's key carries the version: a late
// delete cannot remove a newer row, and a late older upsert after a delete
// cannot bring the row back, whatever the Kafka order.
func TestDeleteVersionGuard(t *testing.T) {
	t.Parallel()
	f := newFixture(t, deletingPipeline("vdel", true))
	f.apply(f.batchMixed("vdel", kafkaRec{0, "", `{"id":1,"qty":1,"v":9,"day":"2026-03-01"}`}))

	res := f.apply(f.batchMixed("vdel", kafkaRec{1, `{"id":1,"v":7}`, ""}))
	if q, ok := f.qty("vdel", 1); !ok || q != 1 || res.Deleted != 0 {
		t.Errorf("late delete (v7) vs row v9: qty %d, %v, %+v; want the row kept", q, ok, res)
	}
	res = f.apply(f.batchMixed("vdel", kafkaRec{2, `{"id":1,"v":10}`, ""}))
	if _, ok := f.qty("vdel", 1); ok || res.Deleted != 1 {
		t.Errorf("delete v10 vs row v9: row still there or %+v", res)
	}
	// Later in Kafka, older in version: stale.
	res = f.apply(f.batchMixed("vdel", kafkaRec{3, "", `{"id":1,"qty":4,"v":8,"day":"2026-03-01"}`}))
	if _, ok := f.qty("vdel", 1); ok || res.Stale != 1 {
		t.Errorf("upsert v8 after delete v10 brought the row back, or %+v", res)
	}
	res = f.apply(f.batchMixed("vdel", kafkaRec{4, "", `{"id":1,"qty":5,"v":11,"day":"2026-03-01"}`}))
	if q, ok := f.qty("vdel", 1); !ok || q != 5 || res.Inserted != 1 {
		t.Errorf("upsert v11 after delete v10: qty %d, %v, %+v; want it inserted", q, ok, res)
	}
}

// In one batch, the newest of an upsert and a delete of one key wins.
func TestDeleteInBatch(t *testing.T) {
	t.Parallel()
	f := newFixture(t, deletingPipeline("inb", false))
	res := f.apply(f.batchMixed("inb",
		kafkaRec{0, "", `{"id":1,"qty":1,"day":"2026-03-01"}`},
		kafkaRec{1, `{"id":1}`, ""},
		kafkaRec{2, "", `{"id":2,"qty":2,"day":"2026-03-01"}`},
		kafkaRec{3, `{"id":2}`, ""},
		kafkaRec{4, "", `{"id":2,"qty":3,"day":"2026-03-01"}`}))
	if _, ok := f.qty("inb", 1); ok {
		t.Error("row 1 exists; its delete was the newest record")
	}
	if q, ok := f.qty("inb", 2); !ok || q != 3 {
		t.Errorf("row 2: %d, %v; want qty 3", q, ok)
	}
	if res.Superseded != 3 || res.Inserted != 1 || res.Records != 5 {
		t.Errorf("%+v: want 5 records, 3 superseded, 1 inserted", res)
	}
}

// A replay of a range with deletes writes nothing the second time: not
// the tombstone (its xmin stays), not the target.
func TestDeleteReplayWritesNothing(t *testing.T) {
	t.Parallel()
	f := newFixture(t, deletingPipeline("rep", false))
	recs := []kafkaRec{
		{0, "", `{"id":1,"qty":1,"day":"2026-03-01"}`},
		{1, "", `{"id":2,"qty":1,"day":"2026-03-01"}`},
		{2, `{"id":1}`, ""},
	}
	f.apply(f.batchMixed("rep", recs...))
	xmin := func() string {
		var s string
		if err := f.pool.QueryRow(context.Background(), "SELECT string_agg(xmin::text, ',') FROM idemsink.tombstones WHERE pipeline = 'rep'").Scan(&s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	before := xmin()
	// Kafka redelivers: the ledger skips everything (the delete of 1
	// supersedes its upsert in the batch).
	if res := f.apply(f.batchMixed("rep", recs...)); res.Skipped != 2 || res.Superseded != 1 {
		t.Errorf("redelivery: %+v, want 2 skipped, 1 superseded", res)
	}
	// An offset reset replays: applied again, nothing written.
	if _, err := f.s.ResetLedger(context.Background(), "g", []string{"rep-topic"}); err != nil {
		t.Fatal(err)
	}
	res := f.apply(f.batchMixed("rep", recs...))
	if res.Deleted != 0 || res.Inserted != 0 || res.Updated != 0 {
		t.Errorf("replay: %+v, want nothing written", res)
	}
	if after := xmin(); after != before {
		t.Errorf("replay rewrote the tombstone: xmin %s, was %s", after, before)
	}

	if n := f.count("SELECT count(*) FROM rep"); n != 1 {
		t.Errorf("%d rows, want 1", n)
	}
}

// The row-by-row path (a batch the database refused) keeps the tombstone
// rule too: a late, older upsert of a deleted key is stale there as well,
// while the refused row is dead-lettered and the rest applies.
func TestDeleteRowByRow(t *testing.T) {
	t.Parallel()
	f := newFixture(t, deletingPipeline("rbr", false))
	ctx := context.Background()
	if _, err := f.pool.Exec(ctx, "ALTER TABLE rbr ADD CONSTRAINT qty_positive CHECK (qty > 0)"); err != nil {
		t.Fatal(err)
	}
	f.apply(f.batchMixed("rbr", kafkaRec{0, "", `{"id":1,"qty":1,"day":"2026-03-01"}`}, kafkaRec{1, `{"id":1}`, ""}))
	if _, ok := f.qty("rbr", 1); ok {
		t.Fatal("row 1 is still there after its tombstone")
	}
	if _, err := f.s.ResetLedger(ctx, "g", []string{"rbr-topic"}); err != nil {
		t.Fatal(err)
	}
	res := f.apply(f.batchMixed("rbr",
		kafkaRec{0, "", `{"id":1,"qty":1,"day":"2026-03-01"}`}, // older than the tombstone at offset 1
		kafkaRec{2, "", `{"id":2,"qty":0,"day":"2026-03-01"}`}, // refused by the check
		kafkaRec{3, "", `{"id":3,"qty":3,"day":"2026-03-01"}`}))
	if res.Stale != 1 || res.Inserted != 1 || res.DeadLettered != 1 || res.Deleted != 0 {
		t.Errorf("%+v; want 1 stale, 1 inserted, 1 dead-lettered, 0 deleted", res)
	}
	if _, ok := f.qty("rbr", 1); ok {
		t.Error("the row-by-row path brought a deleted row back")
	}
	if q, ok := f.qty("rbr", 3); !ok || q != 3 {
		t.Errorf("row 3: %d, %v; want qty 3", q, ok)
	}
}
