package consume

import (
	"context"
	"hash/fnv"
	"slices"
	"strings"
	"time"

	"github.com/idemsink/idemsink/internal/batch"
	"github.com/idemsink/idemsink/internal/config"
	"github.com/idemsink/idemsink/internal/record"
	"github.com/idemsink/idemsink/internal/sink"
)

// A lane is a fixed share of the partitions (by hash) with at most one
// unit (one transaction, the batches of many target dates) in the database
// at a time. The open unit of a lane takes the records of every date, so
// that the flush policy counts records, bytes and age across the lane and
// records spread over many dates still make full transactions. Lanes are what lets batches apply in
// parallel without ever waiting on each other's ledger rows: a batch only
// holds records of its lane's partitions, so two batches in flight never
// lock the same ledger row, and the batches of one partition apply one
// after the other, in the order they were flushed.
type batchKey struct {
	pipeline string
	lane     int
}

// job is a flushed batch on its way to the database.
type job struct {
	b       *batch.Unit
	lane    int
	flushed time.Time
	// inflight is set while a connection applies the batch; the batch
	// must not change meanwhile. canceled marks an attempt cut short on
	// purpose (a hand-over or shutdown), which is no sign of an outage.
	inflight bool
	canceled bool
	cancel   context.CancelFunc
	commit   sink.Commit
	// attempts, retryAt, err and class describe the failures so far.
	attempts int
	retryAt  time.Time
	err      error
	class    sink.Class
}

// batches is the set of open batches (taking records) and flushed ones
// (queued per lane, the head possibly in flight), with the records and
// bytes they hold: the backlog that backpressure caps.
type batches struct {
	lanes   int
	open    map[batchKey]*batch.Unit
	queues  [][]*job
	records int
	bytes   int
}

func newBatches(lanes int) *batches {
	return &batches{lanes: lanes, open: map[batchKey]*batch.Unit{}, queues: make([][]*job, lanes)}
}

// laneOf is stable for a partition whatever the order of assignment.
func (s *batches) laneOf(tp record.TP) int {
	h := fnv.New32a()
	h.Write([]byte(tp.Topic))
	return int((h.Sum32() + uint32(tp.Partition)) % uint32(s.lanes))
}

// add puts one record into the open unit of its pipeline and lane, through
// put, and flushes the unit as soon as it is full: a unit never holds more
// than max_records, whatever the dates of its records.
func (s *batches) add(p *config.Pipeline, tp record.TP, now time.Time, put func(*batch.Unit)) {
	k := batchKey{p.Name, s.laneOf(tp)}
	b := s.open[k]
	if b == nil {
		b = batch.NewUnit(p, now)
		s.open[k] = b
	}
	records, bytes := b.Records, b.Bytes
	put(b)
	s.records += b.Records - records
	s.bytes += b.Bytes - bytes
	if b.Full() {
		s.flush(k, now)
	}
}

// flush moves an open batch to the tail of its lane's queue.
func (s *batches) flush(k batchKey, now time.Time) {
	b := s.open[k]
	delete(s.open, k)
	s.queues[k.lane] = append(s.queues[k.lane], &job{b: b, lane: k.lane, flushed: now})
}

// flushDue flushes the open batches that lingered long enough, in lanes
// with nothing queued or in flight; with all set, every open batch. In a
// busy lane a batch past its linger would only wait in the queue: it goes
// on filling up until it is full or the lane is free.
func (s *batches) flushDue(now time.Time, all bool) {
	idle := make([]bool, s.lanes)
	for lane, q := range s.queues {
		idle[lane] = len(q) == 0
	}
	for _, k := range s.sortedOpen() {
		if all || (idle[k.lane] && s.open[k].Due(now)) {
			s.flush(k, now)
		}
	}
}

// flushIdle flushes, for each lane with nothing queued, its oldest open
// batch: at the caps, that is what makes room. A lane that has batches
// queued makes room by applying them; flushing its open batches early
// would only cut them small.
func (s *batches) flushIdle(now time.Time) {
	busy := make([]bool, s.lanes)
	for lane, q := range s.queues {
		busy[lane] = len(q) > 0
	}
	for _, k := range s.sortedOpen() {
		if !busy[k.lane] {
			s.flush(k, now)
			busy[k.lane] = true
		}
	}
}

// sortedOpen returns the keys of the open batches, oldest first.
func (s *batches) sortedOpen() []batchKey {
	keys := make([]batchKey, 0, len(s.open))
	for k := range s.open {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b batchKey) int {
		if n := s.open[a].Opened.Compare(s.open[b].Opened); n != 0 {
			return n
		}
		if n := strings.Compare(a.pipeline, b.pipeline); n != 0 {
			return n
		}
		return a.lane - b.lane
	})
	return keys
}

// ready returns the heads of the lanes that can be sent to the database
// at now: not in flight, and past their retry time.
func (s *batches) ready(now time.Time) []*job {
	var out []*job
	for _, q := range s.queues {
		if len(q) > 0 && !q[0].inflight && !now.Before(q[0].retryAt) {
			out = append(out, q[0])
		}
	}
	return out
}

// done removes an applied (or abandoned) job, the head of its lane.
func (s *batches) done(j *job) {
	q := s.queues[j.lane]
	if i := slices.Index(q, j); i >= 0 {
		s.queues[j.lane] = slices.Delete(q, i, i+1)
		s.records -= j.b.Records
		s.bytes -= j.b.Bytes
	}
}

// first returns the lowest offset of tp held by any batch but except.
func (s *batches) first(tp record.TP, except *batch.Unit) (int64, bool) {
	lowest, found := int64(0), false
	note := func(b *batch.Unit) {
		if b == except {
			return
		}
		if f, ok := b.First(tp); ok && (!found || f < lowest) {
			lowest, found = f, true
		}
	}
	for _, b := range s.open {
		note(b)
	}
	for _, q := range s.queues {
		for _, j := range q {
			note(j.b)
		}
	}
	return lowest, found
}

// drop removes the records of the gone partitions from every batch not in
// flight; batches left empty go away. A batch in flight is dropped from
// when its attempt returns.
func (s *batches) drop(gone func(record.TP) bool) {
	for k, b := range s.open {
		if !holds(b, gone) {
			continue
		}
		s.records -= b.Records
		s.bytes -= b.Bytes
		if !b.Drop(gone) {
			delete(s.open, k)
			continue
		}
		s.records += b.Records
		s.bytes += b.Bytes
	}
	for _, q := range s.queues {
		for _, j := range slices.Clone(q) {
			if !j.inflight {
				s.shrink(j, gone)
			}
		}
	}
}

// shrink drops the gone partitions' records from a job that is not in
// flight; it reports whether anything is left, and removes the job if not.
func (s *batches) shrink(j *job, gone func(record.TP) bool) bool {
	if !holds(j.b, gone) {
		return true
	}
	s.records -= j.b.Records
	s.bytes -= j.b.Bytes
	if j.b.Drop(gone) {
		s.records += j.b.Records
		s.bytes += j.b.Bytes
		return true
	}
	s.queues[j.lane] = slices.DeleteFunc(s.queues[j.lane], func(o *job) bool { return o == j })
	return false
}

// holding reports whether any batch, open or flushed, holds records of the
// gone partitions.
func (s *batches) holding(gone func(record.TP) bool) bool {
	for _, b := range s.open {
		if holds(b, gone) {
			return true
		}
	}
	for _, q := range s.queues {
		for _, j := range q {
			if holds(j.b, gone) {
				return true
			}
		}
	}
	return false
}

// flushHolding flushes the open batches that hold the gone partitions.
func (s *batches) flushHolding(gone func(record.TP) bool, now time.Time) {
	for _, k := range s.sortedOpen() {
		if holds(s.open[k], gone) {
			s.flush(k, now)
		}
	}
}

// inflight returns the jobs being applied.
func (s *batches) inflight() []*job {
	var out []*job
	for _, q := range s.queues {
		if len(q) > 0 && q[0].inflight {
			out = append(out, q[0])
		}
	}
	return out
}

// deadline is the earliest time something is due: the linger of an open
// batch in an idle lane (a busy lane's batches wait for it to be free, and
// its outcome wakes the loop), or a failed batch's retry.
func (s *batches) deadline(limit time.Time) time.Time {
	for k, b := range s.open {
		if d := b.Deadline(); d.Before(limit) && len(s.queues[k.lane]) == 0 {
			limit = d
		}
	}
	for _, q := range s.queues {
		if len(q) > 0 && !q[0].inflight && q[0].retryAt.Before(limit) {
			limit = q[0].retryAt
		}
	}
	return limit
}

// pending returns, per pipeline, the flush time of the oldest flushed
// batch not yet applied, and whether any queued batch is failing.
func (s *batches) pending() (oldest map[string]time.Time, failing bool) {
	oldest = map[string]time.Time{}
	for _, q := range s.queues {
		for _, j := range q {
			name := j.b.Pipeline.Name
			if t, ok := oldest[name]; !ok || j.flushed.Before(t) {
				oldest[name] = j.flushed
			}
			failing = failing || j.err != nil
		}
	}
	return oldest, failing
}

func (s *batches) empty() bool {
	if len(s.open) > 0 {
		return false
	}
	for _, q := range s.queues {
		if len(q) > 0 {
			return false
		}
	}
	return true
}

func holds(b *batch.Unit, gone func(record.TP) bool) bool { return b.Holds(gone) }
