package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/idemsink/idemsink/internal/config"
	"github.com/idemsink/idemsink/internal/decode"
	"github.com/idemsink/idemsink/internal/kafka"
	"github.com/idemsink/idemsink/internal/record"
)

// idle is how long a reader waits for records it expects before it
// concludes that none are coming: the offsets left hold only transaction
// markers or aborted records, which a read_committed consumer never sees.
// It is generous: a broker that has just started, or a topic just
// created, can take seconds to answer its first fetch.
const idle = 30 * time.Second

// newReader returns a client that reads the given partitions from the given
// offsets directly: no group, no commits, read_committed like the daemon.
func newReader(cfg *config.Config, log *slog.Logger, from map[record.TP]int64, extra ...kgo.Opt) (*kgo.Client, error) {
	parts := map[string]map[int32]kgo.Offset{}
	for tp, o := range from {
		if parts[tp.Topic] == nil {
			parts[tp.Topic] = map[int32]kgo.Offset{}
		}
		parts[tp.Topic][tp.Partition] = kgo.NewOffset().At(o)
	}
	return kafka.NewClient(cfg, log, append([]kgo.Opt{kgo.ConsumePartitions(parts), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.FetchMaxWait(500 * time.Millisecond)}, extra...)...)
}

// readRange calls fn for every record of each partition from from[tp] up
// to, not including, to[tp], in offset order per partition.
func readRange(ctx context.Context, cfg *config.Config, log *slog.Logger, from, to map[record.TP]int64, fn func(*kgo.Record) error) error {
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
	cl, err := newReader(cfg, log, start)
	if err != nil {
		return err
	}
	defer cl.Close()
	for len(left) > 0 {
		pctx, cancel := context.WithTimeout(ctx, idle)
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

// dated is the first decodable record at or after an offset, with its
// target date.
type dated struct {
	offset int64
	date   record.Date
}

// firstAtOrAfter reads from offset at onward and returns the first record
// that decodes, or ok false if there is none before end. Records that do
// not decode (dead letters) are passed over.
func firstAtOrAfter(ctx context.Context, cl *kgo.Client, dec *decode.Decoder, tp record.TP, at, end int64) (dated, bool, error) {
	if at >= end {
		return dated{}, false, nil
	}
	cl.SetOffsets(map[string]map[int32]kgo.EpochOffset{tp.Topic: {tp.Partition: {Epoch: -1, Offset: at}}})
	for {
		pctx, cancel := context.WithTimeout(ctx, idle)
		fs := cl.PollFetches(pctx)
		cancel()
		if err := ctx.Err(); err != nil {
			return dated{}, false, err
		}
		if fs.NumRecords() == 0 && errors.Is(pctx.Err(), context.DeadlineExceeded) {
			return dated{}, false, nil
		}
		for it := fs.RecordIter(); !it.Done(); {
			r := it.Next()
			if r.Offset < at {
				continue // fetched before the seek
			}
			if r.Offset >= end {
				return dated{}, false, nil
			}
			row, d, err := dec.Decode(r.Key, r.Value, record.Position{TP: tp, Offset: r.Offset})
			if decode.Unavailable(err) {
				return dated{}, false, err // an outage, not a record to pass over
			}
			if err == nil && !row.Delete && !row.Ignore { // a delete has a key, not a date
				return dated{offset: r.Offset, date: d}, true, nil
			}
			at = r.Offset + 1
		}
	}
}

// searchDate returns the offset of the first record of tp in [start, end)
// whose target date is day or later, or end if there is none: a bisection
// over offsets that reads one record per step. It assumes dates grow with
// offsets, as they do for records produced as events happen; a record
// produced out of date order can make it land a few records early or late.
func searchDate(ctx context.Context, cfg *config.Config, log *slog.Logger, dec *decode.Decoder, tp record.TP, start, end int64, day record.Date) (int64, error) {
	if start >= end {
		return end, nil
	}
	// Each step needs one record: small fetches (the broker still sends
	// a whole record batch) keep a step to one round trip of a few KiB.
	cl, err := newReader(cfg, log, map[record.TP]int64{tp: start}, kgo.FetchMaxPartitionBytes(16<<10), kgo.FetchMaxBytes(16<<10))
	if err != nil {
		return 0, err
	}
	defer cl.Close()
	// Invariant: the first decodable record at or after hi is of day or
	// later (or there is none), and every decodable record before lo is
	// earlier than day. What lies between lo and the first such record
	// does not decode (dead letters): reading it again is harmless.
	lo, hi := start, end
	for lo < hi {
		mid := lo + (hi-lo)/2
		r, ok, err := firstAtOrAfter(ctx, cl, dec, tp, mid, end)
		if err != nil {
			return 0, err
		}
		log.Debug("search by date: probe", "topic", tp.Topic, "partition", tp.Partition, "at", mid, "found", ok, "offset", r.offset, "date", r.date.String())
		if !ok || !before(r.date, day) {
			hi = mid
		} else {
			lo = r.offset + 1
		}
	}
	return lo, nil
}

func before(a, b record.Date) bool { return a.Time().Before(b.Time()) }

// decoderFor returns the decoder of the pipeline that reads topic.
func decoderFor(cfg *config.Config, topic string) *decode.Decoder {
	for i := range cfg.Pipelines {
		if slices.Contains(cfg.Pipelines[i].Topics, topic) {
			return decode.NewDecoder(&cfg.Pipelines[i])
		}
	}
	return nil
}
