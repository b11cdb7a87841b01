// Package batch groups decoded rows into micro-batches: the newest row per
// record_id (in-batch dedup under the ordering of record.Row.Newer), the
// dead letters beside them, the offset range taken from each partition,
// and the flush policy (records, bytes, age). A batch's run id and batch id
// are deterministic, so a redelivered batch is recognised as the same one.
package batch

import (
	"crypto/sha256"
	"encoding/binary"
	"slices"
	"time"

	"github.com/idemsink/idemsink/internal/config"
	"github.com/idemsink/idemsink/internal/record"
)

// Range is the span of offsets a batch took from one partition.
type Range struct {
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	First     int64  `json:"first"`
	Last      int64  `json:"last"`
	Count     int    `json:"count"`
}

// Batch is a micro-batch of one pipeline and one target date: the unit of
// the batch log. Rows holds the newest row per record_id; the records it
// superseded are counted. A transaction applies a Unit: the batches of
// many dates of one lane.
type Batch struct {
	Pipeline *config.Pipeline
	Date     record.Date // zero for a batch that holds only dead letters
	Rows     []record.Row
	Dead     []record.DeadLetter
	// Records counts every record added, dead letters included.
	Records int
	// Superseded counts records replaced in the batch by a newer version.
	Superseded int
	Bytes      int
	Opened     time.Time

	index  map[record.ID]int
	ranges spans
}

// New returns an empty batch opened at now.
func New(p *config.Pipeline, d record.Date, now time.Time) *Batch {
	return &Batch{Pipeline: p, Date: d, Opened: now, index: map[record.ID]int{}, ranges: newSpans()}
}

// Add puts r in the batch, keeping only the newest row per record_id.
func (b *Batch) Add(r record.Row) {
	b.note(r.Pos, r.Size)
	if r.Ignore {
		// Taken from Kafka, changes nothing: counted with the superseded
		// (Drop recounts it so, from the offset ranges).
		b.Superseded++
		return
	}
	if i, ok := b.index[r.ID]; ok {
		b.Superseded++
		// The newer row keeps; a value it could not carry (an unchanged
		// TOAST column) is the older row's, which it would have found
		// in the table.
		if r.Newer(&b.Rows[i]) {
			r.Fill(&b.Rows[i])
			b.Rows[i] = r
		} else {
			b.Rows[i].Fill(&r)
		}
		return
	}
	b.index[r.ID] = len(b.Rows)
	if n := len(b.Rows); n == cap(b.Rows) && n < b.Pipeline.Batch.MaxRecords {
		// Doubling, up to the most rows a batch can hold: a row is
		// large, and append's slower growth past 256 copies each row
		// several more times on the way to a full batch.
		b.Rows = slices.Grow(b.Rows, min(max(n, 16), b.Pipeline.Batch.MaxRecords-n))
	}
	b.Rows = append(b.Rows, r)
}

// AddDead puts a dead letter in the batch; it is written with the batch.
func (b *Batch) AddDead(d record.DeadLetter) {
	b.note(d.Pos, len(d.Value)+len(d.Key))
	b.Dead = append(b.Dead, d)
}

func (b *Batch) note(pos record.Position, size int) {
	b.Records++
	b.Bytes += size
	b.ranges.note(pos)
}

// Ranges returns the offset range taken from each partition, sorted.
func (b *Batch) Ranges() []Range { return b.ranges.sorted() }

// spans is the offset range taken from each partition, kept as records
// come. Records arrive in runs from one partition, so the last range
// touched is checked before the map.
type spans struct {
	m    map[record.TP]*Range
	last *Range
}

func newSpans() spans { return spans{m: map[record.TP]*Range{}} }

func (s *spans) note(pos record.Position) {
	r := s.last
	if r == nil || r.Partition != pos.Partition || r.Topic != pos.Topic {
		if r = s.m[pos.TP]; r == nil {
			r = &Range{Topic: pos.Topic, Partition: pos.Partition, First: pos.Offset, Last: pos.Offset}
			s.m[pos.TP] = r
		}
		s.last = r
	}
	r.First, r.Last, r.Count = min(r.First, pos.Offset), max(r.Last, pos.Offset), r.Count+1
}

// first is the lowest offset taken from tp, if any.
func (s *spans) first(tp record.TP) (int64, bool) {
	if r := s.m[tp]; r != nil {
		return r.First, true
	}
	return 0, false
}

// drop forgets the ranges of the lost partitions.
func (s *spans) drop(lost func(record.TP) bool) {
	s.last = nil
	for tp := range s.m {
		if lost(tp) {
			delete(s.m, tp)
		}
	}
}

// sorted returns the ranges by topic and partition.
func (s *spans) sorted() []Range {
	out := make([]Range, 0, len(s.m))
	for _, r := range s.m {
		out = append(out, *r)
	}
	slices.SortFunc(out, func(a, b Range) int {
		if a.Topic != b.Topic {
			if a.Topic < b.Topic {
				return -1
			}
			return 1
		}
		return int(a.Partition - b.Partition)
	})
	return out
}

// First returns the lowest offset the batch holds from tp, if any.
func (b *Batch) First(tp record.TP) (int64, bool) { return b.ranges.first(tp) }

// Drop removes everything the batch took from the given partitions, as when
// they are lost to another group member. The offset ranges of the other
// partitions stay whole, including records superseded within the batch, so
// that the watermarks computed from them stay right. It reports whether
// anything is left.
func (b *Batch) Drop(lost func(record.TP) bool) bool {
	rows, dead := b.Rows[:0], b.Dead[:0]
	b.index = map[record.ID]int{}
	b.Bytes = 0
	for _, r := range b.Rows {
		if !lost(r.Pos.TP) {
			b.index[r.ID] = len(rows)
			rows = append(rows, r)
			b.Bytes += r.Size
		}
	}
	for _, d := range b.Dead {
		if !lost(d.Pos.TP) {
			dead = append(dead, d)
			b.Bytes += len(d.Key) + len(d.Value)
		}
	}
	b.Rows, b.Dead = rows, dead
	b.Records = 0
	b.ranges.drop(lost)
	for _, r := range b.ranges.m {
		b.Records += r.Count
	}
	b.Superseded = b.Records - len(b.Rows) - len(b.Dead)
	return b.Records > 0
}

// Full reports whether the batch reached its record or byte limit.
func (b *Batch) Full() bool {
	lim := b.Pipeline.Batch
	return b.Records >= lim.MaxRecords || int64(b.Bytes) >= int64(lim.MaxBytes)
}

// Due reports whether the batch has lingered long enough at now.
func (b *Batch) Due(now time.Time) bool {
	return b.Records > 0 && now.Sub(b.Opened) >= b.Pipeline.Batch.Linger
}

// Deadline is when the batch becomes due by age.
func (b *Batch) Deadline() time.Time { return b.Opened.Add(b.Pipeline.Batch.Linger) }

// RunID is deterministic from the pipeline and target date: every batch of
// one day of one pipeline shares it, in every process and every replay.
func RunID(pipeline string, d record.Date) [16]byte {
	h := sha256.New()
	h.Write([]byte("idemsink/run_id/v1\x00" + pipeline + "\x00" + d.String()))
	var id [16]byte
	copy(id[:], h.Sum(nil))
	return id
}

// ID is deterministic from the run and the offset ranges: the same records,
// batched the same way, get the same batch id when they are delivered again.
func (b *Batch) ID() [16]byte {
	run := RunID(b.Pipeline.Name, b.Date)
	h := sha256.New()
	h.Write([]byte("idemsink/batch_id/v1\x00"))
	h.Write(run[:])
	for _, r := range b.Ranges() {
		h.Write([]byte(r.Topic))
		h.Write([]byte{0})
		h.Write(binary.BigEndian.AppendUint32(nil, uint32(r.Partition)))
		h.Write(binary.BigEndian.AppendUint64(nil, uint64(r.First)))
		h.Write(binary.BigEndian.AppendUint64(nil, uint64(r.Last)))
		h.Write(binary.BigEndian.AppendUint64(nil, uint64(r.Count)))
	}
	var id [16]byte
	copy(id[:], h.Sum(nil))
	return id
}
