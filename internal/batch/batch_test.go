package batch

import (
	"encoding/hex"
	"fmt"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/idemsink/idemsink/internal/config"
	"github.com/idemsink/idemsink/internal/record"
)

var t0 = time.Date(2026, 3, 29, 12, 0, 0, 0, time.UTC)

func batchPipeline(t testing.TB, name string, b config.Batch) *config.Pipeline {
	return pipeline(t, config.Pipeline{
		Name:    name,
		Topics:  []string{"a", "b"},
		Key:     []string{"id"},
		Columns: []config.Column{col("id", "bigint")},
		Date:    config.Date{Field: "ts"},
		Batch:   b,
	})
}

// row is a row of key k at topic/partition/offset with version v and size 10.
func row(k int64, v int64, topic string, part int32, off int64) record.Row {
	return record.Row{
		ID:      record.RecordID([]string{"bigint"}, []any{k}),
		Values:  []any{k},
		Version: v,
		Pos:     record.Position{TP: record.TP{Topic: topic, Partition: part}, Offset: off},
		Size:    10,
	}
}

// permutations returns every order of 0..n-1.
func permutations(n int) [][]int {
	if n == 0 {
		return [][]int{{}}
	}
	var out [][]int
	for _, p := range permutations(n - 1) {
		for i := 0; i <= len(p); i++ {
			q := slices.Insert(slices.Clone(p), i, n-1)
			out = append(out, q)
		}
	}
	return out
}

func TestPermutations(t *testing.T) {
	ps := permutations(4)
	seen := map[string]bool{}
	for _, p := range ps {
		seen[fmt.Sprint(p)] = true
	}
	if len(ps) != 24 || len(seen) != 24 {
		t.Fatalf("permutations(4): %d orders, %d distinct, want 24", len(ps), len(seen))
	}
}

func TestAddKeepsNewest(t *testing.T) {
	for _, tc := range []struct {
		name string
		rows []record.Row
		want []record.Row // the newest per key
	}{
		{
			name: "higher version wins over a later offset",
			rows: []record.Row{row(1, 1, "a", 0, 10), row(1, 3, "a", 1, 5), row(1, 2, "a", 0, 20), row(1, 3, "a", 2, 4)},
			want: []record.Row{row(1, 3, "a", 1, 5)},
		},
		{
			name: "same version: later offset wins",
			rows: []record.Row{row(1, 0, "a", 0, 5), row(1, 0, "a", 0, 7), row(1, 0, "a", 1, 6), row(1, 0, "a", 0, 6)},
			want: []record.Row{row(1, 0, "a", 0, 7)},
		},
		{
			name: "same version and offset: higher partition wins",
			rows: []record.Row{row(1, 4, "a", 2, 9), row(1, 4, "a", 10, 9), row(1, 4, "a", 3, 9)},
			want: []record.Row{row(1, 4, "a", 10, 9)},
		},
		{
			name: "negative versions",
			rows: []record.Row{row(1, -5, "a", 0, 9), row(1, -1, "a", 0, 1), row(1, -3, "a", 0, 5)},
			want: []record.Row{row(1, -1, "a", 0, 1)},
		},
		{
			name: "same version, offset and partition in two topics",
			rows: []record.Row{row(1, 0, "a", 0, 0), row(1, 0, "b", 0, 0), row(1, 0, "a", 0, 1)},
			want: []record.Row{row(1, 0, "a", 0, 1)},
		},
		{
			name: "tie across topics alone",
			rows: []record.Row{row(1, 7, "a", 0, 3), row(1, 7, "b", 0, 3), row(1, 7, "c", 0, 3)},
			want: []record.Row{row(1, 7, "c", 0, 3)},
		},
		{
			name: "two keys interleaved",
			rows: []record.Row{row(1, 1, "a", 0, 1), row(2, 5, "a", 0, 2), row(1, 2, "a", 0, 3), row(2, 4, "b", 0, 4)},
			want: []record.Row{row(1, 2, "a", 0, 3), row(2, 5, "a", 0, 2)},
		},
		{
			name: "distinct keys",
			rows: []record.Row{row(1, 0, "a", 0, 1), row(2, 0, "a", 0, 2), row(3, 0, "a", 0, 3)},
			want: []record.Row{row(1, 0, "a", 0, 1), row(2, 0, "a", 0, 2), row(3, 0, "a", 0, 3)},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := batchPipeline(t, "p", config.Batch{})
			want := map[record.ID]record.Row{}
			for _, r := range tc.want {
				want[r.ID] = r
			}
			for _, order := range permutations(len(tc.rows)) {
				b := New(p, record.Date{Year: 2026, Month: 3, Day: 29}, t0)
				for _, i := range order {
					b.Add(tc.rows[i])
				}
				if len(b.Rows) != len(want) {
					t.Fatalf("order %v: %d rows, want %d", order, len(b.Rows), len(want))
				}
				for _, r := range b.Rows {
					w, ok := want[r.ID]
					if !ok || r.Version != w.Version || r.Pos != w.Pos {
						t.Fatalf("order %v: kept version %d at %s@%d, want version %d at %s@%d",
							order, r.Version, r.Pos.TP, r.Pos.Offset, w.Version, w.Pos.TP, w.Pos.Offset)
					}
				}
				if b.Records != len(tc.rows) || b.Superseded != len(tc.rows)-len(want) || b.Bytes != 10*len(tc.rows) {
					t.Fatalf("order %v: records %d, superseded %d, bytes %d; want %d, %d, %d", order,
						b.Records, b.Superseded, b.Bytes, len(tc.rows), len(tc.rows)-len(want), 10*len(tc.rows))
				}
			}
		})
	}
}

// TestNewerIsATotalOrder checks that of two distinct positions exactly one
// is newer, which is what makes dedup independent of arrival order.
func TestNewerIsATotalOrder(t *testing.T) {
	var rows []record.Row
	for _, v := range []int64{0, 1} {
		for _, topic := range []string{"a", "b"} {
			for _, part := range []int32{0, 1} {
				for _, off := range []int64{0, 1} {
					rows = append(rows, row(1, v, topic, part, off))
				}
			}
		}
	}
	for i := range rows {
		if rows[i].Newer(&rows[i]) {
			t.Errorf("%+v is newer than itself", rows[i].Pos)
		}
		for j := range rows {
			if i != j && rows[i].Newer(&rows[j]) == rows[j].Newer(&rows[i]) {
				t.Errorf("v%d %s@%d and v%d %s@%d: Newer is %v both ways", rows[i].Version, rows[i].Pos.TP, rows[i].Pos.Offset,
					rows[j].Version, rows[j].Pos.TP, rows[j].Pos.Offset, rows[i].Newer(&rows[j]))
			}
		}
	}
}

func TestRanges(t *testing.T) {
	p := batchPipeline(t, "p", config.Batch{})
	b := New(p, record.Date{Year: 2026, Month: 3, Day: 29}, t0)
	if r := b.Ranges(); len(r) != 0 {
		t.Errorf("empty batch ranges = %+v", r)
	}
	b.Add(row(1, 0, "b", 0, 7))
	b.Add(row(2, 0, "a", 10, 100))
	b.Add(row(3, 0, "a", 2, 50))
	b.Add(row(4, 0, "a", 2, 40))
	b.Add(row(3, 0, "a", 2, 45)) // superseded by a/2@50, still taken from a/2
	b.AddDead(record.DeadLetter{Pos: record.Position{TP: record.TP{Topic: "a", Partition: 2}, Offset: 60}, Key: []byte("k"), Value: []byte("oops"), Reason: "bad"})
	b.Add(row(5, 0, "b", 0, 3))
	b.AddDead(record.DeadLetter{Pos: record.Position{TP: record.TP{Topic: "a", Partition: 0}, Offset: 1}, Value: []byte("x")})
	want := []Range{
		{Topic: "a", Partition: 0, First: 1, Last: 1, Count: 1},
		{Topic: "a", Partition: 2, First: 40, Last: 60, Count: 4},
		{Topic: "a", Partition: 10, First: 100, Last: 100, Count: 1},
		{Topic: "b", Partition: 0, First: 3, Last: 7, Count: 2},
	}
	if got := b.Ranges(); !reflect.DeepEqual(got, want) {
		t.Errorf("Ranges() =\n %+v\nwant\n %+v", got, want)
	}
	if b.Records != 8 || b.Superseded != 1 || b.Bytes != 6*10+5+1 || len(b.Rows) != 5 || len(b.Dead) != 2 {
		t.Errorf("records %d, superseded %d, bytes %d, rows %d, dead %d; want 8, 1, 66, 5, 2",
			b.Records, b.Superseded, b.Bytes, len(b.Rows), len(b.Dead))
	}
	for _, tc := range []struct {
		tp    record.TP
		first int64
		ok    bool
	}{
		{record.TP{Topic: "a", Partition: 2}, 40, true},
		{record.TP{Topic: "b", Partition: 0}, 3, true},
		{record.TP{Topic: "a", Partition: 0}, 1, true},
		{record.TP{Topic: "a", Partition: 1}, 0, false},
		{record.TP{Topic: "c", Partition: 0}, 0, false},
	} {
		if first, ok := b.First(tc.tp); first != tc.first || ok != tc.ok {
			t.Errorf("First(%s) = %d, %v; want %d, %v", tc.tp, first, ok, tc.first, tc.ok)
		}
	}
}

func TestDrop(t *testing.T) {
	p := batchPipeline(t, "p", config.Batch{})
	fill := func() *Batch {
		b := New(p, record.Date{Year: 2026, Month: 3, Day: 29}, t0)
		b.Add(row(1, 0, "a", 0, 10))
		b.Add(row(2, 0, "a", 1, 20))
		b.Add(row(3, 0, "b", 0, 30))
		b.Add(row(4, 0, "a", 1, 21))
		b.Add(row(5, 0, "a", 0, 11))
		b.AddDead(record.DeadLetter{Pos: record.Position{TP: record.TP{Topic: "a", Partition: 1}, Offset: 22}, Value: []byte("1234")})
		b.AddDead(record.DeadLetter{Pos: record.Position{TP: record.TP{Topic: "b", Partition: 0}, Offset: 31}, Value: []byte("12345")})
		return b
	}
	lostSet := func(tps ...record.TP) func(record.TP) bool {
		return func(tp record.TP) bool { return slices.Contains(tps, tp) }
	}

	b := fill()
	if !b.Drop(lostSet(record.TP{Topic: "a", Partition: 1})) {
		t.Fatal("Drop of a/1 reports nothing left")
	}
	var keys []int64
	for _, r := range b.Rows {
		keys = append(keys, r.Values[0].(int64))
	}
	if !slices.Equal(keys, []int64{1, 3, 5}) {
		t.Errorf("rows after Drop(a/1) have keys %v, want [1 3 5]", keys)
	}
	if len(b.Dead) != 1 || b.Dead[0].Pos.Offset != 31 {
		t.Errorf("dead letters after Drop(a/1) = %+v, want the one at b/0@31", b.Dead)
	}
	wantRanges := []Range{
		{Topic: "a", Partition: 0, First: 10, Last: 11, Count: 2},
		{Topic: "b", Partition: 0, First: 30, Last: 31, Count: 2},
	}
	if got := b.Ranges(); !reflect.DeepEqual(got, wantRanges) {
		t.Errorf("ranges after Drop(a/1) = %+v, want %+v", got, wantRanges)
	}
	if b.Records != 4 || b.Bytes != 3*10+5 || b.Superseded != 0 {
		t.Errorf("after Drop(a/1): records %d, bytes %d, superseded %d; want 4, 35, 0", b.Records, b.Bytes, b.Superseded)
	}
	if _, ok := b.First(record.TP{Topic: "a", Partition: 1}); ok {
		t.Error("First(a/1) still answers after a/1 was dropped")
	}
	if !b.Opened.Equal(t0) || b.Pipeline != p || b.Date != (record.Date{Year: 2026, Month: 3, Day: 29}) {
		t.Errorf("Drop changed the batch identity: opened %s, pipeline %p, date %s", b.Opened, b.Pipeline, b.Date)
	}
	// The index is rebuilt: a newer version of a kept key replaces it, an
	// older one is counted as superseded, a dropped key comes back as new.
	b.Add(row(1, 1, "a", 0, 12))
	b.Add(row(3, 0, "b", 0, 29))
	b.Add(row(2, 0, "a", 0, 13))
	if len(b.Rows) != 4 || b.Superseded != 2 {
		t.Fatalf("after re-adding: %d rows, %d superseded; want 4, 2", len(b.Rows), b.Superseded)
	}
	for _, r := range b.Rows {
		switch k := r.Values[0].(int64); k {
		case 1:
			if r.Version != 1 {
				t.Errorf("key 1 kept version %d, want 1", r.Version)
			}
		case 3:
			if r.Pos.Offset != 30 {
				t.Errorf("key 3 kept offset %d, want 30", r.Pos.Offset)
			}
		}
	}

	b = fill()
	if b.Drop(lostSet(record.TP{Topic: "a", Partition: 0}, record.TP{Topic: "a", Partition: 1}, record.TP{Topic: "b", Partition: 0})) {
		t.Error("Drop of every partition reports something left")
	}
	if b.Records != 0 || b.Bytes != 0 || len(b.Rows) != 0 || len(b.Dead) != 0 || len(b.Ranges()) != 0 || b.Due(t0.Add(time.Hour)) {
		t.Errorf("after dropping everything: %+v", b)
	}

	b = fill()
	before := b.ID()
	if !b.Drop(lostSet(record.TP{Topic: "c", Partition: 0})) {
		t.Error("Drop of a partition the batch does not hold reports nothing left")
	}
	if b.Records != 7 || len(b.Rows) != 5 || len(b.Dead) != 2 || b.ID() != before {
		t.Errorf("Drop of an unrelated partition changed the batch: records %d, rows %d, dead %d", b.Records, len(b.Rows), len(b.Dead))
	}
}

func TestFull(t *testing.T) {
	p := batchPipeline(t, "p", config.Batch{MaxRecords: 3, MaxBytes: 100})
	b := New(p, record.Date{Year: 2026, Month: 3, Day: 29}, t0)
	if b.Full() {
		t.Error("an empty batch is Full")
	}
	for i, want := range []bool{false, false, true, true} {
		b.Add(row(int64(i), 0, "a", 0, int64(i)))
		if got := b.Full(); got != want {
			t.Errorf("after %d records: Full() = %v, want %v", i+1, got, want)
		}
	}

	b = New(p, record.Date{Year: 2026, Month: 3, Day: 29}, t0)
	r := row(1, 0, "a", 0, 1)
	r.Size = 60
	b.Add(r)
	if b.Full() {
		t.Error("60 of 100 bytes: Full")
	}
	b.AddDead(record.DeadLetter{Pos: record.Position{TP: record.TP{Topic: "a", Partition: 0}, Offset: 2}, Key: []byte("k"), Value: make([]byte, 38)})
	if b.Full() {
		t.Errorf("99 of 100 bytes: Full (bytes %d)", b.Bytes)
	}
	b.AddDead(record.DeadLetter{Pos: record.Position{TP: record.TP{Topic: "a", Partition: 0}, Offset: 3}, Value: []byte("x")})
	if !b.Full() {
		t.Errorf("100 of 100 bytes: not Full (bytes %d, records %d)", b.Bytes, b.Records)
	}

	// Duplicates count: the limit is on records taken, not rows kept.
	b = New(p, record.Date{Year: 2026, Month: 3, Day: 29}, t0)
	for i := range 3 {
		b.Add(row(1, int64(i), "a", 0, int64(i)))
	}
	if len(b.Rows) != 1 || !b.Full() {
		t.Errorf("three versions of one key: %d rows, Full %v; want 1 row and Full", len(b.Rows), b.Full())
	}
}

func TestDueAndDeadline(t *testing.T) {
	p := batchPipeline(t, "p", config.Batch{Linger: 2 * time.Second})
	b := New(p, record.Date{Year: 2026, Month: 3, Day: 29}, t0)
	if got, want := b.Deadline(), t0.Add(2*time.Second); !got.Equal(want) {
		t.Errorf("Deadline() = %s, want %s", got, want)
	}
	if b.Due(t0.Add(time.Hour)) {
		t.Error("an empty batch is due")
	}
	b.Add(row(1, 0, "a", 0, 1))
	for _, tc := range []struct {
		at   time.Duration
		want bool
	}{
		{-time.Second, false},
		{0, false},
		{2*time.Second - time.Nanosecond, false},
		{2 * time.Second, true},
		{time.Hour, true},
	} {
		if got := b.Due(t0.Add(tc.at)); got != tc.want {
			t.Errorf("Due(opened%+v) = %v, want %v", tc.at, got, tc.want)
		}
	}
	// Adding records does not move the deadline.
	b.Add(row(2, 0, "a", 0, 2))
	if got, want := b.Deadline(), t0.Add(2*time.Second); !got.Equal(want) {
		t.Errorf("Deadline() after another record = %s, want %s", got, want)
	}
	// A batch of dead letters only is due too: they must be written.
	d := New(p, record.Date{}, t0)
	d.AddDead(record.DeadLetter{Pos: record.Position{TP: record.TP{Topic: "a", Partition: 0}, Offset: 3}})
	if !d.Due(t0.Add(2 * time.Second)) {
		t.Error("a batch of dead letters is never due")
	}
}

func TestBatchID(t *testing.T) {
	p := batchPipeline(t, "orders", config.Batch{})
	day := record.Date{Year: 2026, Month: 3, Day: 29}
	rows := []record.Row{row(1, 0, "a", 0, 10), row(2, 0, "a", 1, 20), row(1, 1, "b", 0, 5), row(3, 0, "a", 0, 12)}
	build := func(p *config.Pipeline, d record.Date, opened time.Time, order []int) *Batch {
		b := New(p, d, opened)
		for _, i := range order {
			b.Add(rows[i])
		}
		return b
	}
	ref := build(p, day, t0, []int{0, 1, 2, 3}).ID()
	for _, order := range permutations(len(rows)) {
		if got := build(p, day, t0.Add(time.Duration(len(order))*time.Minute), order).ID(); got != ref {
			t.Errorf("order %v: batch id %x, want %x", order, got, ref)
		}
	}
	if got := build(p, day, t0.Add(time.Hour), []int{3, 2, 1, 0}).ID(); got != ref {
		t.Error("batch id depends on when the batch was opened")
	}
	other := batchPipeline(t, "payments", config.Batch{})
	for name, id := range map[string][16]byte{
		"another date":     build(p, record.Date{Year: 2026, Month: 3, Day: 30}, t0, []int{0, 1, 2, 3}).ID(),
		"another pipeline": build(other, day, t0, []int{0, 1, 2, 3}).ID(),
		"one record less":  build(p, day, t0, []int{0, 1, 2}).ID(),
		"one record more": func() [16]byte {
			b := build(p, day, t0, []int{0, 1, 2, 3})
			b.Add(row(9, 0, "a", 0, 11)) // inside the a/0 range: only the count moves
			return b.ID()
		}(),
		"a dead letter more": func() [16]byte {
			b := build(p, day, t0, []int{0, 1, 2, 3})
			b.AddDead(record.DeadLetter{Pos: record.Position{TP: record.TP{Topic: "a", Partition: 1}, Offset: 21}})
			return b.ID()
		}(),
	} {
		if id == ref {
			t.Errorf("%s: same batch id %x", name, id)
		}
	}
	// Pinned: batch and run ids are stored in the ledger and must not change
	// between releases. Checked against an independent implementation of
	// the encoding (SHA-256 of the domain, run id and big-endian ranges).
	const wantBatch = "a04866ef59221f989da6fd26adbc1b02"
	if got := hex.EncodeToString(ref[:]); got != wantBatch {
		t.Errorf("batch id = %s, pinned %s", got, wantBatch)
	}
}

func TestRunID(t *testing.T) {
	day := record.Date{Year: 2026, Month: 3, Day: 29}
	ref := RunID("orders", day)
	if RunID("orders", record.Date{Year: 2026, Month: time.March, Day: 29}) != ref {
		t.Error("RunID is not deterministic")
	}
	p := batchPipeline(t, "orders", config.Batch{})
	b1 := New(p, day, t0)
	b1.Add(row(1, 0, "a", 0, 1))
	b2 := New(p, day, t0.Add(time.Hour))
	b2.Add(row(2, 0, "b", 3, 99))
	if b1.ID() == b2.ID() {
		t.Error("batches of different records share a batch id")
	}
	for name, id := range map[string][16]byte{
		"another date":      RunID("orders", record.Date{Year: 2026, Month: 3, Day: 30}),
		"another year":      RunID("orders", record.Date{Year: 2025, Month: 3, Day: 29}),
		"another pipeline":  RunID("order", day),
		"undated":           RunID("orders", record.Date{}),
		"name holding date": RunID("orders\x002026-03-29", record.Date{}),
	} {
		if id == ref {
			t.Errorf("%s: same run id %x", name, id)
		}
	}
	const wantRun = "3b4f4ecf5ad30f48d725656c965e9db5"
	if got := hex.EncodeToString(ref[:]); got != wantRun {
		t.Errorf("RunID(orders, 2026-03-29) = %s, pinned %s", got, wantRun)
	}
}

func TestTPString(t *testing.T) {
	if got := (record.TP{Topic: "orders.v1", Partition: 12}).String(); got != "orders.v1/12" {
		t.Errorf("TP.String() = %q", got)
	}
}

// The ranges follow records that alternate between partitions, and a
// partition dropped and taken again starts a new range: the last range
// touched, checked before the map, never outlives a Drop.
func TestRangesAcrossPartitionsAndDrop(t *testing.T) {
	p := batchPipeline(t, "orders", config.Batch{MaxRecords: 100, MaxBytes: 1 << 20})
	b := New(p, record.Date{Year: 2026, Month: 3, Day: 1}, t0)
	for i, tp := range []record.TP{{Topic: "a"}, {Topic: "a", Partition: 1}, {Topic: "a"}, {Topic: "b"}, {Topic: "a", Partition: 1}} {
		b.Add(row(int64(i), 1, tp.Topic, tp.Partition, int64(10+i)))
	}
	want := []Range{{Topic: "a", First: 10, Last: 12, Count: 2}, {Topic: "a", Partition: 1, First: 11, Last: 14, Count: 2}, {Topic: "b", First: 13, Last: 13, Count: 1}}
	if got := b.Ranges(); !slices.Equal(got, want) {
		t.Fatalf("ranges %+v, want %+v", got, want)
	}
	b.Drop(func(tp record.TP) bool { return tp.Partition == 1 })
	b.Add(row(9, 1, "a", 1, 40))
	want = []Range{{Topic: "a", First: 10, Last: 12, Count: 2}, {Topic: "a", Partition: 1, First: 40, Last: 40, Count: 1}, {Topic: "b", First: 13, Last: 13, Count: 1}}
	if got := b.Ranges(); !slices.Equal(got, want) || b.Records != 4 {
		t.Fatalf("after dropping partition 1 and taking it again: ranges %+v (%d records), want %+v (4)", got, b.Records, want)
	}
}
