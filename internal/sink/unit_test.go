package sink_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/idemsink/idemsink/internal/batch"
	"github.com/idemsink/idemsink/internal/record"
	"github.com/idemsink/idemsink/internal/sink"
)

// One transaction applies the records of three dates with one statement
// each for stage, upsert and verification; each date keeps its own counts,
// batch-log entry, run id and _batch_id on its rows. A key that moved date
// within the unit is staged once, its newer row, and the older counts as
// superseded in its own date's entry.
func TestApplyUnitOfManyDates(t *testing.T) {
	t.Parallel()
	f := newFixture(t, pipeline("items", true))
	d := f.dec["items"]
	u := batch.NewUnit(d.Pipeline(), time.Now())
	off := int64(0)
	add := func(v string) {
		pos := record.Position{TP: record.TP{Topic: "items-topic"}, Offset: off}
		off++
		row, date, err := d.Decode(nil, []byte(v), pos)
		if err != nil {
			t.Fatal(err)
		}
		u.Add(date, row)
	}
	add(`{"id":1,"qty":1,"v":1,"day":"2026-03-01"}`)
	add(`{"id":2,"qty":2,"v":1,"day":"2026-03-02"}`)
	add(`{"id":3,"qty":3,"v":1,"day":"2026-03-03"}`)
	add(`{"id":1,"qty":9,"v":2,"day":"2026-03-03"}`) // key 1 moves to the 3rd: supersedes its row of the 1st
	add(`{"id":4,"qty":4,"v":1,"day":"2026-03-01"}`)
	if u.Dates() != 3 || u.Records != 5 {
		t.Fatalf("unit of %d dates, %d records; want 3, 5", u.Dates(), u.Records)
	}
	c := sink.Commit{Group: "g", Generation: 1, Member: "m", Applied: map[record.TP]int64{{Topic: "items-topic"}: off - 1}}
	ctx := context.Background()
	res, err := f.s.Apply(ctx, u, c)
	if err != nil {
		t.Fatal(err)
	}
	if res.Records != 5 || res.Inserted != 4 || res.Superseded != 1 || len(res.Batches) != 3 {
		t.Fatalf("result %+v; want 5 records, 4 inserted, 1 superseded, 3 dates", res)
	}
	if res.Verify != 0 {
		t.Errorf("verification probed the target again (%s) where the upsert's counts prove every row", res.Verify)
	}
	want := map[string]string{ // date: records/superseded/inserted
		"2026-03-01": "2/1/1",
		"2026-03-02": "1/0/1",
		"2026-03-03": "2/0/2",
	}
	for _, b := range res.Batches {
		if got := fmt.Sprintf("%d/%d/%d", b.Records, b.Superseded, b.Inserted); got != want[b.Date.String()] {
			t.Errorf("%s: records/superseded/inserted %s, want %s", b.Date, got, want[b.Date.String()])
		}
		if b.RunID != batch.RunID("items", b.Date) {
			t.Errorf("%s: run id %x, want the date's", b.Date, b.RunID)
		}
		var logged string
		if err := f.pool.QueryRow(ctx, `SELECT format('%s/%s/%s', records, superseded, inserted) FROM idemsink.batches
WHERE batch_id = $1 AND target_date = $2`, b.BatchID, b.Date.Time()).Scan(&logged); err != nil || logged != want[b.Date.String()] {
			t.Errorf("%s: batch log %q, %v; want %s", b.Date, logged, err, want[b.Date.String()])
		}
	}
	// Each row names its own date's batch.
	var named string
	if err := f.pool.QueryRow(ctx, `SELECT string_agg(format('%s:%s', i.id, b.target_date), ' ' ORDER BY i.id)
FROM items i JOIN idemsink.batches b ON b.batch_id = i._batch_id`).Scan(&named); err != nil {
		t.Fatal(err)
	}
	if want := "1:2026-03-03 2:2026-03-02 3:2026-03-03 4:2026-03-01"; named != want {
		t.Errorf("rows' batches by date %s, want %s", named, want)
	}
	if n := f.count(`SELECT qty FROM items WHERE id = 1`); n != 9 {
		t.Errorf("key 1 has qty %d, want 9 (its newer row)", n)
	}
	// Applied again: every record skipped, nothing changed on any date:
	// the three dates share one unchanged row, their entries stay as they
	// were.
	res, err = f.s.Apply(ctx, u, c)
	if err != nil || res.Skipped != 4 || res.Superseded != 1 {
		t.Fatalf("again: %+v, %v; want 4 skipped, 1 superseded", res, err)
	}
	if n := f.count(`SELECT count(*) FROM idemsink.batches WHERE applications = 1`); n != 3 {
		t.Errorf("%d entries applied once, want 3", n)
	}
	var dates string
	if err := f.pool.QueryRow(ctx, `SELECT format('%s %s/%s/%s', dates, records, superseded, skipped) FROM idemsink.unchanged_applications`).Scan(&dates); err != nil ||
		dates != "{2026-03-01,2026-03-02,2026-03-03} 5/1/4" {
		t.Errorf("unchanged applications %q, %v; want the three dates, 5 records, 1 superseded, 4 skipped", dates, err)
	}
}

// A replay over rows in place under a new group (the ledger does not know
// it): the date it changes gets its batch-log entry, the dates it finds
// unchanged share one row, and History reads both back, by date too.
func TestUnchangedDatesShareOneRow(t *testing.T) {
	t.Parallel()
	f := newFixture(t, pipeline("items", true))
	d := f.dec["items"]
	ctx := context.Background()
	values := []string{
		`{"id":1,"qty":1,"v":1,"day":"2026-03-01"}`,
		`{"id":2,"qty":2,"v":1,"day":"2026-03-02"}`,
		`{"id":3,"qty":3,"v":1,"day":"2026-03-03"}`,
	}
	apply := func(group string) sink.Result {
		t.Helper()
		u := batch.NewUnit(d.Pipeline(), time.Now())
		for off, v := range values {
			row, date, err := d.Decode(nil, []byte(v), record.Position{TP: record.TP{Topic: "items-topic"}, Offset: int64(off)})
			if err != nil {
				t.Fatal(err)
			}
			u.Add(date, row)
		}
		res, err := f.s.Apply(ctx, u, sink.Commit{Group: group, Generation: 1, Member: "m",
			Applied: map[record.TP]int64{{Topic: "items-topic"}: int64(len(values) - 1)}})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	apply("live")
	// Damage the row of the 2nd: the replay repairs it, the other two
	// dates are unchanged.
	if _, err := f.pool.Exec(ctx, `UPDATE items SET qty = 20 WHERE id = 2`); err != nil {
		t.Fatal(err)
	}
	res := apply("replay")
	if res.Repaired != 1 || res.Unchanged != 2 {
		t.Fatalf("replay %+v; want 1 repaired, 2 unchanged", res.Counts)
	}
	for _, b := range res.Batches {
		if want := map[bool]int{true: 2, false: 0}[b.Date.String() == "2026-03-02"]; b.Applications != want {
			t.Errorf("%s: application %d, want %d", b.Date, b.Applications, want)
		}
	}
	if n := f.count(`SELECT count(*) FROM idemsink.batch_applications WHERE group_id = 'replay'`); n != 1 {
		t.Errorf("%d batch-log applications of the replay, want 1 (the repaired date's)", n)
	}
	all, err := f.s.History(ctx, sink.HistoryFilter{Group: "replay"})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, a := range all {
		got = append(got, fmt.Sprintf("%s%v a%d r%d u%d", a.Date, a.Dates, a.Application, a.Repaired, a.Unchanged))
	}
	if want := "[2026-03-02[] a2 r1 u0 [2026-03-01 2026-03-03] a0 r0 u2]"; fmt.Sprint(got) != want {
		t.Errorf("history of the replay %v, want %s", got, want)
	}
	on3, err := f.s.History(ctx, sink.HistoryFilter{Group: "replay", Date: record.Date{Year: 2026, Month: 3, Day: 3}})
	if err != nil || len(on3) != 1 || len(on3[0].Dates) != 2 || on3[0].Batch != "" {
		t.Errorf("history of the replay on 2026-03-03: %+v, %v; want the one unchanged row", on3, err)
	}
}
