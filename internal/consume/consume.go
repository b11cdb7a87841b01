// Package consume runs the Kafka side of idemsink: the consumer group
// session, assignment and revocation, backpressure, and offset commits that
// follow the PostgreSQL commit and never precede it.
//
// One goroutine polls, decodes and batches; apply_connections goroutines
// apply flushed batches, each on its own PostgreSQL connection. The commit
// protocol that ties them together is in protocol.go; the batches and
// their backlog in batches.go; a partition's positions in partition.go;
// assignment and revocation in rebalance.go; Kafka commits, pausing and
// the client's plumbing in kafka.go.
package consume

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/idemsink/idemsink/internal/batch"
	"github.com/idemsink/idemsink/internal/config"
	"github.com/idemsink/idemsink/internal/decode"
	"github.com/idemsink/idemsink/internal/kafka"
	"github.com/idemsink/idemsink/internal/metrics"
	"github.com/idemsink/idemsink/internal/record"
	"github.com/idemsink/idemsink/internal/retry"
	"github.com/idemsink/idemsink/internal/sink"
)

// Fault points of the consumer (see internal/fault).
const (
	FaultAfterPGCommit   = "after-pg-commit"
	FaultDuringRebalance = "during-rebalance"
	// FaultBetweenLanes is hit after a batch's PostgreSQL commit while
	// another lane's transaction is still open.
	FaultBetweenLanes = "between-lanes"
)

// Events are the values of the "event" attribute of the consumer's log
// records: tests and operators match on them, not on the message text.
const (
	EventApplied   = "batch_applied"
	EventFenced    = "batch_fenced"
	EventRetry     = "apply_retry"
	EventStuck     = "batch_stuck"
	EventAbandoned = "batch_abandoned"
	// EventResync: a fenced partition is read again from the ledger.
	EventResync       = "partition_resync"
	EventCommitFailed = "kafka_commit_failed"
	EventDeadLetter   = "dead_letter"
	EventAssigned     = "partitions_assigned"
	EventRevoked      = "partitions_revoked"
	EventLost         = "partitions_lost"
	EventResumed      = "resumed_from_ledger"
	EventClaimRetry   = "claim_retry"
	// EventRegistryRetry: a record could not be decoded because the
	// Schema Registry is out; its partition is read again from it later.
	EventRegistryRetry = "schema_registry_retry"
	// EventRegistryResume: a partition held back for the Schema Registry
	// is read again from the held-back record.
	EventRegistryResume = "schema_registry_resume"
)

// Options configures a Consumer.
type Options struct {
	Config  *config.Config
	Sink    *sink.Sink
	Logger  *slog.Logger
	Metrics *metrics.Metrics
	// Registerer receives the Kafka client's metrics; nil skips them.
	Registerer prometheus.Registerer
	// Fault, if set, is called at each named fault point.
	Fault func(point string)
	// OnBatch, if set, is called after each batch is applied and committed.
	OnBatch func(*batch.Unit, sink.Result)
	// Now is the clock for batch ages and retry times; nil means time.Now.
	Now func() time.Time
	// ExtraOpts are appended to the Kafka client options (tests use them).
	ExtraOpts []kgo.Opt
	// NoKafkaCommit leaves Kafka's committed offsets alone, as a crash
	// between the PostgreSQL and Kafka commits would; the ledger alone
	// then carries the position. The demo uses it.
	NoKafkaCommit bool
}

// Consumer is one member of the consumer group.
type Consumer struct {
	cfg     *config.Config
	sink    *sink.Sink
	log     *slog.Logger
	m       *metrics.Metrics
	fault   func(string)
	onBatch func(*batch.Unit, sink.Result)
	now     func() time.Time
	opts    Options
	bo      retry.Backoff
	cl      *kgo.Client
	client  atomic.Pointer[kgo.Client] // cl, for Ready on other goroutines
	// base is the context of apply attempts and commits: it outlives a
	// canceled Run, so that shutdown can finish what is in flight.
	base context.Context

	// What Ready reads, on any goroutine. dbOK is false from a failed
	// database operation until the next one succeeds; waiting is what
	// waitsOnOutage last computed from the batches and partitions (see
	// publish).
	dbOK    atomic.Bool
	waiting atomic.Bool
	stopped atomic.Bool
	// resumeSkips counts records passed over because the ledger had
	// applied them while Kafka's committed offset lagged behind.
	resumeSkips atomic.Int64
	// hurry is set when a rebalance waits for the poll loop.
	hurry atomic.Bool

	decoders map[string]*decode.Decoder // by topic
	minBatch int                        // the smallest max_records of any pipeline

	jobs chan attempt   // to the connections
	done chan outcome   // from them
	wake chan struct{}  // an outcome is waiting, or a rebalance
	conn sync.WaitGroup // the connections

	// owning is held while the set of owned partitions changes (the
	// rebalance callbacks, shutdown) and while a Kafka commit is sent, so
	// that a commit never names a partition this member has handed over
	// (see commitKafka). Taken before mu, never after it.
	owning sync.Mutex

	// mu guards the fields below. The poll loop holds it while it
	// settles, batches and dispatches; the rebalance callbacks and
	// shutdown hold it while they hand batches over. Nothing that waits on
	// the network runs under it, except a hand-over waiting for the
	// connections' outcomes. Methods that need it say "(c.mu held)" on
	// their first comment line.
	mu      sync.Mutex
	set     *batches                 // guarded by mu
	parts   map[record.TP]*partition // guarded by mu: the owned partitions
	closing bool                     // guarded by mu: the connections are gone, dispatch nothing
}

// attempt is one batch sent to a connection.
type attempt struct {
	j   *job
	ctx context.Context
}

// New validates nothing (the config is validated on load) and connects
// nothing; Run does.
func New(opts Options) *Consumer {
	cfg := opts.Config
	c := &Consumer{
		cfg: cfg, sink: opts.Sink, log: opts.Logger, m: opts.Metrics, fault: opts.Fault,
		onBatch: opts.OnBatch, now: opts.Now, opts: opts,
		bo:       retry.Backoff{Base: cfg.RetryBackoff, Limit: cfg.RetryBackoffMax},
		decoders: map[string]*decode.Decoder{},
		set:      newBatches(max(1, cfg.ApplyConnections)),
		parts:    map[record.TP]*partition{},
		wake:     make(chan struct{}, 1),
	}
	c.jobs = make(chan attempt, c.set.lanes)
	c.done = make(chan outcome, c.set.lanes)
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	if c.m == nil {
		c.m = metrics.New(nil)
	}
	if c.fault == nil {
		c.fault = func(string) {}
	}
	if c.now == nil {
		c.now = time.Now
	}
	c.minBatch = cfg.MaxBufferedRecords
	for i := range cfg.Pipelines {
		p := &cfg.Pipelines[i]
		c.minBatch = min(c.minBatch, p.Batch.MaxRecords)
		d := decode.NewDecoder(p)
		// A Schema Registry found out is asked again after the backoff,
		// not by every held-back partition or record meanwhile.
		d.SetRegistryBackoff(cfg.RetryBackoff, cfg.RetryBackoffMax)
		for _, t := range p.Topics {
			c.decoders[t] = d
		}
	}
	return c
}

// Ready reports whether the consumer is in its group, its last database
// operation succeeded, and nothing waits on an outage (see waitsOnOutage). A
// member that owns no partitions (more replicas than partitions) is
// ready: it is a healthy standby. It is the one place readiness is
// computed; it never takes c.mu, which a hand-over holds for up to the
// rebalance timeout, so /readyz answers at once.
func (c *Consumer) Ready() bool {
	cl := c.client.Load()
	if cl == nil || c.stopped.Load() || !c.dbOK.Load() || c.waiting.Load() {
		return false
	}
	_, gen := cl.GroupMetadata()
	return gen > 0
}

// waitsOnOutage (c.mu held) reports, from the batches and partitions,
// whether something waits on an outage: a batch for a retry, or a partition
// held back for the Schema Registry.
func (c *Consumer) waitsOnOutage() bool {
	if _, retrying := c.set.pending(); retrying {
		return true
	}
	for _, ps := range c.parts {
		if ps.registryHold >= 0 {
			return true
		}
	}
	return false
}

// publish (c.mu held) stores what waitsOnOutage computes for Ready and sets
// the readiness gauge.
func (c *Consumer) publish() {
	c.waiting.Store(c.waitsOnOutage())
	c.readyGauge()
}

// setDB records the outcome of a database operation. Safe without c.mu.
func (c *Consumer) setDB(ok bool) {
	c.dbOK.Store(ok)
	c.readyGauge()
}

func (c *Consumer) readyGauge() {
	if c.Ready() {
		c.m.Ready.Set(1)
	} else {
		c.m.Ready.Set(0)
	}
}

// SkippedOnResume is how many records this consumer passed over on
// assignment because the ledger was ahead of Kafka's committed offset.
func (c *Consumer) SkippedOnResume() int64 { return c.resumeSkips.Load() }

// Applied returns the ledger's applied offset of each owned partition.
func (c *Consumer) Applied() map[record.TP]int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[record.TP]int64, len(c.parts))
	for tp, p := range c.parts {
		out[tp] = p.applied
	}
	return out
}

// CaughtUp reports whether this member owns every partition of ends that
// has records and has applied it to its end (sink.AppliedToEnd).
func (c *Consumer) CaughtUp(ends map[record.TP]int64) bool {
	return sink.AppliedToEnd(c.Applied(), ends)
}

// Run consumes until ctx is canceled, then flushes what it holds within
// the shutdown timeout, commits, and leaves the group.
func (c *Consumer) Run(ctx context.Context) error {
	// The group's callbacks take c.mu first: holding it until c.cl is set
	// keeps them from running before.
	c.mu.Lock()
	cl, err := kgo.NewClient(c.clientOpts()...)
	if err != nil {
		c.mu.Unlock()
		return fmt.Errorf("kafka client: %w", err)
	}
	c.cl = cl
	c.client.Store(cl)
	c.mu.Unlock()
	c.base = context.WithoutCancel(ctx)
	if err := c.sink.Ping(ctx); err != nil {
		c.log.Warn("database not answering yet; consuming will wait for it", "err", err)
	} else {
		c.dbOK.Store(true)
	}
	for range c.set.lanes {
		c.conn.Go(c.connection)
	}
	defer func() {
		c.stopped.Store(true)
		c.m.Ready.Set(0)
		// Close leaves the group; the revoke callback runs first and
		// finds nothing left to hand over.
		cl.Close()
	}()
	err = c.loop(ctx)
	c.shutdown()
	return err
}

// connection applies the batches sent to it, one at a time.
func (c *Consumer) connection() {
	for a := range c.jobs {
		res, err := c.sink.Apply(a.ctx, a.j.b, a.j.commit)
		c.done <- outcome{j: a.j, res: res, err: err}
		c.wakeUp()
	}
}

func (c *Consumer) wakeUp() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// shutdown stops fetching and finishes what is held within the shutdown
// timeout: what cannot be finished is abandoned, uncommitted anywhere, to
// whoever owns the partitions next.
func (c *Consumer) shutdown() {
	c.cl.PauseFetchTopics(c.cfg.Topics()...)
	c.owning.Lock()
	defer c.owning.Unlock()
	c.mu.Lock()
	all := func(record.TP) bool { return true }
	if !c.handOver(all, c.now().Add(c.cfg.ShutdownTimeout), true) {
		c.log.Warn("shutdown: abandoning batches", "event", EventAbandoned, "records", c.set.records)
		c.set.drop(all)
	}
	c.closing = true
	close(c.jobs)
	c.conn.Wait()
	offsets := c.toCommit(c.owned())
	c.mu.Unlock()
	c.sendCommit(offsets)
}

func (c *Consumer) loop(ctx context.Context) error {
	for {
		if ctx.Err() != nil {
			return nil //nolint:nilerr // cancellation is the normal way to stop
		}
		c.mu.Lock()
		c.drain()
		c.flush()
		c.dispatch()
		// Also when nothing is polled (at the cap): a stuck batch's age
		// must keep growing on the gauge.
		c.gauges()
		c.publish()
		deadline := c.set.deadline(c.now().Add(time.Second))
		for _, ps := range c.parts {
			if at, ok := ps.stopped(); ok && at.Before(deadline) {
				deadline = at
			}
		}
		room := c.room()
		c.mu.Unlock()
		// What the batches just settled applied goes to Kafka now, not
		// under c.mu (see commitKafka).
		c.commitKafka()

		pctx, cancel := context.WithDeadline(ctx, deadline)
		stop := c.wakeOn(pctx, cancel)
		if room == 0 {
			// Backpressure: the backlog is at its cap; room comes back
			// as batches apply.
			<-pctx.Done()
			stop()
			cancel()
			continue
		}
		fetches := c.cl.PollRecords(pctx, room)
		stop()
		cancel()
		if fetches.IsClientClosed() {
			return nil
		}
		c.turn(fetches)
		c.cl.AllowRebalance()
	}
}

// wakeOn cancels ctx when a connection or a rebalance wakes the loop; the
// returned stop ends the watch.
func (c *Consumer) wakeOn(ctx context.Context, cancel context.CancelFunc) (stop func()) {
	quit := make(chan struct{})
	go func() {
		select {
		case <-c.wake:
			cancel()
		case <-ctx.Done():
		case <-quit:
		}
	}()
	return func() { close(quit) }
}

// room (c.mu held) is how many records the next poll may take: none while
// the backlog is at a cap, and no more than the smallest batch holds, so
// that a turn of the loop stays short.
func (c *Consumer) room() int {
	if int64(c.set.bytes) >= int64(c.cfg.MaxBufferedBytes) {
		return 0
	}
	return max(0, min(c.cfg.MaxBufferedRecords-c.set.records, c.minBatch))
}

// turn handles one poll's records, inside the rebalance window: no waiting
// on the database here, and the Kafka commit after c.mu is released.
func (c *Consumer) turn(fetches kgo.Fetches) {
	fetches.EachError(func(topic string, part int32, err error) {
		if !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
			c.log.Warn("fetch error", "topic", topic, "partition", part, "err", err)
		}
	})
	c.mu.Lock()
	fetches.EachPartition(func(p kgo.FetchTopicPartition) {
		if ps := c.parts[record.TP{Topic: p.Topic, Partition: p.Partition}]; ps != nil && p.HighWatermark >= 0 {
			ps.end = p.HighWatermark
		}
	})
	fetches.EachRecord(c.add)
	c.drain()
	c.flush()
	c.dispatch()
	c.resync()
	c.gauges()
	c.publish()
	c.mu.Unlock()
	if !c.hurry.Swap(false) {
		// Catch Kafka up with the ledger: after batches applied, after
		// resuming from the ledger, or after a commit that failed.
		c.commitKafka()
	}
}

// flush (c.mu held) sends the units that are due to their lanes: those past their
// linger in idle lanes, and at the backlog caps the open unit of each idle
// lane (open units alone can fill the backlog when max_buffered_records is
// below lanes × pipelines × max_records).
func (c *Consumer) flush() {
	now := c.now()
	c.set.flushDue(now, false)
	if c.room() == 0 {
		c.set.flushIdle(now)
	}
}

// drain (c.mu held) settles every attempt that has returned.
func (c *Consumer) drain() {
	for {
		select {
		case o := <-c.done:
			c.settle(o)
		default:
			return
		}
	}
}

// add (c.mu held) puts one record into the open unit of its pipeline and
// lane, in the batch of its target date.
func (c *Consumer) add(r *kgo.Record) {
	tp := record.TP{Topic: r.Topic, Partition: r.Partition}
	ps := c.parts[tp]
	if ps == nil || ps.state != reading {
		// Revoked or lost after it was fetched (its new owner reads it
		// again), or fetched from before a fence's reset.
		return
	}
	dec := c.decoders[r.Topic]
	if !ps.take(r.Offset) {
		// The ledger has it already: a redelivery.
		c.m.Records.WithLabelValues(dec.Pipeline().Name, "skipped").Inc()
		return
	}
	pos := record.Position{TP: tp, Offset: r.Offset}
	row, date, err := dec.Decode(r.Key, r.Value, pos)
	if decode.Unavailable(err) {
		// A Schema Registry outage is an outage, not bad input: the
		// partition stops at this record and reads it again after a
		// backoff; what it held from before applies meanwhile.
		c.log.Warn("schema registry unavailable; reading the partition again from this record after a backoff",
			"event", EventRegistryRetry, "topic", tp.Topic, "partition", tp.Partition, "offset", r.Offset, "err", err)
		c.m.RegistryRetries.Inc()
		ps.holdBack(r.Offset, c.now(), c.bo)
		c.cl.PauseFetchPartitions(map[string][]int32{tp.Topic: {tp.Partition}})
		return
	}
	ps.decoded(r.Offset)
	if err == nil {
		c.set.add(dec.Pipeline(), tp, c.now(), func(u *batch.Unit) { u.Add(date, row) })
		return
	}
	dl := kafka.DeadLetter(r, err) // as replay and dlq replay make them
	c.log.Warn("dead-lettering record", "event", EventDeadLetter, "topic", tp.Topic, "partition", tp.Partition, "offset", r.Offset, "reason", dl.Reason)
	c.set.add(dec.Pipeline(), tp, c.now(), func(u *batch.Unit) { u.AddDead(record.Date{}, dl) })
}

// gauges (c.mu held) updates the backlog, lag and pending age metrics.
func (c *Consumer) gauges() {
	c.m.Buffered.Set(float64(c.set.records))
	for tp, ps := range c.parts {
		if lag := ps.lag(); lag >= 0 {
			c.m.Lag.WithLabelValues(tp.Topic, fmt.Sprint(tp.Partition)).Set(float64(lag))
		}
	}
	oldest, _ := c.set.pending()
	now := c.now()
	for i := range c.cfg.Pipelines {
		name := c.cfg.Pipelines[i].Name
		age := 0.0
		if t, ok := oldest[name]; ok {
			age = now.Sub(t).Seconds()
		}
		c.m.PendingBatchAge.WithLabelValues(name).Set(age)
	}
}

// owned (c.mu held) lists the owned partitions.
func (c *Consumer) owned() []record.TP {
	out := make([]record.TP, 0, len(c.parts))
	for tp := range c.parts {
		out = append(out, tp)
	}
	return out
}
