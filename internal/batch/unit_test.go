package batch

import (
	"testing"

	"github.com/idemsink/idemsink/internal/config"
	"github.com/idemsink/idemsink/internal/record"
)

// A unit keeps a batch per date and counts records and bytes across them:
// it is full at max_records whatever the dates, its ranges are the union
// of its dates', and Drop empties dates as it goes.
func TestUnitAcrossDates(t *testing.T) {
	p := batchPipeline(t, "orders", config.Batch{MaxRecords: 4, MaxBytes: 1 << 20})
	u := NewUnit(p, t0)
	d1, d2, d3 := record.Date{Year: 2026, Month: 3, Day: 1}, record.Date{Year: 2026, Month: 3, Day: 2}, record.Date{Year: 2024, Month: 1, Day: 1}
	u.Add(d1, row(1, 1, "a", 0, 10))
	u.Add(d2, row(2, 1, "a", 0, 11))
	u.Add(d3, row(3, 1, "b", 1, 5))
	if u.Full() || u.Records != 3 || u.Bytes != 30 || u.Dates() != 3 {
		t.Fatalf("full %v, %d records, %d bytes, %d dates; want not full, 3, 30, 3", u.Full(), u.Records, u.Bytes, u.Dates())
	}
	u.AddDead(record.Date{}, record.DeadLetter{Pos: record.Position{TP: record.TP{Topic: "a"}, Offset: 12}, Value: []byte("xx")})
	if !u.Full() || u.Records != 4 || u.Dates() != 4 {
		t.Fatalf("after a dead letter: full %v, %d records, %d dates; want full, 4, 4", u.Full(), u.Records, u.Dates())
	}
	if first, last := u.Span(); first != (record.Date{}) || last != d2 {
		t.Errorf("span %s..%s, want undated..%s", first, last, d2)
	}
	bs := u.Batches()
	if bs[0].Date != (record.Date{}) || bs[1].Date != d3 || bs[2].Date != d1 || bs[3].Date != d2 {
		t.Errorf("batches not in date order: %s %s %s %s", bs[0].Date, bs[1].Date, bs[2].Date, bs[3].Date)
	}
	rs := u.Ranges()
	if len(rs) != 2 || rs[0] != (Range{Topic: "a", Partition: 0, First: 10, Last: 12, Count: 3}) || rs[1] != (Range{Topic: "b", Partition: 1, First: 5, Last: 5, Count: 1}) {
		t.Errorf("ranges %+v, want a/0 10-12 (3) and b/1 5 (1)", rs)
	}
	if f, ok := u.First(record.TP{Topic: "a"}); !ok || f != 10 {
		t.Errorf("first of a/0: %d, %v; want 10", f, ok)
	}
	if !u.Holds(func(tp record.TP) bool { return tp.Topic == "b" }) {
		t.Error("Holds misses b/1")
	}
	if !u.Drop(func(tp record.TP) bool { return tp.Topic == "b" }) || u.Dates() != 3 || u.Records != 3 || u.Bytes != 22 {
		t.Errorf("after dropping b: %d dates, %d records, %d bytes; want 3, 3, 22", u.Dates(), u.Records, u.Bytes)
	}
	if u.Drop(func(record.TP) bool { return true }) || u.Dates() != 0 {
		t.Errorf("after dropping all: %d dates left", u.Dates())
	}
}

// Newest keeps one row per key across dates, the newer by the ordering
// contract, and reports the date of each row it drops.
func TestNewestAcrossDates(t *testing.T) {
	old, newer, other := row(1, 1, "a", 0, 5), row(1, 2, "a", 0, 3), row(2, 1, "a", 0, 4)
	for _, tc := range []struct {
		name string
		in   []Dated
		want []int64 // versions kept, in order
		lost []int
	}{
		{"one date: untouched", []Dated{{&old, 0}, {&other, 0}}, []int64{1, 1}, nil},
		{"newer second", []Dated{{&old, 0}, {&other, 0}, {&newer, 1}}, []int64{1, 2}, []int{0}},
		{"newer first", []Dated{{&newer, 1}, {&old, 0}, {&other, 0}}, []int64{2, 1}, []int{0}},
		{"no shared key", []Dated{{&old, 0}, {&other, 1}}, []int64{1, 1}, nil},
	} {
		var lost []int
		got := Newest(tc.in, func(i int) { lost = append(lost, i) })
		var versions []int64
		for _, r := range got {
			versions = append(versions, r.Version)
		}
		if len(versions) != len(tc.want) || len(lost) != len(tc.lost) {
			t.Errorf("%s: kept versions %v, lost %v; want %v, %v", tc.name, versions, lost, tc.want, tc.lost)
			continue
		}
		for i := range versions {
			if versions[i] != tc.want[i] {
				t.Errorf("%s: kept versions %v, want %v", tc.name, versions, tc.want)
			}
		}
		for i := range lost {
			if lost[i] != tc.lost[i] {
				t.Errorf("%s: lost %v, want %v", tc.name, lost, tc.lost)
			}
		}
	}
}
