package torture_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/idemsink/idemsink/internal/gen"
	"github.com/idemsink/idemsink/internal/torture"
)

func line(order int64, no int32, version int64, status string) []byte {
	b, err := json.Marshal(map[string]any{
		"order_id": order, "line_no": no, "sku": "SKU-1", "quantity": 2, "unit_price": "9.99", "currency": "EUR",
		"customer_id": 7, "status": status, "store": "online", "event_time": "2026-03-29T01:30:00Z", "version": version,
	})
	if err != nil {
		panic(err)
	}
	return b
}

// The oracle orders versions of a key by version, then offset, then
// partition, whatever order the log is given in.
func TestOracleOrder(t *testing.T) {
	log := []torture.Record{
		{Partition: 0, Offset: 3, Value: line(1, 1, 1, "stale")},    // a replay of v1 after v2
		{Partition: 0, Offset: 1, Value: line(1, 1, 1, "placed")},   // v1
		{Partition: 0, Offset: 2, Value: line(1, 1, 2, "paid")},     // v2 wins
		{Partition: 1, Offset: 5, Value: line(2, 1, 3, "a")},        // equal versions: the higher offset wins
		{Partition: 1, Offset: 9, Value: line(2, 1, 3, "b")},        //
		{Partition: 0, Offset: 7, Value: line(3, 1, 1, "p0")},       // equal version and offset: the higher partition wins
		{Partition: 2, Offset: 7, Value: line(3, 1, 1, "p2")},       //
		{Partition: 2, Offset: 8, Value: []byte(`{"order_id": 4}`)}, // malformed: ignored
	}
	got := torture.New(log).Expected()
	want := map[torture.Key]string{{1, 1}: "paid", {2, 1}: "b", {3, 1}: "p2"}
	if len(got) != len(want) {
		t.Fatalf("%d keys, want %d: %v", len(got), len(want), got)
	}
	for k, status := range want {
		if got[k].Status != status {
			t.Errorf("key %s: %s, want %s", k, got[k].Status, status)
		}
	}
	if m := torture.New(log).Malformed(); len(m) != 1 || m[torture.Pos{Partition: 2, Offset: 8}] == "" {
		t.Errorf("malformed %v, want 2@8", m)
	}
}

// The oracle reads the generator's events as they are, and every kind of
// bad input the scenarios slip into the log as malformed.
func TestOracleParse(t *testing.T) {
	g := gen.New(gen.Options{Seed: 3, UpdateRate: 0.3, DupRate: 0.1, StaleRate: 0.1, LateRate: 0.2})
	for range 500 {
		ev := g.Next()
		l, err := torture.Parse(ev.Value)
		if err != nil {
			t.Fatalf("%s: %v", ev.Value, err)
		}
		w := ev.Line
		if l.OrderID != w.OrderID || l.LineNo != w.LineNo || l.SKU != w.SKU || l.Quantity != w.Quantity || l.UnitPrice != w.UnitPrice ||
			l.Currency != w.Currency || l.CustomerID != w.CustomerID || l.Status != w.Status || l.Store != w.Store ||
			!l.EventTime.Equal(w.EventTime) || l.Version != w.Version {
			t.Fatalf("parsed %v from %s", l, ev.Value)
		}
	}
	good := g.Next().Value
	for i, bad := range malformed {
		if l, err := torture.Parse(bad(good)); err == nil {
			t.Errorf("malformed kind %d parsed as %v", i, l)
		}
	}
}

// Check finds every kind of damage it is meant to find.
func TestOracleCheck(t *testing.T) {
	log := []torture.Record{
		{Partition: 0, Offset: 0, Value: line(1, 1, 1, "placed")},
		{Partition: 0, Offset: 1, Value: line(1, 1, 2, "paid")},
		{Partition: 0, Offset: 2, Value: []byte("{not json")},
		{Partition: 1, Offset: 0, Value: line(2, 1, 1, "placed")},
		{Partition: 1, Offset: 1, Value: line(2, 1, 1, "placed")}, // an exact duplicate
	}
	o := torture.New(log)
	exp := o.Expected()
	good := func() torture.Observed {
		var rows []torture.Row
		for _, l := range exp {
			rows = append(rows, torture.Row{Line: l, StoredVersion: l.Version})
		}
		return torture.Observed{Rows: rows, Dead: map[torture.Pos]string{{Partition: 0, Offset: 2}: "bad"},
			Applied: map[int32]int64{0: 2, 1: 1}}
	}
	if r := o.Check(good()); !r.OK() || r.Applied != 3 || r.Superseded != 1 || r.Dead != 1 {
		t.Errorf("a correct outcome: %s %v", r, r.Problems)
	}
	for _, tc := range []struct {
		name   string
		damage func(*torture.Observed)
		want   func(torture.Report) bool
	}{
		{"missing row", func(o *torture.Observed) { o.Rows = o.Rows[:1] }, func(r torture.Report) bool { return r.Lost > 0 }},
		{"old version", func(o *torture.Observed) {
			for i := range o.Rows {
				if o.Rows[i].OrderID == 1 {
					o.Rows[i].Version, o.Rows[i].StoredVersion, o.Rows[i].Status = 1, 1, "placed"
				}
			}
		}, func(r torture.Report) bool { return r.Wrong == 1 }},
		{"wrong _version", func(o *torture.Observed) { o.Rows[0].StoredVersion = 99 }, func(r torture.Report) bool { return r.Wrong == 1 }},
		{"changed content", func(o *torture.Observed) { o.Rows[0].EventTime = o.Rows[0].EventTime.Add(time.Second) }, func(r torture.Report) bool { return r.Wrong == 1 }},
		{"duplicate key", func(o *torture.Observed) { o.Rows = append(o.Rows, o.Rows[0]) }, func(r torture.Report) bool { return r.Duplicated == 1 }},
		{"phantom row", func(o *torture.Observed) {
			r := o.Rows[0]
			r.OrderID = 99
			o.Rows = append(o.Rows, r)
		}, func(r torture.Report) bool { return r.Wrong == 1 }},
		{"not dead-lettered", func(o *torture.Observed) { o.Dead = nil }, func(r torture.Report) bool { return r.Lost == 1 }},
		{"good record dead-lettered", func(o *torture.Observed) { o.Dead[torture.Pos{Partition: 1, Offset: 0}] = "oops" }, func(r torture.Report) bool { return r.Wrong == 1 }},
		{"stray dead letter", func(o *torture.Observed) { o.Dead[torture.Pos{Partition: 5, Offset: 0}] = "?" }, func(r torture.Report) bool { return r.Wrong == 1 }},
		{"ledger behind", func(o *torture.Observed) { o.Applied[1] = 0 }, func(r torture.Report) bool { return r.Lost == 1 }},
	} {
		obs := good()
		tc.damage(&obs)
		r := o.Check(obs)
		if r.OK() || !tc.want(r) {
			t.Errorf("%s: %s %s", tc.name, r, strings.Join(r.Problems, "; "))
		}
	}
}

func tombstone(partition int32, offset, order int64, no int32, version int64) torture.Record {
	return torture.Record{Partition: partition, Offset: offset,
		Key: fmt.Appendf(nil, `{"order_id":%d,"line_no":%d,"version":%d}`, order, no, version)}
}

// With deletes applied, the newest record of a key may be a delete: the
// key must be gone; a late delete, older than the key's line, changes
// nothing; a line older than a delete stays deleted.
func TestOracleDeletes(t *testing.T) {
	log := []torture.Record{
		{Partition: 0, Offset: 0, Value: line(1, 1, 1, "placed")},
		tombstone(0, 1, 1, 1, 2),                                   // deletes 1/1
		{Partition: 0, Offset: 2, Value: line(1, 1, 1, "stale")},   // older than the delete: stays deleted
		{Partition: 1, Offset: 0, Value: line(2, 1, 5, "shipped")}, // newer than the late delete below
		tombstone(1, 1, 2, 1, 4),                                   // late: 2/1 keeps its row
		{Partition: 1, Offset: 2, Key: []byte("not json")},         // a tombstone with a bad key: malformed
	}
	o := torture.NewDeleting(log)
	exp := o.Expected()
	if _, ok := exp[torture.Key{OrderID: 1, LineNo: 1}]; ok || exp[torture.Key{OrderID: 2, LineNo: 1}].Status != "shipped" || len(exp) != 1 {
		t.Fatalf("expected %v", exp)
	}
	good := func() torture.Observed {
		return torture.Observed{Rows: []torture.Row{{Line: exp[torture.Key{OrderID: 2, LineNo: 1}], StoredVersion: 5}},
			Dead: map[torture.Pos]string{{Partition: 1, Offset: 2}: "bad key"}, Applied: map[int32]int64{0: 2, 1: 2}}
	}
	if r := o.Check(good()); !r.OK() || r.Deleted != 1 || r.Superseded != 3 || r.Applied != 1 || r.Dead != 1 {
		t.Errorf("a correct outcome: %s %v", r, r.Problems)
	}
	resurrected := good()
	l := torture.Line{OrderID: 1, LineNo: 1, Version: 1}
	resurrected.Rows = append(resurrected.Rows, torture.Row{Line: l, StoredVersion: 1})
	if r := o.Check(resurrected); r.OK() || r.Wrong != 1 {
		t.Errorf("a deleted key back in the table: %s %v", r, r.Problems)
	}
	lateDeleted := good()
	lateDeleted.Rows = nil
	if r := o.Check(lateDeleted); r.OK() || r.Lost == 0 {
		t.Errorf("a late delete that removed the newer row: %s %v", r, r.Problems)
	}
	// Without deletes, a tombstone is malformed as before.
	if m := torture.New(log).Malformed(); len(m) != 3 {
		t.Errorf("malformed without deletes: %v", m)
	}
}
