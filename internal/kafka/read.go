package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/idemsink/idemsink/internal/config"
	"github.com/idemsink/idemsink/internal/record"
)

// Idle is how long a reader waits for records it expects before it
// concludes that none are coming: the offsets left hold only transaction
// markers or aborted records, which a read_committed consumer never sees.
// It is generous: a broker that has just started, or a topic just
// created, can take seconds to answer its first fetch.
const Idle = 30 * time.Second

// NewReader returns a client that reads the given partitions from the given
// offsets directly: no group, no commits, read_committed like the daemon.
func NewReader(cfg *config.Config, log *slog.Logger, from map[record.TP]int64, extra ...kgo.Opt) (*kgo.Client, error) {
	parts := map[string]map[int32]kgo.Offset{}
	for tp, o := range from {
		if parts[tp.Topic] == nil {
			parts[tp.Topic] = map[int32]kgo.Offset{}
		}
		parts[tp.Topic][tp.Partition] = kgo.NewOffset().At(o)
	}
	return NewClient(cfg, log, append([]kgo.Opt{kgo.ConsumePartitions(parts), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.FetchMaxWait(500 * time.Millisecond)}, extra...)...)
}

// Span is a partition's log as a read sees it: from Start, its start, to
// End, its end (the last stable offset) when the read began.
type Span struct {
	TP         record.TP
	Start, End int64
}

// ReadRange calls fn for every record of each partition from from[tp] up
// to, not including, to[tp], in offset order per partition.
func ReadRange(ctx context.Context, cfg *config.Config, log *slog.Logger, from, to map[record.TP]int64, fn func(*kgo.Record) error) error {
	left := map[record.TP]int64{}
	start := map[record.TP]int64{}
	for tp, f := range from {
		if f < to[tp] {
			left[tp], start[tp] = to[tp], f
		}
	}
	if len(left) == 0 {
		return nil
	}
	cl, err := NewReader(cfg, log, start)
	if err != nil {
		return err
	}
	defer cl.Close()
	for len(left) > 0 {
		pctx, cancel := context.WithTimeout(ctx, Idle)
		fs := cl.PollFetches(pctx)
		cancel()
		if err := ctx.Err(); err != nil {
			return err
		}
		if fs.IsClientClosed() {
			return errors.New("kafka client closed")
		}
		if errors.Is(pctx.Err(), context.DeadlineExceeded) && fs.NumRecords() == 0 {
			for tp, end := range left {
				log.Warn("no more records readable before the end offset; transaction markers or aborted records",
					"topic", tp.Topic, "partition", tp.Partition, "end", end)
			}
			return nil
		}
		var ferr error
		fs.EachError(func(t string, p int32, err error) {
			if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
				ferr = fmt.Errorf("fetch %s/%d: %w", t, p, err)
			}
		})
		if ferr != nil {
			return ferr
		}
		for it := fs.RecordIter(); !it.Done(); {
			r := it.Next()
			tp := record.TP{Topic: r.Topic, Partition: r.Partition}
			end, ok := left[tp]
			if !ok || r.Offset >= end {
				continue
			}
			if err := fn(r); err != nil {
				return err
			}
			if r.Offset >= end-1 {
				delete(left, tp)
			}
		}
	}
	return nil
}

// Meter counts the records a long read has taken, for a progress bar or
// log lines.
type Meter interface {
	Add(n int)
	// Wait marks the start of a wait on what (the database); the function
	// it returns marks its end, so that a stall is shown as one and left
	// out of the rate.
	Wait(what string) (end func())
	Done()
}

// NoMeter counts nothing.
type NoMeter struct{}

func (NoMeter) Add(int) {} // Add does nothing.
func (NoMeter) Done()   {} // Done does nothing.

// Wait does nothing.
func (NoMeter) Wait(string) func() { return func() {} }

// Position is where r lies in its topic.
func Position(r *kgo.Record) record.Position {
	return record.Position{TP: record.TP{Topic: r.Topic, Partition: r.Partition}, Offset: r.Offset}
}

// DeadLetter is the dead letter of r, which failed to decode with err: its
// bytes cut as record.DeadLetterFor cuts them, with r's headers. The daemon
// and every replay dead-letter a Kafka record through here.
func DeadLetter(r *kgo.Record, err error) record.DeadLetter {
	dl := record.DeadLetterFor(Position(r), r.Key, r.Value, err)
	if len(r.Headers) > 0 {
		dl.Headers = make(map[string]string, len(r.Headers))
		for _, h := range r.Headers {
			dl.Headers[h.Key] = string(h.Value)
		}
	}
	return dl
}
