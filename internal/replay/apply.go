package replay

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/idemsink/idemsink/internal/batch"
	"github.com/idemsink/idemsink/internal/config"
	"github.com/idemsink/idemsink/internal/kafka"
	"github.com/idemsink/idemsink/internal/record"
	"github.com/idemsink/idemsink/internal/retry"
	"github.com/idemsink/idemsink/internal/sink"
)

// Options is what a replay runs with.
type Options struct {
	Config *config.Config
	Sink   *sink.Sink
	Logger *slog.Logger
	// Progress, if set, gives the meter of a long read of total records.
	Progress func(what string, total int64) kafka.Meter
	// OnRetry, if set, hears of each failed attempt at a database
	// operation before the wait that precedes the next one.
	OnRetry func(attempt int, err error)
}

func (o *Options) meter(what string, total int64) kafka.Meter {
	if o.Progress == nil {
		return kafka.NoMeter{}
	}
	return o.Progress(what, total)
}

func (o *Options) log() *slog.Logger {
	if o.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return o.Logger
}

// maxAttempts bounds the attempts at one database operation: a replay is
// an operator's command, which should end, while the daemon retries for as
// long as it runs.
const maxAttempts = 10

// do runs fn under internal/retry, with the daemon's backoff and per-attempt
// timeout: what sink.Transient calls an outage, a conflict or a stuck batch
// is tried again, up to maxAttempts; anything else ends it at once.
func (o *Options) do(ctx context.Context, what string, fn func(context.Context) error) error {
	cfg := o.Config
	attempts := 0
	return retry.Do(ctx, cfg.ApplyTimeout, retry.Backoff{Base: cfg.RetryBackoff, Limit: cfg.RetryBackoffMax}, func(ctx context.Context) error {
		attempts++
		err := fn(ctx)
		if err != nil && (!sink.Transient(err) || attempts == maxAttempts) {
			return retry.Stop(err)
		}
		return err
	}, func(attempt int, err error, wait time.Duration) {
		o.log().Warn("replay: "+what+" failed; retrying", "attempt", attempt, "backoff", wait, "err", err)
		if o.OnRetry != nil {
			o.OnRetry(attempt, err)
		}
	})
}

// batcher holds one pipeline's open batches, one per target date, and
// applies a batch once it is full and every batch at flush: the daemon's
// batching, without its linger (a replay reads as fast as it can).
type batcher struct {
	o      *Options
	p      *config.Pipeline
	commit sink.Commit
	meter  kafka.Meter // hears of each wait on the database
	open   map[record.Date]*batch.Batch
	// applied, if set, is called after each batch applied.
	applied func(ctx context.Context, b *batch.Batch) error
	total   sink.Result
	batches int
}

func newBatcher(o *Options, p *config.Pipeline, commit sink.Commit) *batcher {
	return &batcher{o: o, p: p, commit: commit, meter: kafka.NoMeter{}, open: map[record.Date]*batch.Batch{}}
}

func (bt *batcher) batch(d record.Date) *batch.Batch {
	b := bt.open[d]
	if b == nil {
		b = batch.New(bt.p, d, time.Now())
		bt.open[d] = b
	}
	return b
}

// add puts row, of target date d (zero for a delete), in its batch.
func (bt *batcher) add(ctx context.Context, row record.Row, d record.Date) error {
	b := bt.batch(d)
	b.Add(row)
	return bt.applyFull(ctx, b)
}

// addDead puts a dead letter in the batch of undated records.
func (bt *batcher) addDead(ctx context.Context, dl record.DeadLetter) error {
	b := bt.batch(record.Date{})
	b.AddDead(dl)
	return bt.applyFull(ctx, b)
}

func (bt *batcher) applyFull(ctx context.Context, b *batch.Batch) error {
	if !b.Full() {
		return nil
	}
	return bt.apply(ctx, b)
}

// flush applies every open batch, in date order.
func (bt *batcher) flush(ctx context.Context) error {
	dates := make([]record.Date, 0, len(bt.open))
	for d := range bt.open {
		dates = append(dates, d)
	}
	slices.SortFunc(dates, func(a, b record.Date) int { return a.Time().Compare(b.Time()) })
	for _, d := range dates {
		if err := bt.apply(ctx, bt.open[d]); err != nil {
			return err
		}
	}
	return nil
}

// apply applies b through the sink, retrying what is an outage rather than
// bad input (a deadlock with the live group's transaction on the same
// rows, say).
func (bt *batcher) apply(ctx context.Context, b *batch.Batch) error {
	delete(bt.open, b.Date)
	defer bt.meter.Wait("the database")()
	var res sink.Result
	err := bt.o.do(ctx, "applying a batch of "+b.Date.String(), func(ctx context.Context) error {
		var err error
		res, err = bt.o.Sink.Apply(ctx, batch.Of(b), bt.commit)
		return err
	})
	if err != nil {
		return fmt.Errorf("apply batch of %s: %w", b.Date, err)
	}
	bt.total.Add(res)
	bt.batches++
	if bt.applied != nil {
		return bt.applied(ctx, b)
	}
	return nil
}
