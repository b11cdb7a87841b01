package main

import (
	"context"
	"errors"
	"flag"
	"fmt"

	"github.com/idemsink/idemsink/internal/config"
	"github.com/idemsink/idemsink/internal/kafka"
	"github.com/idemsink/idemsink/internal/record"
	"github.com/idemsink/idemsink/internal/replay"
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
		r, err := record.ParseDates(*from, *to)
		if err != nil {
			return fmt.Errorf("replay: %w", err)
		}
		ps, err := choosePipelines(e.cfg, *only)
		if err != nil {
			return fmt.Errorf("replay: %w", err)
		}
		return replayDates(ctx, e, r, ps)
	}
}

func replayDates(ctx context.Context, e *env, r record.Dates, pipelines []*config.Pipeline) error {
	c, err := openCluster(ctx, e)
	if err != nil {
		return err
	}
	defer c.close()
	var topics []string
	for _, p := range pipelines {
		topics = append(topics, p.Topics...)
	}
	ps, _, err := c.positions(ctx, topics)
	if err != nil {
		return err
	}
	reps, err := replay.Dates(ctx, replay.Options{Config: e.cfg, Sink: c.sink, Logger: e.log, Progress: e.meter}, pipelines, r, spans(ps))
	var total sink.Result
	for _, rep := range reps {
		total.Add(rep.Result)
		fmt.Fprintf(e.stdout, "pipeline %s, target dates %s: %d record(s) read, %d of other dates passed over, %d batch(es) applied\n",
			rep.Pipeline, r, rep.Read, rep.Outside, rep.Batches)
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "inserted %d, updated %d, deleted %d, unchanged %d, stale %d, dead %d (in-batch duplicates %d); group %s's offsets and ledger untouched\n",
		total.Inserted, total.Updated, total.Deleted, total.Unchanged, total.Stale, total.DeadLettered, total.Superseded, e.cfg.Group)
	return nil
}

// spans is the log of each partition, as internal/replay and
// internal/verify read it.
func spans(ps []position) []kafka.Span {
	out := make([]kafka.Span, len(ps))
	for i, p := range ps {
		out[i] = kafka.Span{TP: p.tp(), Start: p.Start, End: p.End}
	}
	return out
}
