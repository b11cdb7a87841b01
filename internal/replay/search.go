package replay

import (
	"context"
	"errors"
	"log/slog"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/idemsink/idemsink/internal/config"
	"github.com/idemsink/idemsink/internal/decode"
	"github.com/idemsink/idemsink/internal/kafka"
	"github.com/idemsink/idemsink/internal/record"
)

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
		pctx, cancel := context.WithTimeout(ctx, kafka.Idle)
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
			if at = r.Offset + 1; at >= end {
				// Nothing decodable up to end: no need to wait out
				// kafka.Idle for records that cannot come.
				return dated{}, false, nil
			}
		}
	}
}

// SearchDate returns the offset of the first record of tp in [start, end)
// whose target date is day or later, or end if there is none: a bisection
// over offsets that reads one record per step. It assumes dates grow with
// offsets, as they do for records produced as events happen; a record
// produced out of date order can make it land a few records early or late.
func SearchDate(ctx context.Context, cfg *config.Config, log *slog.Logger, dec *decode.Decoder, tp record.TP, start, end int64, day record.Date) (int64, error) {
	if start >= end {
		return end, nil
	}
	// Each step needs one record: small fetches (the broker still sends
	// a whole record batch) keep a step to one round trip of a few KiB.
	cl, err := kafka.NewReader(cfg, log, map[record.TP]int64{tp: start}, kgo.FetchMaxPartitionBytes(16<<10), kgo.FetchMaxBytes(16<<10))
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
		if !ok || !r.date.Before(day) {
			hi = mid
		} else {
			lo = r.offset + 1
		}
	}
	return lo, nil
}
