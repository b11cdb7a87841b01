package consume

import (
	"time"

	"github.com/idemsink/idemsink/internal/retry"
)

// partition is what the consumer knows of one owned partition. It is pure
// state: no Kafka, no database, no clock of its own. Offsets are Kafka
// offsets; -1 means none.
type partition struct {
	seen      int64 // highest offset taken from Kafka (into a batch, or skipped)
	applied   int64 // the ledger's applied offset: end of the contiguous applied prefix
	committed int64 // the next offset committed to Kafka
	end       int64 // the log end (high watermark) the last fetch reported
	// state says whether records are taken, or why not: while fenced or
	// held back, fetching must go back to seen+1 (at resyncAt), and
	// records fetched before that are ignored.
	state    state
	resyncAt time.Time
	stops    int // fences and hold-backs in a row; the wait before a resync doubles with them
	// registryHold is the offset of the record held back because the
	// Schema Registry was out, until a decode at or past it gets an
	// answer; -1: none. The consumer is not ready meanwhile.
	registryHold int64
}

// state is where a partition stands between fetching and taking records.
type state int

const (
	// reading: fetched records are taken.
	reading state = iota
	// fenced: a newer generation owns the partition in the ledger; its
	// records were dropped, and it is read again from the ledger's
	// applied offset after a wait (protocol step 8).
	fenced
	// heldBack: the Schema Registry could not decode the record at
	// registryHold; what was taken before it applies meanwhile, and the
	// partition is read again from that record after a wait.
	heldBack
)

func (s state) String() string {
	switch s {
	case fenced:
		return "fenced"
	case heldBack:
		return "held back"
	default:
		return "reading"
	}
}

func newPartition() *partition {
	return &partition{seen: -1, applied: -1, committed: -1, end: -1, registryHold: -1}
}

// take reports whether a fetched record at off is to be applied. A record
// at or below the ledger's applied offset is a redelivery; one fetched
// before a fence's resync is read again later.
func (p *partition) take(off int64) bool {
	if p.state != reading {
		return false
	}
	p.seen = max(p.seen, off)
	return off > p.applied
}

// resume sets the start of a newly assigned partition from the ledger's
// applied offset and Kafka's committed offset (-1: none): the further of
// the two wins. It returns the offset to fetch from if the ledger is ahead
// (and how many records that skips), or -1 to keep Kafka's.
func (p *partition) resume(ledger, kafka int64) (from, skipped int64) {
	p.applied = ledger
	if kafka >= 0 {
		p.committed = kafka
	}
	p.seen = max(p.seen, ledger)
	if ledger >= 0 && ledger+1 > kafka {
		return ledger + 1, ledger + 1 - max(kafka, 0)
	}
	return -1, 0
}

// advance records that the ledger's applied offset reached a.
func (p *partition) advance(a int64) {
	p.applied = max(p.applied, a)
	p.stops = 0
}

// toCommit returns the next offset to commit to Kafka, if the ledger is
// ahead of Kafka's commit: the commit never passes the ledger.
func (p *partition) toCommit() (int64, bool) {
	if p.applied >= 0 && p.applied+1 > p.committed {
		return p.applied + 1, true
	}
	return 0, false
}

// commitDone records a successful Kafka commit of next.
func (p *partition) commitDone(next int64) { p.committed = max(p.committed, next) }

// fence drops the partition back to the ledger's applied offset (if the
// fenced transaction read it) and schedules a resync from there after a
// wait that doubles with each fence in a row, from backoff up to maxWait:
// a writer fenced by a newer generation is about to learn from the group
// that it lost the partition, and must not spin on the database meanwhile.
func (p *partition) fence(ledger int64, known bool, now time.Time, b retry.Backoff) {
	if known {
		p.applied = ledger
	}
	p.seen, p.state = p.applied, fenced
	p.stops++
	p.resyncAt = now.Add(b.After(p.stops))
}

// holdBack stops the partition at the record at off, which cannot be
// decoded for now (the Schema Registry is out), and schedules reading it
// again from off, with the same doubling wait as a fence. What was taken
// before off stays in its batches and applies meanwhile: seen, and so the
// watermarks, stop just before off.
func (p *partition) holdBack(off int64, now time.Time, b retry.Backoff) {
	p.seen, p.state = off-1, heldBack
	p.registryHold = off
	p.stops++
	p.resyncAt = now.Add(b.After(p.stops))
}

// decoded records that the record at off was decoded without a Schema
// Registry outage: a hold at or before it is over.
func (p *partition) decoded(off int64) {
	if p.registryHold >= 0 && off >= p.registryHold {
		p.registryHold = -1
	}
}

// resync returns the offset to fetch from again, and the state the
// partition leaves, if a fenced or held-back partition's wait is over at
// now: the ledger's position after a fence, the held-back record after
// holdBack. The partition is reading again.
func (p *partition) resync(now time.Time) (int64, state, bool) {
	if p.state == reading || now.Before(p.resyncAt) {
		return 0, reading, false
	}
	was := p.state
	p.state = reading
	return max(p.applied, p.seen) + 1, was, true
}

// stopped reports whether the partition waits for a resync, and until when.
func (p *partition) stopped() (time.Time, bool) { return p.resyncAt, p.state != reading }

// lag is the number of records in the log not yet applied, or -1 if no
// fetch has reported the log end yet.
func (p *partition) lag() int64 {
	if p.end < 0 {
		return -1
	}
	return max(0, p.end-(p.applied+1))
}
