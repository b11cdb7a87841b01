// Package consume runs the Kafka side of idemsink: the consumer group
// session, assignment and revocation, backpressure, and offset commits that
// follow the PostgreSQL commit and never precede it.
package consume

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/plugin/kprom"

	"github.com/idemsink/idemsink/internal/batch"
	"github.com/idemsink/idemsink/internal/config"
	"github.com/idemsink/idemsink/internal/metrics"
	"github.com/idemsink/idemsink/internal/sink"
)

// Fault points of the consumer (see internal/fault).
const (
	FaultAfterPGCommit   = "after-pg-commit"
	FaultDuringRebalance = "during-rebalance"
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
	OnBatch func(*batch.Batch, sink.Result)
	// Now is the clock for batch ages; nil means time.Now.
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
	onBatch func(*batch.Batch, sink.Result)
	now     func() time.Time
	opts    Options
	cl      *kgo.Client
	// dbOK is false from a failed database operation until the next one
	// succeeds; Ready combines it with group membership.
	dbOK    atomic.Bool
	stopped atomic.Bool
	// resumeSkips counts records passed over because the ledger had
	// applied them while Kafka's committed offset lagged behind.
	resumeSkips atomic.Int64

	decoders map[string]*batch.Decoder // by topic
	minBatch int                       // the smallest max_records of any pipeline

	// mu guards everything below. The poll loop holds it while it adds
	// records and flushes; the rebalance callbacks hold it while they
	// flush or drop a partition's records.
	mu       sync.Mutex
	open     map[batchKey]*batch.Batch
	parts    map[batch.TP]*partition
	buffered int
	bytes    int
}

type batchKey struct {
	pipeline string
	date     batch.Date
}

// partition is what the consumer knows of one owned partition.
type partition struct {
	seen      int64 // highest offset taken from Kafka
	applied   int64 // end of the contiguous applied prefix in the ledger
	committed int64 // next offset committed to Kafka
	// resync is set when the partition's records were dropped (a fenced
	// batch) while it stays assigned: its fetch position must go back to
	// the ledger's, and records fetched before that are ignored.
	resync bool
	// resyncAt delays the restart after repeated fences: a writer that a
	// newer generation fences is about to learn from the group that it
	// lost the partition; until then it must not spin on the database.
	resyncAt time.Time
	fences   int
}

// New validates nothing (the config is validated on load) and connects
// nothing; Run does.
func New(opts Options) *Consumer {
	c := &Consumer{
		cfg: opts.Config, sink: opts.Sink, log: opts.Logger, m: opts.Metrics, fault: opts.Fault,
		onBatch: opts.OnBatch, now: opts.Now, opts: opts,
		decoders: map[string]*batch.Decoder{},
		open:     map[batchKey]*batch.Batch{},
		parts:    map[batch.TP]*partition{},
	}
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
	c.minBatch = c.cfg.MaxBufferedRecords
	for i := range c.cfg.Pipelines {
		p := &c.cfg.Pipelines[i]
		c.minBatch = min(c.minBatch, p.Batch.MaxRecords)
		d := batch.NewDecoder(p)
		for _, t := range p.Topics {
			c.decoders[t] = d
		}
	}
	return c
}

// Ready reports whether the consumer is in its group and its last database
// operation succeeded. A member that owns no partitions (more replicas than
// partitions) is ready: it is a healthy standby.
func (c *Consumer) Ready() bool {
	if c.stopped.Load() || !c.dbOK.Load() || c.cl == nil {
		return false
	}
	_, gen := c.cl.GroupMetadata()
	return gen > 0
}

func (c *Consumer) setDB(ok bool) {
	c.dbOK.Store(ok)
	c.updateReady()
}

func (c *Consumer) updateReady() {
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
func (c *Consumer) Applied() map[batch.TP]int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[batch.TP]int64, len(c.parts))
	for tp, p := range c.parts {
		out[tp] = p.applied
	}
	return out
}

func (c *Consumer) clientOpts() []kgo.Opt {
	cfg := c.cfg
	start := kgo.NewOffset().AtStart()
	if cfg.StartOffset == "latest" {
		start = kgo.NewOffset().AtEnd()
	}
	opts := []kgo.Opt{
		kgo.SeedBrokers(cfg.Brokers...),
		kgo.ConsumerGroup(cfg.Group),
		kgo.ConsumeTopics(cfg.Topics()...),
		kgo.ConsumeResetOffset(start),
		kgo.DisableAutoCommit(),
		kgo.Balancers(kgo.CooperativeStickyBalancer()),
		kgo.SessionTimeout(cfg.SessionTimeout),
		kgo.RebalanceTimeout(cfg.RebalanceTimeout),
		// Rebalances wait until the records of a poll are in batches, so
		// that a revocation always sees a consistent state.
		kgo.BlockRebalanceOnPoll(),
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
		kgo.WithLogger(kgoLogger{c.log}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
	}
	if cfg.SASL != nil {
		opts = append(opts, saslOpt(cfg.SASL))
	}
	if cfg.TLS {
		opts = append(opts, kgo.DialTLS())
	}
	if c.opts.Registerer != nil {
		opts = append(opts, kgo.WithHooks(kprom.NewMetrics("idemsink_kafka", kprom.Registerer(c.opts.Registerer))))
	}
	return append(opts, c.opts.ExtraOpts...)
}

// Run consumes until ctx is canceled, then flushes what it holds within
// the shutdown timeout, commits, and leaves the group.
func (c *Consumer) Run(ctx context.Context) error {
	cl, err := kgo.NewClient(c.clientOpts()...)
	if err != nil {
		return fmt.Errorf("kafka client: %w", err)
	}
	c.cl = cl
	if err := c.sink.Ping(ctx); err != nil {
		c.log.Warn("database not answering yet; consuming will wait for it", "err", err)
	} else {
		c.dbOK.Store(true)
	}
	defer func() {
		c.stopped.Store(true)
		c.m.Ready.Set(0)
		// Close leaves the group; the revoke callback runs first and
		// flushes whatever is still open.
		cl.Close()
	}()
	err = c.loop(ctx)

	// Shutdown: stop fetching, finish what is in flight within the
	// deadline, and commit it. What cannot be finished is abandoned; it
	// is redelivered to whoever owns the partition next.
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.cfg.ShutdownTimeout)
	defer cancel()
	cl.PauseFetchTopics(c.cfg.Topics()...)
	c.mu.Lock()
	if ferr := c.flushAll(sctx); ferr != nil {
		c.log.Warn("shutdown: abandoning in-flight batches", "batches", len(c.open), "records", c.buffered, "err", ferr)
		// Nothing of them is committed anywhere: the next owner of the
		// partitions reads them again. Dropping them here keeps the
		// revocation on Close from retrying past the deadline.
		c.open, c.buffered, c.bytes = map[batchKey]*batch.Batch{}, 0, 0
	}
	c.mu.Unlock()
	return err
}

func (c *Consumer) loop(ctx context.Context) error {
	for {
		if ctx.Err() != nil {
			return nil //nolint:nilerr // cancellation is the normal way to stop
		}
		c.mu.Lock()
		deadline := c.now().Add(time.Second)
		for _, b := range c.open {
			if d := b.Deadline(); d.Before(deadline) {
				deadline = d
			}
		}
		for _, ps := range c.parts {
			if ps.resync && ps.resyncAt.Before(deadline) {
				deadline = ps.resyncAt
			}
		}
		// A poll takes no more than the smallest batch holds, so that
		// batches flush at max_records rather than at whatever one poll
		// happened to bring.
		room := max(1, min(c.cfg.MaxBufferedRecords-c.buffered, c.minBatch))
		c.mu.Unlock()

		pctx, cancel := context.WithDeadline(ctx, deadline)
		fetches := c.cl.PollRecords(pctx, room)
		cancel()
		if fetches.IsClientClosed() {
			return nil
		}
		fetches.EachError(func(topic string, part int32, err error) {
			if !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
				c.log.Warn("fetch error", "topic", topic, "partition", part, "err", err)
			}
		})
		c.mu.Lock()
		fetches.EachRecord(c.add)
		err := c.flushReady(ctx)
		c.resync()
		if err == nil {
			c.catchUpCommits(ctx)
		}
		c.m.Buffered.Set(float64(c.buffered))
		c.updateReady()
		c.mu.Unlock()
		c.cl.AllowRebalance()
		if err != nil {
			if ctx.Err() != nil {
				return nil //nolint:nilerr // the flush was cut short by shutdown, which flushes again
			}
			return err
		}
	}
}

// add puts one record into the batch of its pipeline and target date.
func (c *Consumer) add(r *kgo.Record) {
	tp := batch.TP{Topic: r.Topic, Partition: r.Partition}
	ps := c.parts[tp]
	if ps == nil {
		// The partition was revoked or lost after this record was
		// fetched; its new owner reads it again.
		return
	}
	if ps.resync {
		return // fetched from before the reset; read again from the ledger's position
	}
	if r.Offset <= ps.applied {
		// The ledger has it already: a redelivery.
		ps.seen = max(ps.seen, r.Offset)
		c.m.Records.WithLabelValues(c.decoders[r.Topic].Pipeline().Name, "skipped").Inc()
		return
	}
	dec := c.decoders[r.Topic]
	pos := batch.Position{TP: tp, Offset: r.Offset}
	row, date, err := dec.Decode(r.Key, r.Value, pos)
	var b *batch.Batch
	if batch.Unavailable(err) {
		// A Schema Registry outage is an outage, not bad input: hold the
		// partition and decode it again from the ledger after a backoff.
		c.log.Warn("schema registry unavailable; reading the partition again after a backoff",
			"topic", tp.Topic, "partition", tp.Partition, "offset", r.Offset, "err", err)
		c.m.RegistryRetries.Inc()
		c.rewind(map[batch.TP]bool{tp: true}, nil)
		return
	}
	if err != nil {
		b = c.batchFor(dec.Pipeline(), batch.Date{})
		dl := batch.DeadLetter{Pos: pos, Key: r.Key, Value: r.Value, Reason: err.Error()}
		if len(r.Headers) > 0 {
			dl.Headers = map[string]string{}
			for _, h := range r.Headers {
				dl.Headers[h.Key] = string(h.Value)
			}
		}
		c.log.Warn("dead-lettering record", "topic", tp.Topic, "partition", tp.Partition, "offset", r.Offset, "reason", dl.Reason)
		b.AddDead(dl)
	} else {
		b = c.batchFor(dec.Pipeline(), date)
		b.Add(row)
	}
	ps.seen = max(ps.seen, r.Offset)
	c.buffered++
	c.bytes += len(r.Key) + len(r.Value)
}

func (c *Consumer) batchFor(p *config.Pipeline, d batch.Date) *batch.Batch {
	k := batchKey{p.Name, d}
	b := c.open[k]
	if b == nil {
		b = batch.New(p, d, c.now())
		c.open[k] = b
	}
	return b
}

// flushReady flushes full and lingering batches, then the oldest ones
// until the buffered records and bytes are back under their caps.
func (c *Consumer) flushReady(ctx context.Context) error {
	now := c.now()
	for _, b := range c.sorted() {
		if b.Full() || b.Due(now) {
			if err := c.flush(ctx, b); err != nil {
				return err
			}
		}
	}
	for c.buffered >= c.cfg.MaxBufferedRecords || int64(c.bytes) >= int64(c.cfg.MaxBufferedBytes) {
		open := c.sorted()
		if len(open) == 0 {
			break
		}
		if err := c.flush(ctx, open[0]); err != nil {
			return err
		}
	}
	return nil
}

func (c *Consumer) flushAll(ctx context.Context) error {
	for _, b := range c.sorted() {
		if err := c.flush(ctx, b); err != nil {
			return err
		}
	}
	return nil
}

// sorted returns the open batches, oldest first.
func (c *Consumer) sorted() []*batch.Batch {
	out := make([]*batch.Batch, 0, len(c.open))
	for _, b := range c.open {
		out = append(out, b)
	}
	slices.SortFunc(out, func(a, b *batch.Batch) int {
		if n := a.Opened.Compare(b.Opened); n != 0 {
			return n
		}
		if a.Pipeline.Name != b.Pipeline.Name {
			return strings.Compare(a.Pipeline.Name, b.Pipeline.Name)
		}
		return strings.Compare(a.Date.String(), b.Date.String())
	})
	return out
}

func (c *Consumer) remove(b *batch.Batch) {
	delete(c.open, batchKey{b.Pipeline.Name, b.Date})
	c.buffered -= b.Records
	c.bytes -= b.Bytes
}

// flush applies b, retrying outages with backoff until ctx ends, then
// commits the partitions' new positions to Kafka. A fenced batch is
// dropped: a newer generation owns its partitions.
func (c *Consumer) flush(ctx context.Context, b *batch.Batch) error {
	commit := sink.Commit{Group: c.cfg.Group, Applied: c.watermarks(b)}
	log := c.log.With("pipeline", b.Pipeline.Name, "date", b.Date.String())
	backoff := c.cfg.RetryBackoff
	for {
		commit.Member, commit.Generation = c.cl.GroupMetadata()
		res, err := c.sink.Apply(ctx, b, commit)
		if err == nil {
			c.remove(b)
			c.setDB(true)
			log.Info("batch applied", "batch_id", fmt.Sprintf("%x", res.BatchID), "records", res.Records,
				"inserted", res.Inserted, "updated", res.Updated, "unchanged", res.Unchanged, "stale", res.Stale,
				"superseded", res.Superseded, "skipped", res.Skipped, "dead_lettered", res.DeadLettered)
			for tp, a := range commit.Applied {
				if ps := c.parts[tp]; ps != nil {
					ps.applied = max(ps.applied, a)
					ps.fences = 0
				}
				c.m.AppliedOffset.WithLabelValues(tp.Topic, fmt.Sprint(tp.Partition)).Set(float64(a))
			}
			c.fault(FaultAfterPGCommit)
			c.commitKafka(ctx, commit.Applied)
			if c.onBatch != nil {
				c.onBatch(b, res)
			}
			return nil
		}
		if errors.Is(err, sink.ErrFenced) {
			log.Warn("batch fenced; dropping it and reading its partitions again from the ledger", "err", err)
			c.remove(b)
			c.reset(b, res.Ledger)
			return nil
		}
		if !sink.Transient(err) {
			return fmt.Errorf("apply batch %s/%s: %w", b.Pipeline.Name, b.Date, err)
		}
		c.setDB(false)
		c.m.DBRetries.Inc()
		log.Warn("apply failed; retrying", "err", err, "backoff", backoff)
		select {
		case <-ctx.Done():
			return fmt.Errorf("apply batch %s/%s: %w (last error: %w)", b.Pipeline.Name, b.Date, ctx.Err(), err)
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, c.cfg.RetryBackoffMax)
	}
}

// reset forgets everything held from the partitions of a dropped batch, so
// that no watermark can pass records that were never applied: the other
// open batches lose those partitions' records, the positions fall back to
// the ledger's, and fetching restarts there (see resync).
func (c *Consumer) reset(b *batch.Batch, ledger map[batch.TP]int64) {
	gone := map[batch.TP]bool{}
	for _, r := range b.Ranges() {
		gone[batch.TP{Topic: r.Topic, Partition: r.Partition}] = true
	}
	c.rewind(gone, ledger)
}

// rewind forgets what is held from the partitions and reads them again from
// the ledger's position after a backoff that doubles while it repeats.
func (c *Consumer) rewind(gone map[batch.TP]bool, ledger map[batch.TP]int64) {
	for _, o := range c.sorted() {
		if holds(o, gone) {
			c.drop(o, gone)
		}
	}
	pause := map[string][]int32{}
	for tp := range gone {
		ps := c.parts[tp]
		if ps == nil {
			continue
		}
		if a, ok := ledger[tp]; ok {
			ps.applied = a
		}
		ps.seen, ps.resync = ps.applied, true
		ps.fences++
		wait := c.cfg.RetryBackoff << min(ps.fences-1, 20)
		ps.resyncAt = c.now().Add(min(wait, c.cfg.RetryBackoffMax))
		pause[tp.Topic] = append(pause[tp.Topic], tp.Partition)
	}
	c.cl.PauseFetchPartitions(pause)
}

// resync moves the fetch position of reset partitions back to the ledger's.
// It runs on the polling goroutine before rebalances are allowed, as
// SetOffsets requires.
func (c *Consumer) resync() {
	offsets := map[string]map[int32]kgo.EpochOffset{}
	resume := map[string][]int32{}
	now := c.now()
	for tp, ps := range c.parts {
		if !ps.resync || now.Before(ps.resyncAt) {
			continue
		}
		ps.resync = false
		resume[tp.Topic] = append(resume[tp.Topic], tp.Partition)
		if offsets[tp.Topic] == nil {
			offsets[tp.Topic] = map[int32]kgo.EpochOffset{}
		}
		offsets[tp.Topic][tp.Partition] = kgo.EpochOffset{Epoch: -1, Offset: ps.applied + 1}
		c.log.Info("reading partition again from the ledger", "topic", tp.Topic, "partition", tp.Partition, "offset", ps.applied+1)
	}
	if len(offsets) > 0 {
		c.cl.SetOffsets(offsets)
		c.cl.ResumeFetchPartitions(resume)
	}
}

// watermarks computes, for each partition of b, the end of the contiguous
// applied prefix once b is applied: just below the first offset any other
// open batch holds from it, or the highest offset seen if none does.
func (c *Consumer) watermarks(b *batch.Batch) map[batch.TP]int64 {
	out := map[batch.TP]int64{}
	for _, r := range b.Ranges() {
		tp := batch.TP{Topic: r.Topic, Partition: r.Partition}
		ps := c.parts[tp]
		if ps == nil {
			continue
		}
		w := ps.seen
		for _, o := range c.open {
			if o == b {
				continue
			}
			if first, ok := o.First(tp); ok {
				w = min(w, first-1)
			}
		}
		out[tp] = w
	}
	return out
}

// commitKafka commits the next offset after each applied prefix, only for
// partitions this member still owns and only forward. A failed commit
// loses nothing: the ledger holds the position and wins on reassignment.
func (c *Consumer) commitKafka(ctx context.Context, applied map[batch.TP]int64) {
	if c.opts.NoKafkaCommit {
		return
	}
	offsets := map[string]map[int32]kgo.EpochOffset{}
	for tp, a := range applied {
		ps := c.parts[tp]
		if ps == nil || a+1 <= ps.committed {
			continue
		}
		if offsets[tp.Topic] == nil {
			offsets[tp.Topic] = map[int32]kgo.EpochOffset{}
		}
		offsets[tp.Topic][tp.Partition] = kgo.EpochOffset{Epoch: -1, Offset: a + 1}
	}
	if len(offsets) == 0 {
		return
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	var commitErr error
	c.cl.CommitOffsetsSync(cctx, offsets, func(_ *kgo.Client, _ *kmsgOffsetCommitRequest, resp *kmsgOffsetCommitResponse, err error) {
		if err != nil {
			commitErr = err
			return
		}
		for _, t := range resp.Topics {
			for _, p := range t.Partitions {
				tp := batch.TP{Topic: t.Topic, Partition: p.Partition}
				if kerrErr := errorForCode(p.ErrorCode); kerrErr != nil {
					commitErr = fmt.Errorf("%s: %w", tp, kerrErr)
					continue
				}
				if ps := c.parts[tp]; ps != nil {
					ps.committed = max(ps.committed, offsets[t.Topic][p.Partition].Offset)
				}
			}
		}
	})
	if commitErr != nil {
		c.m.KafkaCommitErrors.Inc()
		c.log.Warn("kafka offset commit failed; the ledger keeps the position", "err", commitErr)
	}
}

// catchUpCommits commits the ledger's position to Kafka for partitions
// whose Kafka commit lags it: after resuming from the ledger, or after a
// commit that failed.
func (c *Consumer) catchUpCommits(ctx context.Context) {
	lag := map[batch.TP]int64{}
	for tp, ps := range c.parts {
		if ps.applied >= 0 && ps.applied+1 > ps.committed {
			lag[tp] = ps.applied
		}
	}
	if len(lag) > 0 {
		c.commitKafka(ctx, lag)
	}
}

// assigned starts tracking new partitions. Their start offsets are set by
// adjustOffsets, which runs next.
func (c *Consumer) assigned(_ context.Context, _ *kgo.Client, tps map[string][]int32) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for topic, parts := range tps {
		for _, p := range parts {
			c.parts[batch.TP{Topic: topic, Partition: p}] = &partition{seen: -1, applied: -1, committed: -1}
		}
	}
	// A partition paused after a fence and then lost stays paused in the
	// client; coming back, it must be fetched again.
	c.cl.ResumeFetchPartitions(tps)
	c.log.Info("partitions assigned", "partitions", fmtTPs(tps))
}

// adjustOffsets claims the assigned partitions in the ledger for this
// generation (fencing older writers) and starts each one from the further
// of Kafka's committed offset and the ledger's applied offset.
func (c *Consumer) adjustOffsets(ctx context.Context, offsets map[string]map[int32]kgo.Offset) (map[string]map[int32]kgo.Offset, error) {
	member, gen := c.cl.GroupMetadata()
	var tps []batch.TP
	for topic, parts := range offsets {
		for p := range parts {
			tps = append(tps, batch.TP{Topic: topic, Partition: p})
		}
	}
	backoff := c.cfg.RetryBackoff
	var ledger map[batch.TP]sink.Offset
	for {
		var err error
		if ledger, err = c.sink.Claim(ctx, c.cfg.Group, gen, member, tps); err == nil {
			break
		}
		c.setDB(false)
		c.m.DBRetries.Inc()
		c.log.Warn("claim ledger rows failed; retrying", "err", err)
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("claim ledger rows: %w", err)
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, c.cfg.RetryBackoffMax)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, tp := range tps {
		l := ledger[tp]
		kafka := offsets[tp.Topic][tp.Partition].EpochOffset().Offset
		ps := c.parts[tp]
		if ps == nil {
			ps = &partition{seen: -1, applied: -1, committed: -1}
			c.parts[tp] = ps
		}
		ps.applied = l.Applied
		if kafka >= 0 {
			ps.committed = kafka
		}
		if l.Applied >= 0 && l.Applied+1 > kafka {
			// Kafka's commit is behind (a crash between the two commits,
			// or a failed Kafka commit): the ledger wins.
			offsets[tp.Topic][tp.Partition] = kgo.NewOffset().At(l.Applied + 1).WithEpoch(-1)
			skipped := l.Applied + 1 - max(kafka, 0)
			c.resumeSkips.Add(skipped)
			c.m.Records.WithLabelValues(c.decoders[tp.Topic].Pipeline().Name, "skipped").Add(float64(skipped))
			c.log.Info("resuming from the ledger", "topic", tp.Topic, "partition", tp.Partition,
				"kafka_committed", kafka, "ledger_next", l.Applied+1)
		}
		ps.seen = max(ps.seen, l.Applied)
	}
	c.setDB(true)
	return offsets, nil
}

// revoked flushes every open batch that holds records of the revoked
// partitions, within the rebalance timeout, and commits them; what cannot
// be flushed in time is abandoned to the next owner.
func (c *Consumer) revoked(ctx context.Context, _ *kgo.Client, tps map[string][]int32) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(tps) == 0 {
		return
	}
	c.fault(FaultDuringRebalance)
	gone := toSet(tps)
	rctx, cancel := context.WithTimeout(ctx, c.cfg.RebalanceTimeout*3/4)
	defer cancel()
	for _, b := range c.sorted() {
		if !holds(b, gone) {
			continue
		}
		if err := c.flush(rctx, b); err != nil {
			c.log.Warn("revocation: abandoning batch", "pipeline", b.Pipeline.Name, "date", b.Date.String(), "err", err)
			c.drop(b, gone)
		}
	}
	c.forget(gone)
	c.log.Info("partitions revoked", "partitions", fmtTPs(tps))
}

// lost drops the lost partitions' records: another member owns them now,
// and neither the ledger (fenced) nor Kafka would take our commit.
func (c *Consumer) lost(_ context.Context, _ *kgo.Client, tps map[string][]int32) {
	c.mu.Lock()
	defer c.mu.Unlock()
	gone := toSet(tps)
	for _, b := range c.sorted() {
		if holds(b, gone) {
			c.drop(b, gone)
		}
	}
	c.forget(gone)
	c.log.Warn("partitions lost", "partitions", fmtTPs(tps))
}

func (c *Consumer) drop(b *batch.Batch, gone map[batch.TP]bool) {
	c.remove(b)
	if b.Drop(func(tp batch.TP) bool { return gone[tp] }) {
		c.open[batchKey{b.Pipeline.Name, b.Date}] = b
		c.buffered += b.Records
		c.bytes += b.Bytes
	}
}

func (c *Consumer) forget(gone map[batch.TP]bool) {
	for tp := range gone {
		delete(c.parts, tp)
	}
}

func holds(b *batch.Batch, tps map[batch.TP]bool) bool {
	for _, r := range b.Ranges() {
		if tps[batch.TP{Topic: r.Topic, Partition: r.Partition}] {
			return true
		}
	}
	return false
}

func toSet(tps map[string][]int32) map[batch.TP]bool {
	out := map[batch.TP]bool{}
	for t, ps := range tps {
		for _, p := range ps {
			out[batch.TP{Topic: t, Partition: p}] = true
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
