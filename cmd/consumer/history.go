package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/idemsink/idemsink/internal/record"
	"github.com/idemsink/idemsink/internal/sink"
)

const historyHelp = `Print the latest applications of batches from the batch log, newest first:
which group applied each batch (the live group, a replay's temporary group
<group>.replay.<time>.<nonce>, or the group after an offsets reset), when,
and what it did: inserted, updated, repaired (same version, content
restored), unchanged, stale, deleted, dead-lettered. Every application of a
batch is kept, so a backfill's history can be read back. The dates on which
a transaction changed nothing (a redelivery, a replay over rows in place)
are one line per transaction, with no batch: DATE gives their range and
number.

examples:
  consumer history -config idemsink.yaml
  consumer history -config idemsink.yaml --pipeline orders --date 2026-11-02 --limit 100
  consumer history -config idemsink.yaml --group 'orders-sink.replay.*' --json
`

func historyFlags(fs *flag.FlagSet) func(context.Context, *env) error {
	only := fs.String("pipeline", "", "only this `pipeline`")
	date := fs.String("date", "", "only batches of this target date, `YYYY-MM-DD`")
	group := fs.String("group", "", "only this `group` (a trailing * matches a prefix)")
	limit := fs.Int("limit", 20, "at most `N` applications")
	asJSON := fs.Bool("json", false, "one JSON object per line")
	return func(ctx context.Context, e *env) error {
		f := sink.HistoryFilter{Pipeline: *only, Group: *group, Limit: *limit}
		if *limit <= 0 {
			return fmt.Errorf("history: --limit %d: want a positive number", *limit)
		}
		if *date != "" {
			d, err := record.ParseDate(*date)
			if err != nil {
				return fmt.Errorf("history: --date %q: want YYYY-MM-DD", *date)
			}
			f.Date = d
		}
		pool, err := connect(ctx, e.cfg)
		if err != nil {
			return err
		}
		defer pool.Close()
		apps, err := sink.New(pool, e.cfg, sink.Options{Logger: e.log}).History(ctx, f)
		if err != nil {
			return err
		}
		if *asJSON {
			enc := json.NewEncoder(e.stdout)
			for _, a := range apps {
				if err := enc.Encode(a); err != nil {
					return err
				}
			}
			return nil
		}
		tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "APPLIED AT\tPIPELINE\tDATE\tGROUP\tBATCH\t#\tRECORDS\tINSERTED\tUPDATED\tREPAIRED\tUNCHANGED\tSTALE\tDELETED\tDEAD\tSKIPPED")
		for _, a := range apps {
			d, batch, n := a.Date, "-", "-"
			switch {
			case len(a.Dates) == 1:
				d = a.Dates[0]
			case len(a.Dates) > 1:
				d = fmt.Sprintf("%s..%s (%d dates)", a.Dates[0], a.Dates[len(a.Dates)-1], len(a.Dates))
			case d == "":
				d = "-"
			}
			if a.Batch != "" {
				batch, n = a.Batch[:8], fmt.Sprint(a.Application)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\n", a.AppliedAt.UTC().Format(time.DateTime), a.Pipeline, d,
				a.Group, batch, n, a.Records, a.Inserted, a.Updated, a.Repaired, a.Unchanged, a.Stale, a.Deleted, a.Dead, a.Skipped)
		}
		if len(apps) == 0 {
			fmt.Fprintln(tw, "(no batch applied yet)")
		}
		return tw.Flush()
	}
}
