package batch

import (
	"slices"
	"time"

	"github.com/idemsink/idemsink/internal/config"
	"github.com/idemsink/idemsink/internal/record"
)

// Unit is what one transaction applies: the records of one pipeline on one
// lane, of any number of target dates, kept as one Batch per date. The
// date stays the unit of the batch log (run id, batch id, counts), while
// the flush policy (records, bytes, age) looks at the unit as a whole, so
// that records spread over many dates still make full transactions.
//
// A key may arrive under two dates in one unit (its date field changed):
// each date's batch keeps its own newest row, and the sink keeps the newer
// of the two when it stages the unit (see Rows).
type Unit struct {
	Pipeline *config.Pipeline
	// Records and Bytes are the sums over the unit's batches.
	Records, Bytes int
	Opened         time.Time

	dates map[record.Date]*Batch
	// ranges is the union of the batches' offset ranges, kept as records
	// come so that First, Ranges and Holds do not walk every date.
	ranges spans
}

// NewUnit returns an empty unit opened at now.
func NewUnit(p *config.Pipeline, now time.Time) *Unit {
	return &Unit{Pipeline: p, Opened: now, dates: map[record.Date]*Batch{}, ranges: newSpans()}
}

// Of returns a unit holding the given batches of one pipeline, one per
// date, as a transaction of their own: for callers that batch by date
// themselves (replay, dead-letter replay, tests).
func Of(bs ...*Batch) *Unit {
	u := &Unit{dates: map[record.Date]*Batch{}}
	defer u.merge()
	for _, b := range bs {
		if u.Pipeline == nil || b.Opened.Before(u.Opened) {
			u.Opened = b.Opened
		}
		u.Pipeline = b.Pipeline
		u.dates[b.Date] = b
		u.Records += b.Records
		u.Bytes += b.Bytes
	}
	return u
}

// batch returns the unit's batch of date d, opening it if need be.
func (u *Unit) batch(d record.Date) *Batch {
	b := u.dates[d]
	if b == nil {
		b = New(u.Pipeline, d, u.Opened)
		u.dates[d] = b
	}
	return b
}

// Add puts r in the batch of its target date d.
func (u *Unit) Add(d record.Date, r record.Row) {
	b := u.batch(d)
	records, bytes := b.Records, b.Bytes
	b.Add(r)
	u.Records += b.Records - records
	u.Bytes += b.Bytes - bytes
	u.note(r.Pos)
}

// AddDead puts a dead letter in the batch of date d (zero for a record
// that could not be dated).
func (u *Unit) AddDead(d record.Date, dl record.DeadLetter) {
	b := u.batch(d)
	records, bytes := b.Records, b.Bytes
	b.AddDead(dl)
	u.Records += b.Records - records
	u.Bytes += b.Bytes - bytes
	u.note(dl.Pos)
}

func (u *Unit) note(pos record.Position) { u.ranges.note(pos) }

// merge recomputes the union of the batches' ranges.
func (u *Unit) merge() {
	u.ranges = newSpans()
	for _, b := range u.dates {
		for tp, r := range b.ranges.m {
			m := u.ranges.m[tp]
			if m == nil {
				c := *r
				u.ranges.m[tp] = &c
				continue
			}
			m.First, m.Last, m.Count = min(m.First, r.First), max(m.Last, r.Last), m.Count+r.Count
		}
	}
}

// Batches returns the unit's batches in date order (undated first).
func (u *Unit) Batches() []*Batch {
	out := make([]*Batch, 0, len(u.dates))
	for _, b := range u.dates {
		out = append(out, b)
	}
	slices.SortFunc(out, func(a, b *Batch) int { return a.Date.Time().Compare(b.Date.Time()) })
	return out
}

// Dates returns how many target dates the unit holds.
func (u *Unit) Dates() int { return len(u.dates) }

// Span returns the lowest and highest target dates the unit holds (zero
// for undated dead letters sorts first).
func (u *Unit) Span() (first, last record.Date) {
	bs := u.Batches()
	if len(bs) == 0 {
		return first, last
	}
	return bs[0].Date, bs[len(bs)-1].Date
}

// Ranges returns, per partition, the span of offsets the unit took: the
// union of its batches' ranges, sorted.
func (u *Unit) Ranges() []Range { return u.ranges.sorted() }

// First returns the lowest offset the unit holds from tp, if any.
func (u *Unit) First(tp record.TP) (int64, bool) { return u.ranges.first(tp) }

// Holds reports whether the unit took records from any partition gone
// says is gone.
func (u *Unit) Holds(gone func(record.TP) bool) bool {
	for tp := range u.ranges.m {
		if gone(tp) {
			return true
		}
	}
	return false
}

// Drop removes everything the unit took from the given partitions (see
// Batch.Drop); dates left empty go away. It reports whether anything is
// left.
func (u *Unit) Drop(lost func(record.TP) bool) bool {
	u.Records, u.Bytes = 0, 0
	for d, b := range u.dates {
		if !b.Drop(lost) {
			delete(u.dates, d)
			continue
		}
		u.Records += b.Records
		u.Bytes += b.Bytes
	}
	u.merge()
	return u.Records > 0
}

// Full reports whether the unit reached its record or byte limit.
func (u *Unit) Full() bool {
	lim := u.Pipeline.Batch
	return u.Records >= lim.MaxRecords || int64(u.Bytes) >= int64(lim.MaxBytes)
}

// Due reports whether the unit has lingered long enough at now.
func (u *Unit) Due(now time.Time) bool {
	return u.Records > 0 && now.Sub(u.Opened) >= u.Pipeline.Batch.Linger
}

// Deadline is when the unit becomes due by age.
func (u *Unit) Deadline() time.Time { return u.Opened.Add(u.Pipeline.Batch.Linger) }

// Dated is a row to apply and the index, in Unit.Batches, of the batch of
// its target date.
type Dated struct {
	*record.Row
	Batch int
}

// Newest keeps the newest row per record_id among rows of several dates
// (each date's batch has deduplicated its own rows already), in place, in
// the order given; lost is called with the batch index of each row it
// drops, for that date's superseded count. One staged row per key is what
// lets a single upsert apply every date of a unit.
func Newest(rows []Dated, lost func(batch int)) []Dated {
	if len(rows) == 0 || !slices.ContainsFunc(rows, func(r Dated) bool { return r.Batch != rows[0].Batch }) {
		return rows
	}
	at := make(map[record.ID]int, len(rows))
	drop := false
	for i, r := range rows {
		j, ok := at[r.ID]
		if !ok {
			at[r.ID] = i
			continue
		}
		drop = true
		if r.Newer(rows[j].Row) {
			lost(rows[j].Batch)
			rows[j].Row, at[r.ID] = nil, i
		} else {
			lost(r.Batch)
			rows[i].Row = nil
		}
	}
	if !drop {
		return rows
	}
	return slices.DeleteFunc(rows, func(r Dated) bool { return r.Row == nil })
}
