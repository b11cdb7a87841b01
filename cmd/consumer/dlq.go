package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/idemsink/idemsink/internal/record"
	"github.com/idemsink/idemsink/internal/replay"
	"github.com/idemsink/idemsink/internal/sink"
)

const dlqUsage = `usage: consumer dlq <list|replay> [flags]

  list    show pending dead letters in Kafka order, as a table or with -json
  replay  decode pending dead letters again with the current configuration
          and apply those that now fit; run it after fixing the cause on
          this side, such as a wider column (the stored bytes are what is
          replayed, so fixing the producer does not change them). Applied
          ones are marked replayed and leave the list; the rest keep their
          row with the latest reason.

Filters (both): -pipeline, -reason (a substring, e.g. a class such as
out-of-range), -topic, -partition, -since and -until (RFC 3339, a date, or a
duration back from now such as 24h), -all (list only: include replayed ones).

Run "consumer dlq <list|replay> -h" for every flag.
`

const dlqListHelp = `Show pending dead letters in Kafka order, as a table or with -json.

examples:
  consumer dlq list -config idemsink.yaml -reason out-of-range
  consumer dlq list -config idemsink.yaml -json -limit 0 -since 24h
`

const dlqReplayHelp = `Decode pending dead letters again with the current configuration and apply
those that now fit, through the daemon's batching (batch.max_records) and
retries; applied ones are marked replayed, the rest keep their row with the
latest reason. Oversize dead letters keep only their first bytes and are not
replayed.

examples:
  consumer dlq replay -config idemsink.yaml -reason out-of-range
`

// dlqFilterFlags defines the filter flags both dlq subcommands take, and
// returns the function that reads them once parsed.
func dlqFilterFlags(fs *flag.FlagSet) func() (sink.DeadLetterFilter, error) {
	var f sink.DeadLetterFilter
	var since, until string
	fs.StringVar(&f.Pipeline, "pipeline", "", "only this pipeline")
	fs.StringVar(&f.Reason, "reason", "", "only reasons containing this text (case-insensitive), e.g. a class: invalid-text, out-of-range")
	fs.StringVar(&f.Topic, "topic", "", "only this topic")
	fs.IntVar(&f.Partition, "partition", -1, "only this partition")
	fs.StringVar(&since, "since", "", "only dead letters created at or after this time (RFC 3339, YYYY-MM-DD, or a duration back from now like 24h)")
	fs.StringVar(&until, "until", "", "only dead letters created before this time (same forms as -since)")
	return func() (sink.DeadLetterFilter, error) {
		now := time.Now()
		var err error
		if f.Since, err = parseWhen(since, now); err != nil {
			return f, fmt.Errorf("-since: %w", err)
		}
		if f.Until, err = parseWhen(until, now); err != nil {
			return f, fmt.Errorf("-until: %w", err)
		}
		return f, nil
	}
}

func dlqListFlags(fs *flag.FlagSet) func(context.Context, *env) error {
	filter := dlqFilterFlags(fs)
	all := fs.Bool("all", false, "include dead letters already replayed")
	limit := fs.Int("limit", 100, "show at most this many; 0 for all")
	asJSON := fs.Bool("json", false, "one JSON object per line, with the raw bytes")
	return func(ctx context.Context, e *env) error {
		f, err := filter()
		if err != nil {
			return err
		}
		f.All = *all
		pool, err := connect(ctx, e.cfg)
		if err != nil {
			return err
		}
		defer pool.Close()
		stored, err := sink.New(pool, e.cfg, sink.Options{Logger: e.log}).ListDeadLetters(ctx, f, sink.StartOfDeadLetters, *limit)
		if err != nil {
			return err
		}
		dls := make([]deadLetter, len(stored))
		for i, d := range stored {
			dls[i] = shown(d)
		}
		if *asJSON {
			enc := json.NewEncoder(e.stdout)
			for _, d := range dls {
				if err := enc.Encode(d); err != nil {
					return err
				}
			}
			return nil
		}
		return printDeadLetters(e.stdout, dls, *limit)
	}
}

func dlqReplayFlags(fs *flag.FlagSet) func(context.Context, *env) error {
	filter := dlqFilterFlags(fs)
	return func(ctx context.Context, e *env) error {
		f, err := filter()
		if err != nil {
			return err
		}
		pool, err := connect(ctx, e.cfg)
		if err != nil {
			return err
		}
		defer pool.Close()
		s := sink.New(pool, e.cfg, sink.Options{Logger: e.log})
		reps, err := replay.DeadLetters(ctx, replay.Options{Config: e.cfg, Sink: s, Logger: e.log}, f)
		if err != nil {
			return err
		}
		for _, r := range reps {
			a := r.Applied
			fmt.Fprintf(e.stdout, "pipeline %s: %d replayed (%d inserted, %d updated, %d deleted, %d unchanged, %d stale or superseded), %d still failing, %d oversize kept only in part (not replayable)\n",
				r.Pipeline, r.Replayed, a.Inserted, a.Updated, a.Deleted, a.Unchanged, r.Replayed-a.Inserted-a.Updated-a.Deleted-a.Unchanged,
				r.Failing, r.Partial)
		}
		return nil
	}
}

// parseWhen reads a time given as RFC 3339, a date (midnight UTC), or a
// duration back from now.
func parseWhen(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		return t, nil
	}
	if d, err := time.ParseDuration(s); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	return time.Time{}, fmt.Errorf("%q is not an RFC 3339 time, a YYYY-MM-DD date or a duration like 24h", s)
}

// deadLetter is how dlq list shows a dead letter.
type deadLetter struct {
	Pipeline     string          `json:"pipeline"`
	Topic        string          `json:"topic"`
	Partition    int32           `json:"partition"`
	Offset       int64           `json:"offset"`
	Class        string          `json:"class"`
	Reason       string          `json:"reason"`
	CreatedAt    time.Time       `json:"created_at"`
	ReplayedAt   *time.Time      `json:"replayed_at,omitempty"`
	Replays      int             `json:"replays"`
	LastReplayAt *time.Time      `json:"last_replay_at,omitempty"`
	Headers      json.RawMessage `json:"headers,omitempty"`
	// KeyText and ValueText are the bytes as text when they are valid
	// UTF-8; the base64 fields always hold them exactly.
	KeyText     *string `json:"key_text,omitempty"`
	ValueText   *string `json:"value_text,omitempty"`
	KeyBase64   string  `json:"key_base64,omitempty"`
	ValueBase64 string  `json:"value_base64,omitempty"`
	ValueBytes  int     `json:"value_bytes"`

	value []byte
}

func shown(s sink.StoredDeadLetter) deadLetter {
	d := deadLetter{Pipeline: s.Pipeline, Topic: s.Pos.Topic, Partition: s.Pos.Partition, Offset: s.Pos.Offset,
		Class: record.ClassOf(s.Reason), Reason: s.Reason, CreatedAt: s.CreatedAt, ReplayedAt: s.ReplayedAt, Replays: s.Replays,
		LastReplayAt: s.LastReplayAt, Headers: s.Headers, ValueBytes: len(s.Value),
		KeyBase64: base64.StdEncoding.EncodeToString(s.Key), ValueBase64: base64.StdEncoding.EncodeToString(s.Value), value: s.Value}
	if s.Key != nil && utf8.Valid(s.Key) {
		k := string(s.Key)
		d.KeyText = &k
	}
	if s.Value != nil && utf8.Valid(s.Value) {
		v := string(s.Value)
		d.ValueText = &v
	}
	return d
}

func printDeadLetters(w io.Writer, dls []deadLetter, limit int) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PIPELINE\tTOPIC\tPARTITION\tOFFSET\tCREATED\tREPLAYS\tVALUE\tREASON")
	for _, d := range dls {
		replays := strconv.Itoa(d.Replays)
		if d.ReplayedAt != nil {
			replays += " (replayed)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%s\t%s\t%s\n", d.Pipeline, d.Topic, d.Partition, d.Offset,
			d.CreatedAt.UTC().Format(time.RFC3339), replays, preview(d), d.Reason)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if limit > 0 && len(dls) == limit {
		fmt.Fprintf(w, "(first %d shown; -limit 0 shows all)\n", limit)
	}
	return nil
}

// preview is the start of a value, escaped onto one line.
func preview(d deadLetter) string {
	if d.value == nil {
		return "null"
	}
	v := d.value
	if len(v) > 32 {
		return strconv.Quote(string(v[:32])) + "…"
	}
	return strconv.Quote(string(v))
}

// dlqCommand checks what follows "dlq": a subcommand, or a request for
// the usage.
func dlqCommand(args []string, stdout, stderr io.Writer) (handled bool, err error) {
	if len(args) == 0 {
		fmt.Fprint(stderr, dlqUsage)
		return true, errors.New("dlq: give a subcommand, list or replay")
	}
	switch args[0] {
	case "list", "replay":
		return false, nil
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, dlqUsage)
		return true, nil
	}
	fmt.Fprint(stderr, dlqUsage)
	return true, fmt.Errorf("dlq: unknown subcommand %q", args[0])
}
