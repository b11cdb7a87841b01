package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"os"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/idemsink/idemsink/internal/batch"
	"github.com/idemsink/idemsink/internal/config"
	"github.com/idemsink/idemsink/internal/retry"
	"github.com/idemsink/idemsink/internal/sink"
)

const replayHelp = `Backfill a range of target dates while the group keeps running: a temporary
reader (no consumer group, no commits) reads each partition from the first
record of --from (found as offsets reset --to-date finds it) to the end of the
log as it is when the replay starts, and applies the records of those dates
through the same sink as the daemon: the version guard keeps every newer row,
and unchanged rows are not written. It writes its own ledger rows under a
temporary group name and deletes them at the end; the live group's offsets
and ledger rows are not touched. It prints inserted / updated / deleted /
unchanged / stale / dead at the end.

examples:
  consumer replay -config idemsink.yaml --from 2026-11-02
  consumer replay -config idemsink.yaml --from 2026-11-01 --to 2026-11-07 --pipeline orders
`

func replayFlags(fs *flag.FlagSet) func(context.Context, *env) error {
	from := fs.String("from", "", "first target date to replay, `YYYY-MM-DD` (required)")
	to := fs.String("to", "", "last target date to replay, `YYYY-MM-DD` (default: --from)")
	only := fs.String("pipeline", "", "replay only this `pipeline`")
	return func(ctx context.Context, e *env) error {
		if *from == "" {
			return errors.New("replay: --from is required (the first target date to replay, YYYY-MM-DD)")
		}
		r, err := parseRange(*from, *to)
		if err != nil {
			return fmt.Errorf("replay: %w", err)
		}
		ps, err := choosePipelines(e.cfg, *only)
		if err != nil {
			return fmt.Errorf("replay: %w", err)
		}
		return replay(ctx, e, r, ps)
	}
}

// replayer applies what a replay reads, batch by batch.
type replayer struct {
	e      *env
	sink   *sink.Sink
	commit sink.Commit
	open   map[batch.Date]*batch.Batch
	total  sink.Result
	// outside counts records read whose target date is not replayed.
	outside int64
	batches int
	prog    *progress // of the pipeline being replayed
}

func replay(ctx context.Context, e *env, r dateRange, pipelines []*config.Pipeline) error {
	c, err := openCluster(ctx, e)
	if err != nil {
		return err
	}
	defer c.close()
	// The temporary group keys this replay's ledger rows; the live group's
	// rows have another key, so the replay can neither fence nor move them.
	var nonce [4]byte
	_, _ = rand.Read(nonce[:]) // crypto/rand.Read never fails
	host, _ := os.Hostname()
	tmp := fmt.Sprintf("%s.replay.%s.%s", e.cfg.Group, time.Now().UTC().Format("20060102T150405"), hex.EncodeToString(nonce[:]))
	var topics []string
	for _, p := range pipelines {
		topics = append(topics, p.Topics...)
	}
	defer func() {
		if _, err := c.sink.ResetLedger(context.WithoutCancel(ctx), tmp, topics); err != nil {
			e.log.Warn("replay: could not delete the temporary ledger rows", "group", tmp, "err", err)
		}
	}()
	var total sink.Result
	var read, outside int64
	for _, p := range pipelines {
		rp := &replayer{e: e, sink: c.sink, open: map[batch.Date]*batch.Batch{},
			commit: sink.Commit{Group: tmp, Generation: 1, Member: "replay@" + host}}
		n, err := rp.run(ctx, c, p, r)
		read += n
		if err != nil {
			return fmt.Errorf("replay pipeline %s: %w", p.Name, err)
		}
		total.Add(rp.total)
		outside += rp.outside
		fmt.Fprintf(e.stdout, "pipeline %s, target dates %s: %d record(s) read, %d of other dates passed over, %d batch(es) applied\n",
			p.Name, r, n, rp.outside, rp.batches)
	}
	fmt.Fprintf(e.stdout, "inserted %d, updated %d, deleted %d, unchanged %d, stale %d, dead %d (in-batch duplicates %d); group %s's offsets and ledger untouched\n",
		total.Inserted, total.Updated, total.Deleted, total.Unchanged, total.Stale, total.DeadLettered, total.Superseded, e.cfg.Group)
	return nil
}

// run replays one pipeline and returns the records it read.
func (rp *replayer) run(ctx context.Context, c *cluster, p *config.Pipeline, r dateRange) (int64, error) {
	ps, _, err := c.positions(ctx, p.Topics)
	if err != nil {
		return 0, err
	}
	dec := batch.NewDecoder(p)
	from, to := map[batch.TP]int64{}, map[batch.TP]int64{}
	var total int64
	for _, pos := range ps {
		start, err := searchDate(ctx, rp.e.cfg, rp.e.log, dec, pos.tp(), pos.Start, pos.End, r.From)
		if err != nil {
			return 0, fmt.Errorf("search %s for %s: %w", pos.tp(), r.From, err)
		}
		from[pos.tp()], to[pos.tp()] = start, pos.End
		total += pos.End - start
	}
	var n int64
	prog := newProgress(rp.e.stderr, rp.e.log, "replay: read "+p.Name, total)
	defer prog.done() // after the last flushes: a stall there shows too
	rp.prog = prog
	err = readRange(ctx, rp.e.cfg, rp.e.log, from, to, func(kr *kgo.Record) error {
		prog.add(1)
		n++
		pos := batch.Position{TP: batch.TP{Topic: kr.Topic, Partition: kr.Partition}, Offset: kr.Offset}
		row, d, err := dec.Decode(kr.Key, kr.Value, pos)
		var b *batch.Batch
		switch {
		case batch.Unavailable(err):
			return fmt.Errorf("decode %s at %d: %w", pos.TP, pos.Offset, err) // an outage: run the replay again later
		case err != nil:
			// Bad input is dead-lettered again; the dead-letter table
			// keeps one row per position, so nothing is doubled.
			b = rp.batch(p, batch.Date{})
			b.AddDead(batch.DeadLetter{Pos: pos, Key: kr.Key, Value: kr.Value, Reason: err.Error(), Headers: headers(kr)})
		case row.Delete:
			// A delete names a key, not a date: it is applied wherever it
			// lies in what is read, under the version guard (a delete
			// applied before writes nothing).
			b = rp.batch(p, batch.Date{})
			b.Add(row)
		case row.Ignore || !r.has(d):
			rp.outside++
			return nil
		default:
			b = rp.batch(p, d)
			b.Add(row)
		}
		if b.Full() {
			return rp.flush(ctx, b)
		}
		return nil
	})
	if err != nil {
		return n, err
	}
	dates := make([]batch.Date, 0, len(rp.open))
	for d := range rp.open {
		dates = append(dates, d)
	}
	slices.SortFunc(dates, func(a, b batch.Date) int { return a.Time().Compare(b.Time()) })
	for _, d := range dates {
		if err := rp.flush(ctx, rp.open[d]); err != nil {
			return n, err
		}
	}
	return n, nil
}

func (rp *replayer) batch(p *config.Pipeline, d batch.Date) *batch.Batch {
	b := rp.open[d]
	if b == nil {
		b = batch.New(p, d, time.Now())
		rp.open[d] = b
	}
	return b
}

// flush applies b, retrying what is an outage rather than bad input (a
// deadlock with the live group's transaction on the same rows, say).
func (rp *replayer) flush(ctx context.Context, b *batch.Batch) error {
	delete(rp.open, b.Date)
	defer rp.prog.wait("the database")()
	bo := retry.Backoff{Base: rp.e.cfg.RetryBackoff, Limit: rp.e.cfg.RetryBackoffMax}
	for attempt := 1; ; attempt++ {
		res, err := rp.sink.Apply(ctx, b, rp.commit)
		if err == nil {
			rp.total.Add(res)
			rp.batches++
			return nil
		}
		if !sink.Transient(err) || attempt == 10 {
			return fmt.Errorf("apply batch of %s: %w", b.Date, err)
		}
		rp.e.log.Warn("replay: applying a batch failed; retrying", "date", b.Date.String(), "attempt", attempt, "err", err)
		if !retry.Sleep(ctx, bo.After(attempt)) {
			return ctx.Err()
		}
	}
}

func headers(r *kgo.Record) map[string]string {
	if len(r.Headers) == 0 {
		return nil
	}
	h := make(map[string]string, len(r.Headers))
	for _, kv := range r.Headers {
		h[kv.Key] = string(kv.Value)
	}
	return h
}
