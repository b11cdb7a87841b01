package main

import (
	"context"
	"fmt"
	"maps"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/idemsink/idemsink/internal/kafkatest"
	"github.com/idemsink/idemsink/internal/sink"
)

// A replay of target dates on a clean table writes nothing; it restores
// rows deleted by hand while the live group keeps consuming, and never
// overwrites the newer rows the live group wrote.
func TestReplayBesideLiveGroup(t *testing.T) {
	f := newFixture(t, kafkatest.New(t), 2, "")
	want := map[int64]string{} // the oracle: id -> "v note" of the newest version
	for d := 1; d <= 3; d++ {
		f.produceDay(d, 4)
		for p := range 2 {
			for i := range 4 {
				want[id(d, p, i)] = "1 first"
			}
		}
	}
	f.drain()
	before := f.xmins()
	out, err := f.run("replay", "--from", "2026-11-02")
	if err != nil || !strings.Contains(out, "inserted 0, updated 0, repaired 0, unchanged 8, stale 0, dead 0, deleted 0") {
		t.Fatalf("replay on a clean table: %v\n%s", err, out)
	}
	if after := f.xmins(); !maps.Equal(before, after) {
		t.Errorf("a replay on a clean table rewrote rows: xmins %v, were %v", after, before)
	}

	// The live group runs from here on. Newer versions of two day-2 keys,
	// dated day 4, reach the table through it.
	live := f.start()
	f.k.Produce(f.record(id(2, 1, 0), 1, day(4), 2, "newer"), f.record(id(2, 1, 1), 1, day(4), 2, "newer"))
	want[id(2, 1, 0)], want[id(2, 1, 1)] = "2 newer", "2 newer"
	f.waitApplied()
	if n := f.exec("DELETE FROM orders WHERE id = ANY($1)", []int64{id(2, 0, 0), id(2, 0, 1), id(2, 0, 2), id(2, 0, 3)}); n != 4 {
		t.Fatalf("deleted %d rows, want 4", n)
	}
	before = f.xmins()
	committedBefore := f.k.Committed(f.group, f.topic)

	// While the replay runs, more records come: new keys and even newer
	// versions of day-2 keys; the live group applies them.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	wg.Add(1)
	go func() {
		defer wg.Done()
		// A steady trickle, one step a tick: pacing, not a condition wait.
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			recs := []*kgo.Record{f.record(id(5, 0, i), 0, day(5), 1, "during")}
			if i < 4 {
				recs = append(recs, f.record(id(2, 0, i), 0, day(5), 3, "newest"))
			}
			f.k.Produce(recs...)
			mu.Lock()
			want[id(5, 0, i)] = "1 during"
			if i < 4 {
				want[id(2, 0, i)] = "3 newest"
			}
			mu.Unlock()
		}
	}()
	out, err = f.run("replay", "--from", "2026-11-02", "--to", "2026-11-02")
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatalf("replay beside the live group: %v\n%s", err, out)
	}
	// Day 2 holds 8 records: 4 deleted rows come back (or are found stale,
	// if the live group restored them first with a newer version), 2 are
	// older than the live group's versions, 2 unchanged.
	r := summary(t, out)
	if r.Inserted+r.Stale != 6 || r.Stale < 2 || r.Updated != 0 || r.Deleted != 0 || r.Unchanged != 2 || r.DeadLettered != 0 {
		t.Errorf("replay: %+v; want 4 inserted or stale beyond the 2 stale, 2 unchanged, none deleted", r)
	}
	f.waitApplied()
	if err := live.stop(); err != nil {
		t.Fatalf("live member: %v", err)
	}
	rows, err := f.pool.Query(context.Background(), "SELECT id, v || ' ' || note FROM orders")
	if err != nil {
		t.Fatal(err)
	}
	got := map[int64]string{}
	for rows.Next() {
		var k int64
		var s string
		if err := rows.Scan(&k, &s); err != nil {
			t.Fatal(err)
		}
		got[k] = s
	}
	if !maps.Equal(got, want) {
		for k, w := range want {
			if got[k] != w {
				t.Errorf("id %d: %q, want %q", k, got[k], w)
			}
		}
		t.Fatalf("%d rows, want %d", len(got), len(want))
	}
	// Rows of other dates that nobody changed were not rewritten.
	after := f.xmins()
	for d := 1; d <= 3; d += 2 {
		for p := range 2 {
			for i := range 4 {
				if k := id(d, p, i); after[k] != before[k] {
					t.Errorf("id %d of day %d rewritten by the replay", k, d)
				}
			}
		}
	}
	// The live group moved on by itself; the replay left no ledger rows.
	if c := f.k.Committed(f.group, f.topic); c[0] <= committedBefore[0] {
		t.Errorf("the live group's commit on partition 0 is %d, was %d before the replay", c[0], committedBefore[0])
	}
	if n := f.exec("SELECT FROM idemsink.offsets WHERE group_id <> $1", f.group); n != 0 {
		t.Errorf("%d ledger rows of other groups left after the replay", n)
	}
}

// summary reads the totals a replay prints last.
func summary(t *testing.T, out string) sink.Result {
	t.Helper()
	i := strings.Index(out, "inserted ")
	if i < 0 {
		t.Fatalf("no summary in:\n%s", out)
	}
	var r sink.Result
	if _, err := fmt.Sscanf(out[i:], "inserted %d, updated %d, repaired %d, unchanged %d, stale %d, dead %d, deleted %d",
		&r.Inserted, &r.Updated, &r.Repaired, &r.Unchanged, &r.Stale, &r.DeadLettered, &r.Deleted); err != nil {
		t.Fatalf("replay printed %q: %v", out, err)
	}
	return r
}
