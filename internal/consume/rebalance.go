package consume

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/plugin/kprom"

	"github.com/idemsink/idemsink/internal/kafka"
	"github.com/idemsink/idemsink/internal/record"
	"github.com/idemsink/idemsink/internal/retry"
	"github.com/idemsink/idemsink/internal/sink"
)

func (c *Consumer) clientOpts() []kgo.Opt {
	cfg := c.cfg
	start := kgo.NewOffset().AtStart()
	if cfg.StartOffset == "latest" {
		start = kgo.NewOffset().AtEnd()
	}
	opts := append(kafka.Opts(cfg, c.log),
		kgo.ConsumerGroup(cfg.Group),
		kgo.ConsumeTopics(cfg.Topics()...),
		kgo.ConsumeResetOffset(start),
		kgo.DisableAutoCommit(),
		kgo.Balancers(kgo.CooperativeStickyBalancer()),
		kgo.SessionTimeout(cfg.SessionTimeout),
		kgo.RebalanceTimeout(cfg.RebalanceTimeout),
		// Rebalances wait until the records of a poll are in batches, so
		// that a revocation always sees a consistent state. Nothing
		// between a poll and AllowRebalance waits on the database.
		kgo.BlockRebalanceOnPoll(),
		kgo.OnPartitionsCallbackBlocked(c.blocked),
		kgo.OnPartitionsAssigned(c.assigned),
		kgo.OnPartitionsRevoked(c.revoked),
		kgo.OnPartitionsLost(c.lost),
		kgo.AdjustFetchOffsetsFn(c.adjustOffsets),
		// Bound what the client buffers ahead of us: two fetches of at
		// most 4 MiB (512 KiB per partition). With the cap on open
		// batches, memory is set by the limits, not by the backlog;
		// larger fetches measured no faster (BENCHMARKS.md).
		kgo.FetchMaxBytes(int32(min(int64(cfg.MaxBufferedBytes)/4, 4<<20))),
		kgo.FetchMaxPartitionBytes(int32(min(int64(cfg.MaxBufferedBytes)/4, 512<<10))),
		kgo.MaxConcurrentFetches(2),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
	)
	if cfg.InstanceID != "" {
		// Static membership: a restart within the session timeout takes
		// its partitions back at once (README "Static group membership").
		opts = append(opts, kgo.InstanceID(cfg.InstanceID))
	}
	if c.opts.Registerer != nil {
		opts = append(opts, kgo.WithHooks(kprom.NewMetrics("idemsink_kafka", kprom.Registerer(c.opts.Registerer))))
	}
	return append(opts, c.opts.ExtraOpts...)
}

// blocked hears that a rebalance waits for the poll loop: the loop skips
// what can wait (catching Kafka's commits up) and lets it through.
func (c *Consumer) blocked(context.Context, *kgo.Client) {
	c.hurry.Store(true)
	c.wakeUp()
}

// assigned starts tracking new partitions. Their start offsets are set by
// adjustOffsets, which runs next.
func (c *Consumer) assigned(_ context.Context, cl *kgo.Client, tps map[string][]int32) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for topic, parts := range tps {
		for _, p := range parts {
			c.parts[record.TP{Topic: topic, Partition: p}] = newPartition()
		}
	}
	// A partition paused after a fence or a failure and then lost stays
	// paused in the client; coming back, it must be fetched again. The
	// callback's client, not c.cl: the first assignment can come before
	// Run has set c.cl.
	cl.ResumeFetchPartitions(tps)
	c.log.Info("partitions assigned", "event", EventAssigned, "partitions", fmtTPs(tps))
}

// adjustOffsets claims the assigned partitions in the ledger for this
// generation (fencing older writers) and starts each one from the further
// of Kafka's committed offset and the ledger's applied offset. The claim is
// retried until it succeeds or the session ends: the partitions cannot be
// read safely before it, and the group's rebalance does not wait for it.
func (c *Consumer) adjustOffsets(ctx context.Context, offsets map[string]map[int32]kgo.Offset) (map[string]map[int32]kgo.Offset, error) {
	c.mu.Lock() // see Run: c.cl is set
	member, gen := c.cl.GroupMetadata()
	c.mu.Unlock()
	var tps []record.TP
	for topic, parts := range offsets {
		for p := range parts {
			tps = append(tps, record.TP{Topic: topic, Partition: p})
		}
	}
	var ledger map[record.TP]sink.Offset
	err := retry.Do(ctx, c.cfg.ApplyTimeout, c.bo, func(ctx context.Context) error {
		var err error
		ledger, err = c.sink.Claim(ctx, c.cfg.Group, gen, member, tps)
		return err
	}, func(_ int, err error, wait time.Duration) {
		c.setDB(false)
		c.m.DBRetries.Inc()
		c.log.Warn("claim ledger rows failed; retrying", "event", EventClaimRetry, "err", err, "backoff", wait)
	})
	if err != nil {
		return nil, fmt.Errorf("claim ledger rows: %w", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, tp := range tps {
		ps := c.parts[tp]
		if ps == nil {
			ps = newPartition()
			c.parts[tp] = ps
		}
		kafka := offsets[tp.Topic][tp.Partition].EpochOffset().Offset
		from, skipped := ps.resume(ledger[tp].Applied, kafka)
		if from < 0 {
			continue
		}
		// Kafka's commit is behind (a crash between the two commits, or a
		// failed Kafka commit): the ledger wins.
		offsets[tp.Topic][tp.Partition] = kgo.NewOffset().At(from).WithEpoch(-1)
		c.resumeSkips.Add(skipped)
		c.m.Records.WithLabelValues(c.decoders[tp.Topic].Pipeline().Name, "skipped").Add(float64(skipped))
		c.log.Info("resuming from the ledger", "event", EventResumed, "topic", tp.Topic, "partition", tp.Partition,
			"kafka_committed", kafka, "ledger_next", from)
	}
	c.setDB(true)
	return offsets, nil
}

// revoked applies and commits what is held of the revoked partitions
// before they change hands, within ¾ of the rebalance timeout. A failure
// is not retried here (a conflict excepted): during an outage the batches
// are abandoned at once to the next owner, so that the rebalance, and the
// group, never wait on the database.
//
// The order is what keeps commits to owned partitions: c.owning is held
// throughout, so no commitKafka runs meanwhile; the partitions are
// forgotten under c.mu, so none runs after for them; and their own commit
// is sent, without c.mu, before the callback returns, while the group
// still counts them as ours.
func (c *Consumer) revoked(_ context.Context, _ *kgo.Client, tps map[string][]int32) {
	if len(tps) == 0 {
		return
	}
	c.owning.Lock()
	defer c.owning.Unlock()
	c.mu.Lock()
	c.fault(FaultDuringRebalance)
	gone := toSet(tps)
	in := func(tp record.TP) bool { return gone[tp] }
	if !c.handOver(in, c.now().Add(c.cfg.RebalanceTimeout*3/4), false) {
		c.log.Warn("revocation: abandoning batches to the next owner", "event", EventAbandoned, "partitions", fmtTPs(tps))
	}
	c.set.drop(in)
	offsets := c.toCommit(slices.Collect(maps.Keys(gone)))
	c.forget(gone)
	c.mu.Unlock()
	c.sendCommit(offsets)
	c.log.Info("partitions revoked", "event", EventRevoked, "partitions", fmtTPs(tps))
}

// lost drops the lost partitions' records: another member owns them now,
// and neither the ledger (fenced) nor Kafka would take our commit. A batch
// in flight loses them when its attempt returns.
func (c *Consumer) lost(_ context.Context, _ *kgo.Client, tps map[string][]int32) {
	c.owning.Lock() // a commit in flight finishes first; none starts for them after
	defer c.owning.Unlock()
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(tps) > 0 {
		// A crash while losing partitions is a crash during a rebalance
		// too, and the common one after a member is expelled: the torture
		// suite reaches this point far more often than a revocation.
		c.fault(FaultDuringRebalance)
	}
	gone := toSet(tps)
	c.set.drop(func(tp record.TP) bool { return gone[tp] })
	c.forget(gone)
	c.log.Warn("partitions lost", "event", EventLost, "partitions", fmtTPs(tps))
}

// handOver (c.mu held) applies every batch holding records of the gone
// partitions before deadline. It keeps c.mu while it waits for the
// connections: it flushes the batches, sends them and settles the outcomes
// (those of other batches too). With retryFailed, failed batches are
// retried after their backoff until the deadline; without, only conflicts
// are. It reports whether everything was applied; if not, no batch holding
// the partitions is left in flight. It commits nothing to Kafka: the caller
// does, once c.mu is released.
func (c *Consumer) handOver(gone func(record.TP) bool, deadline time.Time, retryFailed bool) bool {
	c.set.flushHolding(gone, c.now())
	for c.set.holding(gone) {
		if !retryFailed && !c.dbOK.Load() {
			break // an outage: do not wait for it
		}
		c.dispatch()
		wait := deadline
		if len(c.set.inflight()) == 0 {
			next := c.set.deadline(deadline)
			if !retryFailed || !next.Before(deadline) {
				break
			}
			wait = next
		}
		t := time.NewTimer(max(0, wait.Sub(c.now())))
		select {
		case o := <-c.done:
			t.Stop()
			c.settle(o)
			if o.err != nil && !retryFailed && sink.Classify(o.err) != sink.Conflict && holds(o.j.b, gone) {
				c.stopInFlight(gone)
				return false
			}
		case <-t.C:
			if !c.now().Before(deadline) {
				c.stopInFlight(gone)
				return false
			}
		}
	}
	if c.set.holding(gone) {
		c.stopInFlight(gone)
		return false
	}
	return true
}

// stopInFlight (c.mu held) cancels the attempts holding the gone partitions
// and waits for them to return; a cancel ends an attempt at once.
func (c *Consumer) stopInFlight(gone func(record.TP) bool) {
	for _, j := range c.set.inflight() {
		if holds(j.b, gone) {
			j.canceled = true
			j.cancel()
		}
	}
	for slices.ContainsFunc(c.set.inflight(), func(j *job) bool { return holds(j.b, gone) }) {
		c.settle(<-c.done)
	}
}

// forget (c.mu held) stops tracking the gone partitions.
func (c *Consumer) forget(gone map[record.TP]bool) {
	for tp := range gone {
		delete(c.parts, tp)
		c.m.Lag.DeleteLabelValues(tp.Topic, fmt.Sprint(tp.Partition))
	}
}

func toSet(tps map[string][]int32) map[record.TP]bool {
	out := map[record.TP]bool{}
	for t, ps := range tps {
		for _, p := range ps {
			out[record.TP{Topic: t, Partition: p}] = true
		}
	}
	return out
}

func fmtTPs(tps map[string][]int32) string {
	var parts []string
	for t, ps := range tps {
		slices.Sort(ps)
		parts = append(parts, fmt.Sprintf("%s%v", t, ps))
	}
	slices.Sort(parts)
	return strings.Join(parts, " ")
}
