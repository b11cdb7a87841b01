package main

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/idemsink/idemsink/internal/kafkatest"
)

// deletesFixture is the replay fixture with its pipeline applying deletes.
func deletesFixture(t *testing.T) *fixture {
	t.Helper()
	f := newFixture(t, kafkatest.New(t), 1, "")
	cfg, err := os.ReadFile(f.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(f.cfgPath, append(cfg, "    deletes: apply\n"...), 0o644); err != nil {
		t.Fatal(err)
	}
	return f
}

// A replay over a log with a delete in it: the delete (no target date)
// neither misleads the search for the first record of --from nor is
// passed over; it is applied under the version guard, so the older
// upsert of its key, replayed after it, stays deleted.
func TestReplayWithDeletes(t *testing.T) {
	f := deletesFixture(t)
	a, b, c, d := id(2, 0, 0), id(2, 0, 1), id(2, 0, 2), id(3, 0, 0)
	f.k.Produce(
		f.record(a, 0, day(2).Add(time.Hour), 1, "first"),
		f.record(b, 0, day(2).Add(2*time.Hour), 1, "first"),
		// The delete sits where the search looks first (offset 2 of 5).
		&kgo.Record{Topic: f.topic, Partition: 0, Key: fmt.Appendf(nil, `{"id": %d, "v": 2}`, a)},
		f.record(c, 0, day(2).Add(3*time.Hour), 1, "first"),
		f.record(d, 0, day(3).Add(time.Hour), 1, "first"),
	)
	out, err := f.run("replay", "--from", "2026-11-02", "--to", "2026-11-02")
	if err != nil {
		t.Fatalf("replay: %v\n%s", err, out)
	}
	if !strings.Contains(out, "inserted 2, updated 0, repaired 0, unchanged 0, stale 1, dead 0, deleted 0") {
		t.Errorf("replay printed:\n%s\nwant b and c inserted, a's upsert stale after its delete (nothing to delete yet)", out)
	}
	var got []int64
	rows, err := f.pool.Query(t.Context(), "SELECT id FROM orders ORDER BY id")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		got = append(got, id)
	}
	if fmt.Sprint(got) != fmt.Sprint([]int64{b, c}) {
		t.Errorf("rows %v after the replay, want %v: day 2 without the deleted key", got, []int64{b, c})
	}
	var n int
	if err := f.pool.QueryRow(t.Context(), "SELECT count(*) FROM idemsink.tombstones WHERE pipeline = 'orders' AND version = 2").Scan(&n); err != nil || n != 1 {
		t.Errorf("%d tombstones of the replayed delete (%v), want 1", n, err)
	}
}

// A replay that deletes a row the target holds counts it in its summary.
func TestReplayCountsDeletes(t *testing.T) {
	f := deletesFixture(t)
	a, b := id(2, 0, 0), id(2, 0, 1)
	f.k.Produce(f.record(a, 0, day(2).Add(time.Hour), 1, "first"), f.record(b, 0, day(2).Add(2*time.Hour), 1, "first"))
	replay := func() int {
		t.Helper()
		out, err := f.run("replay", "--from", "2026-11-02")
		if err != nil {
			t.Fatalf("replay: %v\n%s", err, out)
		}
		return summary(t, out).Deleted
	}
	if n := replay(); n != 0 {
		t.Errorf("first replay: deleted %d, want 0", n)
	}
	// Now a's delete: the second replay removes the row the first wrote.
	f.k.Produce(&kgo.Record{Topic: f.topic, Partition: 0, Key: fmt.Appendf(nil, `{"id": %d, "v": 2}`, a)})
	if n := replay(); n != 1 {
		t.Errorf("replay with a's delete: deleted %d, want 1", n)
	}
	var n int
	if err := f.pool.QueryRow(t.Context(), "SELECT count(*) FROM orders WHERE id = $1", a).Scan(&n); err != nil || n != 0 {
		t.Errorf("%d rows of the deleted key (%v), want 0", n, err)
	}
}
