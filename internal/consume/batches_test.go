package consume

import (
	"testing"
	"time"

	"github.com/idemsink/idemsink/internal/batch"
	"github.com/idemsink/idemsink/internal/config"
	"github.com/idemsink/idemsink/internal/record"
)

func testPipeline(maxRecords int) *config.Pipeline {
	p := &config.Pipeline{Name: "p", Batch: config.Batch{MaxRecords: maxRecords, MaxBytes: 1 << 20, Linger: time.Second}}
	return p
}

func row(tp record.TP, off int64) record.Row {
	var id record.ID
	id[0], id[1] = byte(off), byte(tp.Partition)
	return record.Row{ID: id, Pos: record.Position{TP: tp, Offset: off}, Size: 10}
}

// A unit never holds more than max_records, whatever the dates of its
// records: it is flushed the moment it is full, and the next record opens
// a new one.
func TestBatchesMaxRecordsIsHard(t *testing.T) {
	s := newBatches(1)
	p, now, tp := testPipeline(3), time.Now(), record.TP{Topic: "t"}
	for off := range int64(7) {
		r := row(tp, off)
		s.add(p, tp, now, func(u *batch.Unit) { u.Add(record.Date{Year: 2026, Month: 1, Day: int(off) + 1}, r) })
	}
	if got := len(s.queues[0]); got != 2 {
		t.Fatalf("%d flushed batches, want 2", got)
	}
	for _, j := range s.queues[0] {
		if j.b.Records != 3 || j.b.Dates() != 3 {
			t.Errorf("flushed unit of %d records, %d dates; want 3, 3", j.b.Records, j.b.Dates())
		}
	}
	if s.records != 7 || s.bytes != 70 {
		t.Errorf("backlog %d records, %d bytes; want 7, 70", s.records, s.bytes)
	}
	s.done(s.queues[0][0])
	if s.records != 4 || s.bytes != 40 {
		t.Errorf("after one applied: %d records, %d bytes; want 4, 40", s.records, s.bytes)
	}
}

// Partitions spread over the lanes, each partition always in one lane; a
// lane sends one batch at a time, in flush order.
func TestBatchesLanes(t *testing.T) {
	s := newBatches(2)
	lanes := map[int]bool{}
	for p := range int32(8) {
		tp := record.TP{Topic: "orders", Partition: p}
		l := s.laneOf(tp)
		if l != s.laneOf(tp) {
			t.Fatal("laneOf is not stable")
		}
		lanes[l] = true
	}
	if len(lanes) != 2 {
		t.Errorf("8 partitions use lanes %v, want both", lanes)
	}
	p, now := testPipeline(2), time.Now()
	a, b := record.TP{Topic: "orders", Partition: 0}, record.TP{Topic: "orders", Partition: 1}
	if s.laneOf(a) == s.laneOf(b) {
		b.Partition = 2
	}
	d1, d2 := record.Date{Year: 2026, Month: 1, Day: 1}, record.Date{Year: 2026, Month: 1, Day: 2}
	put := func(tp record.TP, d record.Date, off int64) {
		r := row(tp, off)
		s.add(p, tp, now, func(u *batch.Unit) { u.Add(d, r) })
	}
	put(a, d1, 0)
	put(a, d2, 1) // two dates, one unit: full, flushed
	put(a, d1, 2)
	put(a, d2, 3) // flushed behind it
	put(b, d1, 0)
	ready := s.ready(now)
	if len(ready) != 1 || ready[0].b.Dates() != 2 || ready[0].b.Records != 2 {
		t.Fatalf("ready %v, want the first unit of a's lane alone, 2 records of 2 dates", ready)
	}
	ready[0].inflight = true
	if got := s.ready(now); len(got) != 0 {
		t.Errorf("ready while a's lane is in flight: %d batches, want 0 (b's batch is still open)", len(got))
	}
	if f, ok := s.first(a, ready[0].b); !ok || f != 2 {
		t.Errorf("first offset of a outside the first unit: %d, %v; want 2", f, ok)
	}
	s.flushDue(now, true)
	if got := s.ready(now); len(got) != 1 || got[0].lane != s.laneOf(b) {
		t.Errorf("after flushing all: ready %v, want b's lane", got)
	}
	ready[0].inflight = false
	s.done(ready[0])
	if got := s.ready(now); len(got) != 2 {
		t.Errorf("after the first unit applied: %d ready, want 2 (a's second unit, b's)", len(got))
	}
	s.drop(func(tp record.TP) bool { return tp == a })
	if s.holding(func(tp record.TP) bool { return tp == a }) || s.records != 1 {
		t.Errorf("after dropping a: holding it, or %d records left (want 1)", s.records)
	}
}
