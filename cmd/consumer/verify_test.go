package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/idemsink/idemsink/internal/kafkatest"
)

// verify --date passes on a clean table and finds, by key, a row deleted,
// a row changed, a row set back to an older version and a row added by
// hand; the exit status is then an error.
func TestVerifyReconciles(t *testing.T) {
	f := newFixture(t, kafkatest.New(t), 2, "")
	for d := 1; d <= 3; d++ {
		f.produceDay(d, 4)
	}
	// A newer version of a day-1 key, dated day 2: the key belongs to day 2
	// now, and its day-1 record is not the newest.
	f.k.Produce(f.record(id(1, 0, 0), 0, day(2).Add(20*60*60e9), 2, "moved"))
	f.drain()
	out, err := f.run("verify", "--date", "2026-11-02")
	if err != nil || !strings.Contains(out, "25 record(s) read (0 undecodable), 9 key(s) on those dates, 9 row(s) match, 0 mismatch(es)") {
		t.Fatalf("verify on a clean table: %v\n%s", err, out)
	}

	f.exec("DELETE FROM orders WHERE id = $1", id(2, 0, 1))
	f.exec("UPDATE orders SET note = 'edited by hand' WHERE id = $1", id(2, 1, 2))
	f.exec("UPDATE orders SET note = 'first', v = 1, _version = 1, _src_offset = 0 WHERE id = $1", id(1, 0, 0))
	f.exec(`INSERT INTO orders (record_id, id, note, ts, v, _version, _src_topic, _src_partition, _src_offset, _batch_id, _applied_at)
VALUES (gen_random_uuid(), 999, 'by hand', '2026-11-02T12:00:00Z', 1, 1, $1, 0, 0, gen_random_uuid(), now())`, f.topic)
	out, err = f.run("verify", "--date", "2026-11-02")
	if err == nil || err.Error() != "verify: 4 key(s) do not match the topics" {
		t.Errorf("verify after hand edits: %v, want 4 mismatches", err)
	}
	for _, want := range []string{"9 key(s) on those dates, 6 row(s) match, 4 mismatch(es)",
		"missing  id=20001: its newest record (" + f.topic + "/0 at offset 5) is not in the table",
		"differs  id=20102: the table's content differs",
		"older    id=10000: the table holds an older version than the log's newest (" + f.topic + "/0 at offset 12)",
		"extra    id=999: no record of the topics has this key"} {
		if !strings.Contains(out, want) {
			t.Errorf("verify printed\n%s\nwant it to contain %q", out, want)
		}
	}
	out, _ = f.run("verify", "--date", "2026-11-02", "--json")
	var rep verifyReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil || len(rep.Pipelines) != 1 {
		t.Fatalf("verify --json printed %q: %v", out, err)
	}
	kinds := map[string]string{}
	for _, fd := range rep.Pipelines[0].Findings {
		kinds[fd.Key] = fd.Kind
	}
	if len(kinds) != 4 || kinds["id=20001"] != "missing" || kinds["id=20102"] != "differs" || kinds["id=10000"] != "older" || kinds["id=999"] != "extra" {
		t.Errorf("verify --json findings: %v", kinds)
	}
	// The other dates are clean.
	if out, err := f.run("verify", "--from", "2026-11-03", "--to", "2026-11-04"); err != nil {
		t.Errorf("verify of clean dates: %v\n%s", err, out)
	}
}
