package consume

// The commit protocol. The steps are numbered as in the README's "How it
// works" (steps 1 to 4, decoding and batching, are in consume.go and
// internal/batch):
//
//  5. dispatch: a flushed batch goes to a free connection with the ledger
//     offsets it may write (watermarks): per partition, the end of the
//     contiguous prefix that is applied once the batch commits. A lane has
//     one batch in flight, so the batches of a partition commit in order.
//  6. apply: the sink's transaction runs its phases, all or nothing
//     (sink.Apply): fence, pending, stage, upsert, verify, delete, record,
//     commit.
//  7. advance, then commit to Kafka, on success: the partition state
//     advances to the ledger's offsets; then, once c.mu is released (see
//     commitKafka), Kafka gets the next offset after them, only for
//     partitions still owned: a Kafka commit never passes the ledger.
//  8. fence / resync, or retry, on a failure. Fenced (a newer generation
//     owns a partition): the batch and every record held of its
//     partitions are dropped, and fetching restarts at the ledger's offset
//     (resync), after a wait. Any other failure: the batch stays at the
//     head of its lane and its partitions pause; it is sent again on a
//     later turn of the loop (at once after a conflict, after a backoff
//     otherwise), so that no retry ever waits inside the rebalance window.
//
// A partition held back for the Schema Registry (consume.go, add) is not
// fenced: it keeps what it took before the held-back record and is read
// again from that record, with its own log event and counter.

import (
	"context"
	"errors"
	"fmt"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/idemsink/idemsink/internal/batch"
	"github.com/idemsink/idemsink/internal/record"
	"github.com/idemsink/idemsink/internal/sink"
)

// outcome is what a connection reports of one attempt.
type outcome struct {
	j   *job
	res sink.Result
	err error
}

// dispatch (c.mu held) sends the ready heads of the lanes to the
// connections (step 5).
func (c *Consumer) dispatch() {
	if c.closing {
		return
	}
	for _, j := range c.set.ready(c.now()) {
		j.commit = sink.Commit{Group: c.cfg.Group, Applied: c.watermarks(j.b)}
		j.commit.Member, j.commit.Generation = c.cl.GroupMetadata()
		ctx, cancel := context.WithTimeout(c.base, c.cfg.ApplyTimeout)
		j.inflight, j.cancel = true, cancel
		c.jobs <- attempt{j: j, ctx: ctx} // never blocks: one job per lane, one slot per lane
	}
}

// watermarks (c.mu held) computes, for each partition of b, the end of the
// contiguous applied prefix once b is applied: just below the first offset
// any other batch holds from it, or the highest offset seen if none does.
func (c *Consumer) watermarks(b *batch.Unit) map[record.TP]int64 {
	out := map[record.TP]int64{}
	for _, r := range b.Ranges() {
		tp := record.TP{Topic: r.Topic, Partition: r.Partition}
		ps := c.parts[tp]
		if ps == nil {
			continue
		}
		w := ps.seen
		if first, ok := c.set.first(tp, b); ok {
			w = min(w, first-1)
		}
		out[tp] = w
	}
	return out
}

// settle (c.mu held) takes the outcome of one attempt through step 7 or 8.
func (c *Consumer) settle(o outcome) {
	j := o.j
	j.inflight = false
	j.cancel()
	var fenced *sink.FencedError
	switch {
	case o.err == nil:
		c.set.done(j)
		c.applied(j, o.res)
	case errors.As(o.err, &fenced):
		c.set.done(j)
		c.fenced(j, fenced)
	default:
		c.failed(j, o.err)
	}
}

// applied (c.mu held) advances the partitions of an applied batch to its
// watermarks (step 7); their Kafka commit follows once c.mu is released
// (see commitKafka).
func (c *Consumer) applied(j *job, res sink.Result) {
	c.setDB(true)
	first, last := j.b.Span()
	c.log.Info("batch applied", "event", EventApplied, "pipeline", j.b.Pipeline.Name, "dates", len(res.Batches),
		"first_date", first.String(), "last_date", last.String(), "records", res.Records, "inserted", res.Inserted, "updated", res.Updated,
		"unchanged", res.Unchanged, "stale", res.Stale, "deleted", res.Deleted, "superseded", res.Superseded, "skipped", res.Skipped,
		"dead_lettered", res.DeadLettered)
	tps := make([]record.TP, 0, len(j.commit.Applied))
	for tp, a := range j.commit.Applied {
		if ps := c.parts[tp]; ps != nil {
			ps.advance(a)
			tps = append(tps, tp)
		}
		c.m.AppliedOffset.WithLabelValues(tp.Topic, fmt.Sprint(tp.Partition)).Set(float64(a))
	}
	if j.attempts > 0 {
		c.resume(tps)
	}
	c.fault(FaultAfterPGCommit)
	if len(c.set.inflight()) > 0 {
		c.fault(FaultBetweenLanes)
	}
	if c.onBatch != nil {
		c.onBatch(j.b, res)
	}
}

// fenced (c.mu held) forgets everything held from the partitions of a
// fenced batch (step 8), so that no watermark can pass records that were
// never applied: the other batches lose those partitions' records, the
// positions fall back to the ledger's, and fetching restarts there (see
// resync).
func (c *Consumer) fenced(j *job, err *sink.FencedError) {
	c.log.Warn("batch fenced; dropping it and reading its partitions again from the ledger", "event", EventFenced,
		"pipeline", j.b.Pipeline.Name, "dates", j.b.Dates(), "err", err)
	gone := map[record.TP]bool{}
	for _, r := range j.b.Ranges() {
		gone[record.TP{Topic: r.Topic, Partition: r.Partition}] = true
	}
	c.set.drop(func(tp record.TP) bool { return gone[tp] })
	pause := map[string][]int32{}
	for tp := range gone {
		ps := c.parts[tp]
		if ps == nil {
			continue
		}
		a, known := err.Ledger[tp]
		ps.fence(a, known, c.now(), c.bo)
		c.m.Fences.Inc()
		pause[tp.Topic] = append(pause[tp.Topic], tp.Partition)
	}
	c.cl.PauseFetchPartitions(pause)
}

// failed (c.mu held) keeps the batch at the head of its lane for a later
// attempt and pauses its partitions (step 8); what the error is decides
// when and how loudly.
func (c *Consumer) failed(j *job, err error) {
	// Partitions lost or revoked while the attempt ran leave the batch now.
	if !c.set.shrink(j, func(tp record.TP) bool { return c.parts[tp] == nil }) {
		return
	}
	if j.canceled {
		j.canceled = false
		return // cut short by a hand-over or shutdown, which decides what comes next
	}
	j.attempts++
	j.err, j.class = err, sink.Classify(err)
	wait := c.bo.After(j.attempts)
	log := c.log.With("pipeline", j.b.Pipeline.Name, "dates", j.b.Dates(), "attempt", j.attempts, "class", j.class.String(), "err", err)
	switch j.class {
	case sink.Conflict:
		wait = 0
		log.Info("apply conflicted; retrying at once", "event", EventRetry)
	case sink.Outage:
		c.setDB(false)
		log.Warn("apply failed; retrying", "event", EventRetry, "backoff", wait)
	default:
		// Not an outage: nothing will change by itself. Retried, but an
		// operator has to act; the pending-batch age gauge shows it.
		c.setDB(false)
		log.Error("batch stuck; retrying", "event", EventStuck, "sqlstate", sink.SQLState(err), "backoff", wait)
	}
	c.m.DBRetries.Inc()
	j.retryAt = c.now().Add(wait)
	if wait > 0 {
		c.pause(j.b)
	}
}

// resync (c.mu held) moves the fetch position of fenced partitions back to
// the ledger's, and of held-back partitions to the held-back record, once
// their wait is over. It runs on the polling goroutine before rebalances
// are allowed, as SetOffsets requires.
func (c *Consumer) resync() {
	offsets := map[string]map[int32]kgo.EpochOffset{}
	var tps []record.TP
	for tp, ps := range c.parts {
		from, was, ok := ps.resync(c.now())
		if !ok {
			continue
		}
		tps = append(tps, tp)
		if offsets[tp.Topic] == nil {
			offsets[tp.Topic] = map[int32]kgo.EpochOffset{}
		}
		offsets[tp.Topic][tp.Partition] = kgo.EpochOffset{Epoch: -1, Offset: from}
		if was == fenced {
			c.log.Info("reading partition again from the ledger", "event", EventResync, "topic", tp.Topic, "partition", tp.Partition, "offset", from)
		} else {
			c.log.Info("reading partition again from the record held back for the schema registry", "event", EventRegistryResume,
				"topic", tp.Topic, "partition", tp.Partition, "offset", from)
		}
	}
	if len(offsets) > 0 {
		c.cl.SetOffsets(offsets)
		c.resume(tps)
	}
}
