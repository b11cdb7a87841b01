package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/idemsink/idemsink/internal/kafkatest"
)

// A reset to a datetime and to a target date replays exactly the records
// from there on, and a dry run changes nothing.
func TestResetReplaysFromThere(t *testing.T) {
	f := newFixture(t, kafkatest.New(t), 2, "")
	for d := 1; d <= 3; d++ {
		f.produceDay(d, 5) // offsets 5(d-1) .. 5d-1 in each partition
	}
	f.drain()
	committed, ledger := f.k.Committed(f.group, f.topic), f.ledger()
	if committed[0] != 15 || ledger[0] != 14 {
		t.Fatalf("after the first run: committed %v, ledger %v", committed, ledger)
	}

	// Dry run: a plan, nothing moved.
	out, err := f.run("offsets", "reset", "--to-datetime", day(2).Format(time.RFC3339))
	if err != nil {
		t.Fatalf("dry run: %v", err)
	}
	for _, want := range []string{"(dry run: nothing changed; add --execute to apply)",
		fmt.Sprintf("%s  0          15       5    10", f.topic), fmt.Sprintf("%s  1          15       5    10", f.topic),
		"total: 20 record(s) to read again, 0 skipped"} {
		if !strings.Contains(out, want) {
			t.Errorf("dry run printed\n%s\nwant it to contain %q", out, want)
		}
	}
	if c, l := f.k.Committed(f.group, f.topic), f.ledger(); !maps.Equal(c, committed) || !maps.Equal(l, ledger) {
		t.Fatalf("a dry run moved Kafka to %v (was %v) or the ledger to %v (was %v)", c, committed, l, ledger)
	}

	out, err = f.run("offsets", "reset", "--to-datetime", day(2).Format(time.RFC3339), "--topic", f.topic+":1", "--json")
	var plan struct {
		Executed bool   `json:"executed"`
		Moves    []move `json:"partitions"`
		ReRead   int64  `json:"reread"`
	}
	if err != nil || json.Unmarshal([]byte(out), &plan) != nil || plan.Executed || plan.ReRead != 10 ||
		len(plan.Moves) != 1 || plan.Moves[0] != (move{Topic: f.topic, Partition: 1, Current: 15, New: 5, ReRead: 10}) {
		t.Errorf("dry run --json: %v\n%s", err, out)
	}

	// Execute: Kafka and the ledger both at the first record of day 2.
	if out, err = f.run("offsets", "reset", "--to-datetime", day(2).Format(time.RFC3339), "--execute"); err != nil {
		t.Fatalf("reset --to-datetime: %v\n%s", err, out)
	}
	if !strings.Contains(out, "executed: Kafka and the ledger moved") {
		t.Errorf("reset printed %q", out)
	}
	if c, l := f.k.Committed(f.group, f.topic), f.ledger(); c[0] != 5 || c[1] != 5 || l[0] != 4 || l[1] != 4 {
		t.Fatalf("after the reset: Kafka %v, ledger %v; want 5 and 4", c, l)
	}
	// The next run reads offsets 5..14 of each partition, no more, no less.
	if got, want := f.drain(), map[int32][]int64{0: {5, 14, 10}, 1: {5, 14, 10}}; !sameReads(got, want) {
		t.Errorf("after --to-datetime the group read %v, want %v (first, last, count)", got, want)
	}

	// --to-date searches the records' own date field: the first record of
	// day 3 is at offset 10.
	if out, err = f.run("offsets", "reset", "--to-date", "2026-11-03", "--topic", f.topic+":1", "--execute"); err != nil {
		t.Fatalf("reset --to-date: %v\n%s", err, out)
	}
	if !strings.Contains(out, fmt.Sprintf("%s  1          15       10   5", f.topic)) || strings.Contains(out, f.topic+"  0 ") {
		t.Errorf("reset --to-date --topic %s:1 printed\n%s", f.topic, out)
	}
	if got, want := f.drain(), map[int32][]int64{1: {10, 14, 5}}; !sameReads(got, want) {
		t.Errorf("after --to-date the group read %v, want %v", got, want)
	}

	// --to-date of a day after the last record: the end; --shift-by back.
	out, err = f.run("offsets", "reset", "--to-date", "2026-11-09")
	if err != nil || !strings.Contains(out, "total: 0 record(s) to read again, 0 skipped") {
		t.Errorf("reset --to-date past the end: %v\n%s", err, out)
	}
	out, err = f.run("offsets", "reset", "--shift-by", "-3", "--execute")
	if err != nil || !strings.Contains(out, "total: 6 record(s) to read again") {
		t.Errorf("reset --shift-by -3: %v\n%s", err, out)
	}
	if got, want := f.drain(), map[int32][]int64{0: {12, 14, 3}, 1: {12, 14, 3}}; !sameReads(got, want) {
		t.Errorf("after --shift-by -3 the group read %v, want %v", got, want)
	}
	if _, err := f.run("offsets", "reset", "--to-earliest", "--topic", "elsewhere"); err == nil || !strings.Contains(err.Error(), `topic "elsewhere" is not read by any pipeline`) {
		t.Errorf("reset of an unknown topic: %v", err)
	}
}

// sameReads compares what a member read, ignoring how it was batched:
// each partition's first and last offset and the record count.
func sameReads(got, want map[int32][]int64) bool {
	if len(got) != len(want) {
		return false
	}
	for p, w := range want {
		g := got[p]
		if len(g) == 0 {
			return false
		}
		first, last, n := g[0], g[1], int64(0)
		for i := 0; i < len(g); i += 3 {
			first, last, n = min(first, g[i]), max(last, g[i+1]), n+g[i+2]
		}
		if first != w[0] || last != w[1] || n != w[2] {
			return false
		}
	}
	return true
}

// A reset refuses while the group has a live member, and names it.
func TestResetRefusesLiveMember(t *testing.T) {
	f := newFixture(t, kafkatest.New(t), 2, "")
	f.produceDay(1, 3)
	m := f.start()
	f.waitApplied()
	groups, err := f.k.Admin().DescribeGroups(context.Background(), f.group)
	if err != nil || len(groups[f.group].Members) != 1 {
		t.Fatalf("describe group: %v %+v", err, groups)
	}
	member := groups[f.group].Members[0].MemberID
	_, err = f.run("offsets", "reset", "--to-earliest", "--execute")
	if err == nil || !strings.Contains(err.Error(), "1 live member(s): "+member+"@") || !strings.Contains(err.Error(), "wrote the ledger") {
		t.Fatalf("reset with a live member: %v; want it refused, naming %s", err, member)
	}
	// A member that joins between the check and the commit: Kafka refuses
	// the outside commit, and the ledger rolls back with it.
	e := &env{cfg: f.cfg, log: slog.New(slog.DiscardHandler)}
	c, err := openCluster(context.Background(), e)
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	ledger := f.ledger()
	err = c.apply(context.Background(), []move{{Topic: f.topic, Partition: 0, New: 0}, {Topic: f.topic, Partition: 1, New: 0}})
	if err == nil || !strings.Contains(err.Error(), "commit the new offsets to Kafka (the ledger is left as it was)") {
		t.Errorf("apply under a live member: %v, want Kafka to refuse", err)
	}
	if l := f.ledger(); !maps.Equal(l, ledger) {
		t.Errorf("a refused commit moved the ledger to %v (was %v)", l, ledger)
	}
	if c := f.k.Committed(f.group, f.topic); c[0] != 3 {
		t.Errorf("a refused commit moved Kafka to %v", c)
	}

	// A member that has not written the ledger for longer than the session
	// timeout may be a crashed one that the broker still keeps.
	f.exec("UPDATE idemsink.offsets SET updated_at = now() - interval '1 hour'")
	_, err = f.run("offsets", "reset", "--to-earliest", "--execute")
	if err == nil || !strings.Contains(err.Error(), member+"@") ||
		!strings.Contains(err.Error(), "no ledger write for over session_timeout (6s): it may be a crashed member") {
		t.Fatalf("reset with a quiet member: %v; want it refused, naming %s as maybe crashed", err, member)
	}
	// The dry run still shows the plan, with the refusal to come.
	out, err := f.run("offsets", "reset", "--to-earliest")
	if err != nil || !strings.Contains(out, "total: 6 record(s) to read again") || !strings.Contains(out, "note: --execute would refuse now") {
		t.Errorf("dry run with a live member: %v\n%s", err, out)
	}
	// --json carries the same note.
	out, err = f.run("offsets", "reset", "--to-earliest", "--json")
	var plan resetPlan
	if err != nil || json.Unmarshal([]byte(out), &plan) != nil || !slices.ContainsFunc(plan.Notes, func(n string) bool {
		return strings.HasPrefix(n, "--execute would refuse now: group "+f.group) && strings.Contains(n, member+"@")
	}) {
		t.Errorf("dry run --json with a live member: %v\n%s", err, out)
	}
	if c := f.k.Committed(f.group, f.topic); c[0] != 3 {
		t.Errorf("a refused reset moved Kafka to %v", c)
	}
	if err := m.stop(); err != nil {
		t.Fatal(err)
	}
	if out, err := f.run("offsets", "reset", "--to-earliest", "--execute"); err != nil {
		t.Fatalf("reset once the member left: %v\n%s", err, out)
	}
	if c, l := f.k.Committed(f.group, f.topic), f.ledger(); c[0] != 0 || l[0] != -1 {
		t.Errorf("after --to-earliest: Kafka %v, ledger %v", c, l)
	}
}

// A plan that moves a partition past records never applied says so per
// partition and in total, in text and JSON, and --execute refuses it
// without --allow-skip (--to-latest implies it). Clamping to the log is
// reported the same way.
func TestResetNamesSkipsAndClamps(t *testing.T) {
	f := newFixture(t, kafkatest.New(t), 2, "")
	f.produceDay(1, 5)
	f.drain() // applied: 0..4 of each partition
	f.produceDay(2, 3)
	committed, ledger := f.k.Committed(f.group, f.topic), f.ledger()

	// A datetime after the last record, in Kafka's zone-less spelling:
	// the log end, past 3 records never applied in each partition.
	future := "2026-12-31T00:00:00.000"
	out, err := f.run("offsets", "reset", "--to-datetime", future)
	if err != nil {
		t.Fatalf("dry run: %v", err)
	}
	for _, want := range []string{
		fmt.Sprintf("%s  0          5        8    0        3     skips 3 record(s) never applied", f.topic),
		fmt.Sprintf("%s  1          5        8    0        3     skips 3 record(s) never applied", f.topic),
		"total: 0 record(s) to read again; skips 6 record(s) never applied",
		"note: --execute would refuse: the plan skips 6 record(s) never applied (past where the group resumes); add --allow-skip if that is intended",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("dry run printed\n%s\nwant it to contain %q", out, want)
		}
	}
	out, err = f.run("offsets", "reset", "--to-datetime", future, "--json", "--dry-run")
	var plan resetPlan
	if err != nil || json.Unmarshal([]byte(out), &plan) != nil || plan.Skipped != 6 || plan.ReRead != 0 || len(plan.Moves) != 2 ||
		plan.Moves[0].Skip != 3 || plan.Moves[1].Skip != 3 || !slices.ContainsFunc(plan.Notes, func(n string) bool {
		return strings.HasPrefix(n, "--execute would refuse: the plan skips 6 record(s) never applied")
	}) {
		t.Errorf("dry run --json: %v\n%s", err, out)
	}

	// --execute refuses it, prints the plan, and moves nothing.
	out, err = f.run("offsets", "reset", "--to-datetime", future, "--execute")
	if err == nil || err.Error() != "offsets reset: the plan skips 6 record(s) never applied (past where the group resumes); add --allow-skip if that is intended" ||
		!strings.Contains(out, "(refused: nothing changed)") || !strings.Contains(out, "skips 3 record(s) never applied") {
		t.Errorf("--execute of a skipping plan: %v\n%s", err, out)
	}
	out, err = f.run("offsets", "reset", "--to-datetime", future, "--execute", "--json")
	plan = resetPlan{}
	if err == nil || json.Unmarshal([]byte(out), &plan) != nil || plan.Executed || len(plan.Notes) == 0 ||
		!strings.HasPrefix(plan.Notes[0], "refused: nothing changed: the plan skips 6") {
		t.Errorf("--execute --json of a skipping plan: %v\n%s", err, out)
	}
	if c, l := f.k.Committed(f.group, f.topic), f.ledger(); !maps.Equal(c, committed) || !maps.Equal(l, ledger) {
		t.Fatalf("a refused reset moved Kafka to %v (was %v) or the ledger to %v (was %v)", c, committed, l, ledger)
	}

	// Clamping: past the log end (also a skip), and below its start.
	out, err = f.run("offsets", "reset", "--to-offset", "999999", "--topic", f.topic+":0")
	if err != nil || !strings.Contains(out, fmt.Sprintf("%s  0          5        8    0        3     skips 3 record(s) never applied; clamped to the log end 8 (asked 999999)", f.topic)) ||
		!strings.Contains(out, "note: 1 partition(s) clamped to the log") {
		t.Errorf("--to-offset 999999: %v\n%s", err, out)
	}
	out, err = f.run("offsets", "reset", "--shift-by", "-999", "--json")
	plan = resetPlan{}
	if err != nil || json.Unmarshal([]byte(out), &plan) != nil || plan.Clamped != 2 || plan.ReRead != 10 ||
		plan.Moves[1] != (move{Topic: f.topic, Partition: 1, Current: 5, New: 0, ReRead: 5, Clamped: "log start", Asked: -994}) ||
		!slices.Contains(plan.Notes, "2 partition(s) clamped to the log") {
		t.Errorf("--shift-by -999 --json: %v\n%s", err, out)
	}

	// --allow-skip applies it; so does --to-latest by itself.
	if out, err = f.run("offsets", "reset", "--shift-by", "2", "--topic", f.topic+":0", "--execute", "--allow-skip"); err != nil ||
		!strings.Contains(out, "executed: Kafka and the ledger moved") || !strings.Contains(out, "skips 2 record(s) never applied") {
		t.Fatalf("--execute --allow-skip: %v\n%s", err, out)
	}
	if c, l := f.k.Committed(f.group, f.topic), f.ledger(); c[0] != 7 || l[0] != 6 || c[1] != 5 || l[1] != 4 {
		t.Errorf("after --shift-by 2 on partition 0: Kafka %v, ledger %v", c, l)
	}
	if out, err = f.run("offsets", "reset", "--to-latest", "--execute"); err != nil ||
		!strings.Contains(out, "total: 0 record(s) to read again; skips 4 record(s) never applied") {
		t.Fatalf("--to-latest --execute: %v\n%s", err, out)
	}
	if c := f.k.Committed(f.group, f.topic); c[0] != 8 || c[1] != 8 {
		t.Errorf("after --to-latest: Kafka %v", c)
	}
}
