package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"

	"github.com/idemsink/idemsink/internal/config"
	"github.com/idemsink/idemsink/internal/kafka"
	"github.com/idemsink/idemsink/internal/record"
	"github.com/idemsink/idemsink/internal/replay"
	"github.com/idemsink/idemsink/internal/sink"
	"github.com/idemsink/idemsink/internal/verify"
)

const replayHelp = `Backfill a range of target dates while the group keeps running: a temporary
reader (no consumer group, no commits) reads each partition from the first
record of --from (found as offsets reset --to-date finds it) to the end of the
log as it is when the replay starts, and applies the records of those dates
through the same sink as the daemon: the version guard keeps every newer row,
and unchanged rows are not written. It writes its own ledger rows under a
temporary group name and deletes them at the end; the live group's offsets
and ledger rows are not touched.

A replay also repairs: the record a row came from rewrites the row when the
row's content differs (edited by hand, or a column the pipeline gained since,
which migrate or run added), so verify --date, then replay, then verify --date
shows no mismatch. Rows on those dates that no record of the topics explains
(verify's "extra") are listed, and deleted only with --delete-extra.

It prints what it did: inserted, updated, repaired (same version, content
restored), unchanged, stale (older than the row), dead (dead-lettered),
deleted; with --json, one JSON object.

examples:
  consumer replay -config idemsink.yaml --from 2026-11-02
  consumer replay -config idemsink.yaml --from 2026-11-01 --to 2026-11-07 --pipeline orders
  consumer replay -config idemsink.yaml --from 2026-11-02 --delete-extra --json
`

func replayFlags(fs *flag.FlagSet) func(context.Context, *env) error {
	from := fs.String("from", "", "first target date to replay, `YYYY-MM-DD` (required)")
	to := fs.String("to", "", "last target date to replay, `YYYY-MM-DD` (default: --from)")
	only := fs.String("pipeline", "", "replay only this `pipeline`")
	deleteExtra := fs.Bool("delete-extra", false, "after the replay, delete rows on those dates that no record of the topics explains")
	asJSON := fs.Bool("json", false, "print what the replay did as JSON")
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
		return replayDates(ctx, e, r, ps, *deleteExtra, *asJSON)
	}
}

// replayReport is what replay --json prints.
type replayReport struct {
	Dates     string           `json:"dates"`
	Group     string           `json:"group"` // the live group, untouched
	Pipelines []pipelineReplay `json:"pipelines"`
	Total     replayCounts     `json:"total"`
}

type pipelineReplay struct {
	Pipeline string       `json:"pipeline"`
	Read     int64        `json:"records_read"`
	Outside  int64        `json:"other_dates"`
	Batches  int          `json:"batches"`
	Counts   replayCounts `json:"counts"`
	// Extra lists the rows no record explains; ExtraDeleted how many of
	// them --delete-extra deleted.
	Extra        []verify.Finding `json:"extra"`
	ExtraDeleted int              `json:"extra_deleted"`
}

type replayCounts struct {
	Inserted   int `json:"inserted"`
	Updated    int `json:"updated"`
	Repaired   int `json:"repaired"`
	Unchanged  int `json:"unchanged"`
	Stale      int `json:"stale"`
	Dead       int `json:"dead"`
	Deleted    int `json:"deleted"`
	Superseded int `json:"in_batch_duplicates"`
}

func countsOf(r sink.Result) replayCounts {
	return replayCounts{Inserted: r.Inserted, Updated: r.Updated, Repaired: r.Repaired, Unchanged: r.Unchanged,
		Stale: r.Stale, Dead: r.DeadLettered, Deleted: r.Deleted, Superseded: r.Superseded}
}

func replayDates(ctx context.Context, e *env, r record.Dates, pipelines []*config.Pipeline, deleteExtra, asJSON bool) error {
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
	out := replayReport{Dates: r.String(), Group: e.cfg.Group}
	var total sink.Result
	for _, rep := range reps {
		total.Add(rep.Result)
		out.Pipelines = append(out.Pipelines, pipelineReplay{Pipeline: rep.Pipeline, Read: rep.Read, Outside: rep.Outside,
			Batches: rep.Batches, Counts: countsOf(rep.Result), Extra: []verify.Finding{}})
	}
	out.Total = countsOf(total)
	if err == nil {
		// The rows no record explains: found as verify finds them, over
		// the same spans, after the replay applied.
		o := verify.Options{Config: e.cfg, Pool: c.pool, Logger: e.log, Progress: e.meter}
		for i, p := range pipelines {
			rec, rerr := verify.Reconcile(ctx, o, p, r, spans(ps))
			if rerr != nil {
				err = fmt.Errorf("look for extra rows of pipeline %s: %w", p.Name, rerr)
				break
			}
			for _, f := range rec.Findings {
				if f.Kind == verify.Extra {
					out.Pipelines[i].Extra = append(out.Pipelines[i].Extra, f)
				}
			}
			if deleteExtra {
				if out.Pipelines[i].ExtraDeleted, err = verify.DeleteExtra(ctx, c.pool, p, rec); err != nil {
					break
				}
			}
		}
	}
	if asJSON {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		if jerr := enc.Encode(out); jerr != nil && err == nil {
			err = jerr
		}
		return err
	}
	for _, p := range out.Pipelines {
		fmt.Fprintf(e.stdout, "pipeline %s, target dates %s: %d record(s) read, %d of other dates passed over, %d batch(es) applied\n",
			p.Pipeline, r, p.Read, p.Outside, p.Batches)
		for _, f := range p.Extra {
			fmt.Fprintf(e.stdout, "  extra  %s: %s\n", f.Key, f.Detail)
		}
		switch {
		case len(p.Extra) > 0 && deleteExtra:
			fmt.Fprintf(e.stdout, "  %d extra row(s) deleted (--delete-extra)\n", p.ExtraDeleted)
		case len(p.Extra) > 0:
			fmt.Fprintf(e.stdout, "  %d extra row(s) kept: no record explains them; --delete-extra deletes them\n", len(p.Extra))
		}
	}
	if err != nil {
		return err
	}
	t := out.Total
	fmt.Fprintf(e.stdout, "inserted %d, updated %d, repaired %d, unchanged %d, stale %d, dead %d, deleted %d (in-batch duplicates %d); group %s's offsets and ledger untouched\n",
		t.Inserted, t.Updated, t.Repaired, t.Unchanged, t.Stale, t.Dead, t.Deleted, t.Superseded, e.cfg.Group)
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
