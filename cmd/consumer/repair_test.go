package main

import (
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/idemsink/idemsink/internal/kafkatest"
)

// Repair by replay, end to end: verify --date finds a row deleted, a row
// edited by hand at its own version, a row set back to an older version
// and a row added by hand; replay repairs the first three (the edited row
// counted repaired), keeps the extra row until --delete-extra, and verify
// --date then finds nothing. consumer history shows the replay's
// applications beside the live group's.
func TestRepairByReplay(t *testing.T) {
	f := newFixture(t, kafkatest.New(t), 2, "")
	for d := 1; d <= 3; d++ {
		f.produceDay(d, 4)
	}
	f.drain()
	if out, err := f.run("verify", "--date", "2026-11-02"); err != nil {
		t.Fatalf("verify on a clean table: %v\n%s", err, out)
	}
	f.exec("DELETE FROM orders WHERE id = $1", id(2, 0, 1))
	f.exec("UPDATE orders SET note = 'edited by hand' WHERE id = $1", id(2, 1, 2))
	f.exec("UPDATE orders SET note = 'first', v = 0, _version = 0 WHERE id = $1", id(2, 1, 3))
	f.exec(`INSERT INTO orders (record_id, id, note, ts, v, _version, _src_topic, _src_partition, _src_offset, _batch_id, _applied_at)
VALUES (gen_random_uuid(), 999, 'by hand', '2026-11-02T12:00:00Z', 1, 1, $1, 0, 0, gen_random_uuid(), now())`, f.topic)
	out, err := f.run("verify", "--date", "2026-11-02")
	t.Logf("verify --date 2026-11-02 (%v):\n%s", err, out)
	if err == nil || err.Error() != "verify: 4 key(s) do not match the topics" {
		t.Fatalf("verify after the damage: %v, want 4 mismatches\n%s", err, out)
	}
	untouched := f.xmins()

	out, err = f.run("replay", "--from", "2026-11-02", "--json")
	if err != nil {
		t.Fatalf("replay: %v\n%s", err, out)
	}
	var rep replayReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil || len(rep.Pipelines) != 1 {
		t.Fatalf("replay --json printed %q: %v", out, err)
	}
	// 8 records of day 2: one missing row inserted, one older row updated,
	// one edited row repaired, five unchanged.
	if c := rep.Total; c.Inserted != 1 || c.Updated != 1 || c.Repaired != 1 || c.Unchanged != 5 || c.Stale != 0 {
		t.Errorf("replay counts %+v; want 1 inserted, 1 updated, 1 repaired, 5 unchanged", c)
	}
	if p := rep.Pipelines[0]; len(p.Extra) != 1 || !strings.Contains(p.Extra[0].Key, "id=999") || p.ExtraDeleted != 0 {
		t.Errorf("replay's extra rows: %+v; want id=999 listed, not deleted", p)
	}
	after := f.xmins()
	for k, x := range untouched {
		if k == id(2, 0, 1) || k == id(2, 1, 2) || k == id(2, 1, 3) || k == 999 {
			continue
		}
		if after[k] != x {
			t.Errorf("row %d rewritten by the replay (xmin %s, was %s)", k, after[k], x)
		}
	}
	out, err = f.run("verify", "--date", "2026-11-02")
	if err == nil || !strings.Contains(out, "1 mismatch(es)") || !strings.Contains(out, "extra    id=999") {
		t.Fatalf("verify after the replay: %v, want only the extra row\n%s", err, out)
	}
	out, err = f.run("replay", "--from", "2026-11-02")
	t.Logf("replay --from 2026-11-02 (%v):\n%s", err, out)
	out, err = f.run("replay", "--from", "2026-11-02", "--delete-extra")
	t.Logf("replay --from 2026-11-02 --delete-extra (%v):\n%s", err, out)
	if err != nil || !strings.Contains(out, "1 extra row(s) deleted (--delete-extra)") ||
		!strings.Contains(out, "inserted 0, updated 0, repaired 0, unchanged 8") {
		t.Fatalf("replay --delete-extra: %v\n%s", err, out)
	}
	out, err = f.run("verify", "--date", "2026-11-02")
	t.Logf("verify --date 2026-11-02 (%v):\n%s", err, out)
	if err != nil || !strings.Contains(out, "0 mismatch(es)") {
		t.Fatalf("verify after the repair: %v\n%s", err, out)
	}
	if out, err := f.run("history", "--date", "2026-11-02", "--limit", "6"); err == nil {
		t.Logf("history --date 2026-11-02 --limit 6:\n%s", out)
	}
	// The batch log keeps every application: the live group's, then the
	// two replays' under their temporary groups.
	out, err = f.run("history", "--date", "2026-11-02", "--limit", "100", "--json")
	if err != nil {
		t.Fatalf("history: %v", err)
	}
	groups := map[string]int{}
	repaired := 0
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var a struct {
			Group    string `json:"group"`
			Repaired int    `json:"repaired"`
		}
		if err := json.Unmarshal([]byte(line), &a); err != nil {
			t.Fatalf("history line %q: %v", line, err)
		}
		g := a.Group
		if strings.HasPrefix(g, f.group+".replay.") {
			g = "replay"
		}
		groups[g]++
		repaired += a.Repaired
	}
	if groups[f.group] == 0 || groups["replay"] == 0 || repaired != 1 {
		t.Errorf("history by group %v, repaired %d; want the live group's and the replays' applications, 1 repaired", groups, repaired)
	}
}

// A column the pipeline gained is added by migrate, and a replay of the
// dates fills it from the records: every row of the range gets the new
// column's value from the newest record of its key.
func TestReplayFillsANewColumn(t *testing.T) {
	f := newFixture(t, kafkatest.New(t), 2, "")
	for d := 1; d <= 2; d++ {
		f.produceDay(d, 3)
	}
	f.drain()
	// The pipeline gains note_copy, read from the same field as note.
	cfg, err := os.ReadFile(f.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	grown := strings.Replace(string(cfg), "      - {name: v, type: bigint}\n",
		"      - {name: v, type: bigint}\n      - {name: note_copy, type: text, field: note, nullable: true}\n", 1)
	if err := os.WriteFile(f.cfgPath, []byte(grown), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := f.run("migrate"); err != nil || !strings.Contains(out, "1 target table(s) ready") {
		t.Fatalf("migrate after the pipeline gained a column: %v\n%s", err, out)
	}
	if out, err := f.run("verify", "--from", "2026-11-01", "--to", "2026-11-02"); err == nil {
		t.Fatalf("verify found nothing to fill:\n%s", out)
	}
	out, err := f.run("replay", "--from", "2026-11-01", "--to", "2026-11-02")
	if err != nil || !strings.Contains(out, "repaired 12,") {
		t.Fatalf("replay: %v, want 12 repaired\n%s", err, out)
	}
	var n int
	if err := f.pool.QueryRow(t.Context(), "SELECT count(*) FROM orders WHERE note_copy IS NOT DISTINCT FROM note AND note IS NOT NULL").Scan(&n); err != nil || n != 12 {
		t.Errorf("%d rows have the new column filled, want 12 (%v)", n, err)
	}
	if out, err := f.run("verify", "--from", "2026-11-01", "--to", "2026-11-02"); err != nil {
		t.Errorf("verify after the replay: %v\n%s", err, out)
	}
}
