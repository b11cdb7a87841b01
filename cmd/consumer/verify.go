package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/idemsink/idemsink/internal/config"
	"github.com/idemsink/idemsink/internal/record"
	"github.com/idemsink/idemsink/internal/verify"
)

const verifyHelp = `Check that Kafka's committed offsets never pass the ledger's applied ones
(a commit past it would mean records marked consumed that were never applied),
and count dead letters per pipeline.

With --date (or --from/--to), also reconcile those target dates: read every
pipeline's topics with a read-only consumer (no group, no commits), take the
newest version of each key, and compare the keys whose newest record falls on
those dates with the table: keys missing from the table, rows in the table
that no record explains (found where the date field is a column), rows whose
content differs, and rows older than the log's newest record. Nothing is
written. The exit status is 1 on any mismatch.

examples:
  consumer verify -config idemsink.yaml
  consumer verify -config idemsink.yaml --date 2026-11-02
  consumer verify -config idemsink.yaml --from 2026-11-01 --to 2026-11-07 --pipeline orders --json
`

func verifyFlags(fs *flag.FlagSet) func(context.Context, *env) error {
	date := fs.String("date", "", "reconcile this target date, `YYYY-MM-DD`")
	from := fs.String("from", "", "reconcile target dates from `YYYY-MM-DD`")
	to := fs.String("to", "", "reconcile target dates up to `YYYY-MM-DD` (default: --from)")
	only := fs.String("pipeline", "", "reconcile only this `pipeline`")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	return func(ctx context.Context, e *env) error {
		var r record.Dates
		var err error
		if *date != "" && (*from != "" || *to != "") {
			return errors.New("verify: give --date or --from/--to, not both")
		}
		if *date != "" {
			*from = *date
		}
		if *to != "" && *from == "" {
			return errors.New("verify: --to needs --from")
		}
		if *from != "" {
			if r, err = record.ParseDates(*from, *to); err != nil {
				return fmt.Errorf("verify: %w", err)
			}
		}
		ps, err := choosePipelines(e.cfg, *only)
		if err != nil {
			return fmt.Errorf("verify: %w", err)
		}
		return runVerify(ctx, e, r, ps, *asJSON)
	}
}

func choosePipelines(cfg *config.Config, only string) ([]*config.Pipeline, error) {
	var out []*config.Pipeline
	for i := range cfg.Pipelines {
		if only == "" || cfg.Pipelines[i].Name == only {
			out = append(out, &cfg.Pipelines[i])
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no pipeline named %q", only)
	}
	return out, nil
}

// verifyReport is what verify found.
type verifyReport struct {
	Group string `json:"group"`
	// Checked counts the partitions whose Kafka commit was compared with
	// the ledger; Ahead lists those committed past it.
	Checked     int                     `json:"partitions_checked"`
	Ahead       []string                `json:"committed_past_ledger"`
	DeadLetters map[string]int64        `json:"dead_letters"`
	Pipelines   []verify.Reconciliation `json:"reconciled,omitempty"`
}

func runVerify(ctx context.Context, e *env, r record.Dates, pipelines []*config.Pipeline, asJSON bool) error {
	c, err := openCluster(ctx, e)
	if err != nil {
		return err
	}
	defer c.close()
	rep := verifyReport{Group: e.cfg.Group, Ahead: []string{}}
	ps, _, err := c.positions(ctx, e.cfg.Topics())
	if err != nil {
		return err
	}
	for _, p := range ps {
		if p.Committed < 0 {
			continue
		}
		rep.Checked++
		if next := max(p.LedgerNext, 0); p.Committed > next {
			rep.Ahead = append(rep.Ahead, fmt.Sprintf("%s: Kafka committed %d, ledger applied only up to %d", p.tp(), p.Committed, next-1))
		}
	}
	if rep.DeadLetters, err = c.sink.DeadLetters(ctx); err != nil {
		return err
	}
	mismatches := 0
	if r != (record.Dates{}) {
		o := verify.Options{Config: e.cfg, Pool: c.pool, Logger: e.log, Progress: e.meter}
		for _, p := range pipelines {
			rec, err := verify.Reconcile(ctx, o, p, r, spans(ps))
			if err != nil {
				return fmt.Errorf("reconcile pipeline %s: %w", p.Name, err)
			}
			mismatches += len(rec.Findings)
			rep.Pipelines = append(rep.Pipelines, rec)
		}
	}
	if asJSON {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return err
		}
	} else {
		rep.print(e.stdout)
	}
	var problems []string
	if len(rep.Ahead) > 0 {
		problems = append(problems, fmt.Sprintf("%d partition(s) committed past the ledger", len(rep.Ahead)))
	}
	if mismatches > 0 {
		problems = append(problems, fmt.Sprintf("%d key(s) do not match the topics", mismatches))
	}
	if len(problems) > 0 {
		return fmt.Errorf("verify: %s", strings.Join(problems, "; "))
	}
	return nil
}

func (rep *verifyReport) print(w io.Writer) {
	if len(rep.Ahead) > 0 {
		fmt.Fprintf(w, "group %s: %d partition(s) committed past the ledger:\n  %s\n", rep.Group, len(rep.Ahead), strings.Join(rep.Ahead, "\n  "))
	} else {
		fmt.Fprintf(w, "group %s: %d partition(s) checked; no Kafka commit passes the ledger\n", rep.Group, rep.Checked)
	}
	names := make([]string, 0, len(rep.DeadLetters))
	for p := range rep.DeadLetters {
		names = append(names, p)
	}
	sort.Strings(names)
	for _, p := range names {
		fmt.Fprintf(w, "pipeline %s: %d dead letter(s) in idemsink.dead_letters\n", p, rep.DeadLetters[p])
	}
	for _, r := range rep.Pipelines {
		fmt.Fprintf(w, "pipeline %s (%s), target dates %s: %d record(s) read (%d undecodable), %d key(s) on those dates, %d row(s) match, %d mismatch(es)\n",
			r.Pipeline, r.Table, r.Dates, r.Records, r.Undecodable, r.Keys, r.Matching, len(r.Findings))
		for _, f := range r.Findings {
			fmt.Fprintf(w, "  %-8s %s: %s\n", f.Kind, f.Key, f.Detail)
		}
	}
}
