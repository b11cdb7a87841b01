package main

import (
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/idemsink/idemsink/internal/kafkatest"
)

// A replay over a log with a delete in it: the delete (no target date)
// neither misleads the search for the first record of --from nor is
// passed over; it is applied under the version guard, so the older
// upsert of its key, replayed after it, stays deleted.
func TestReplayWithDeletes(t *testing.T) {
	f := newFixture(t, kafkatest.New(t), 1, "")
	cfg, err := os.ReadFile(f.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(f.cfgPath, append(cfg, "    deletes: apply\n"...), 0o644); err != nil {
		t.Fatal(err)
	}
	a, b, c, d := id(2, 0, 0), id(2, 0, 1), id(2, 0, 2), id(3, 0, 0)
	f.k.Produce(
		f.record(a, 0, day(2).Add(time.Hour), 1, "first"),
		f.record(b, 0, day(2).Add(2*time.Hour), 1, "first"),
		// The delete sits where the search looks first (offset 2 of 5).
		&kgo.Record{Topic: f.topic, Partition: 0, Key: fmt.Appendf(nil, `{"id": %d, "v": 2}`, a)},
		f.record(c, 0, day(2).Add(3*time.Hour), 1, "first"),
		f.record(d, 0, day(3).Add(time.Hour), 1, "first"),
	)
	if out, err := f.run("replay", "--from", "2026-11-02", "--to", "2026-11-02"); err != nil {
		t.Fatalf("replay: %v\n%s", err, out)
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
