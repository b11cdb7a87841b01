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

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/idemsink/idemsink/internal/batch"
	"github.com/idemsink/idemsink/internal/config"
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

// dlqFilter selects dead letters; zero fields select everything.
type dlqFilter struct {
	pipeline, reason, topic string
	partition               int
	since, until            time.Time
	all                     bool
	limit                   int
}

// Dead-letter statements. The filter is one statement with optional
// parameters, so that its SQL stays in one place.
const (
	dlqSelect = `SELECT pipeline, topic, partition, kafka_offset, key, value, headers, reason, created_at, replayed_at, replays, last_replay_at
FROM idemsink.dead_letters
WHERE ($1 = '' OR pipeline = $1)
  AND ($2 = '' OR strpos(lower(reason), lower($2)) > 0)
  AND ($3 = '' OR topic = $3)
  AND ($4 < 0 OR partition = $4)
  AND ($5::timestamptz IS NULL OR created_at >= $5)
  AND ($6::timestamptz IS NULL OR created_at < $6)
  AND ($7 OR replayed_at IS NULL)
  AND (topic, partition, kafka_offset) > ($8, $9, $10)
ORDER BY pipeline, topic, partition, kafka_offset
LIMIT $11`

	// dlqAttempted counts a replay attempt of dead letters that still
	// fail; a new reason from the decoder replaces the old one.
	dlqAttempted = `UPDATE idemsink.dead_letters d
SET replays = replays + 1, last_replay_at = now(), reason = coalesce(x.reason, d.reason)
FROM unnest($2::text[], $3::integer[], $4::bigint[], $5::text[]) AS x(topic, partition, off, reason)
WHERE d.pipeline = $1 AND d.topic = x.topic AND d.partition = x.partition AND d.kafka_offset = x.off`

	dlqReplayed = `UPDATE idemsink.dead_letters d
SET replays = replays + 1, last_replay_at = now(), replayed_at = now()
FROM unnest($2::text[], $3::integer[], $4::bigint[]) AS x(topic, partition, off)
WHERE d.pipeline = $1 AND d.topic = x.topic AND d.partition = x.partition AND d.kafka_offset = x.off`

	// dlqLanded reads where the target's rows stand, to tell a replayed
	// record that applied (or was superseded by a newer version) from one
	// PostgreSQL refused again. %s is the quoted target table.
	dlqLanded = `SELECT record_id, _version, _src_topic, _src_partition, _src_offset FROM %s WHERE record_id = ANY($1)`
)

// deadLetter is one row of idemsink.dead_letters.
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

	key, value []byte
	null       bool // the value is NULL: a tombstone
}

func runDLQ(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, dlqUsage)
		return errors.New("dlq: give a subcommand, list or replay")
	}
	sub := args[0]
	switch sub {
	case "list", "replay":
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, dlqUsage)
		return nil
	default:
		fmt.Fprint(stderr, dlqUsage)
		return fmt.Errorf("dlq: unknown subcommand %q", sub)
	}
	fs := flag.NewFlagSet("dlq "+sub, flag.ContinueOnError)
	cfgPath := fs.String("config", "idemsink.yaml", "configuration file")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn, error")
	logFormat := fs.String("log-format", "text", "log format: text or json")
	var f dlqFilter
	var since, until string
	fs.StringVar(&f.pipeline, "pipeline", "", "only this pipeline")
	fs.StringVar(&f.reason, "reason", "", "only reasons containing this text (case-insensitive), e.g. a class: invalid-text, out-of-range")
	fs.StringVar(&f.topic, "topic", "", "only this topic")
	fs.IntVar(&f.partition, "partition", -1, "only this partition")
	fs.StringVar(&since, "since", "", "only dead letters created at or after this time (RFC 3339, YYYY-MM-DD, or a duration back from now like 24h)")
	fs.StringVar(&until, "until", "", "only dead letters created before this time (same forms as -since)")
	asJSON := false
	if sub == "list" {
		fs.BoolVar(&f.all, "all", false, "include dead letters already replayed")
		fs.IntVar(&f.limit, "limit", 100, "show at most this many; 0 for all")
		fs.BoolVar(&asJSON, "json", false, "one JSON object per line, with the raw bytes")
	}
	if help, err := parseFlags(fs, args[1:], stdout, dlqUsage); help || err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("dlq %s: unexpected argument %q", sub, fs.Arg(0))
	}
	now := time.Now()
	var err error
	if f.since, err = parseWhen(since, now); err != nil {
		return fmt.Errorf("-since: %w", err)
	}
	if f.until, err = parseWhen(until, now); err != nil {
		return fmt.Errorf("-until: %w", err)
	}
	log, err := newLogger(stderr, *logLevel, *logFormat)
	if err != nil {
		return err
	}
	cfg, err := config.Load(*cfgPath, getenv)
	if err != nil {
		return err
	}
	pool, err := connect(ctx, cfg)
	if err != nil {
		return err
	}
	defer pool.Close()
	if sub == "list" {
		return dlqList(ctx, pool, f, asJSON, stdout)
	}
	s := sink.New(pool, cfg, sink.Options{Logger: log})
	return dlqReplay(ctx, pool, s, cfg, f, stdout)
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

// after is a position to page from: dead letters sort by topic, partition
// and offset within a pipeline.
type after struct {
	topic     string
	partition int32
	offset    int64
}

func selectDeadLetters(ctx context.Context, pool *pgxpool.Pool, f dlqFilter, from after, limit int) ([]deadLetter, error) {
	nullTime := func(t time.Time) any {
		if t.IsZero() {
			return nil
		}
		return t
	}
	if limit <= 0 {
		limit = 1 << 30
	}
	rows, err := pool.Query(ctx, dlqSelect, f.pipeline, f.reason, f.topic, f.partition, nullTime(f.since), nullTime(f.until), f.all,
		from.topic, from.partition, from.offset, limit)
	if err != nil {
		return nil, fmt.Errorf("read dead letters: %w", err)
	}
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (deadLetter, error) {
		var d deadLetter
		var headers []byte
		err := row.Scan(&d.Pipeline, &d.Topic, &d.Partition, &d.Offset, &d.key, &d.value, &headers, &d.Reason, &d.CreatedAt,
			&d.ReplayedAt, &d.Replays, &d.LastReplayAt)
		d.null = d.value == nil
		d.Class = batch.ClassOf(d.Reason)
		d.Headers = headers
		d.ValueBytes = len(d.value)
		d.KeyBase64 = base64.StdEncoding.EncodeToString(d.key)
		d.ValueBase64 = base64.StdEncoding.EncodeToString(d.value)
		if d.key != nil && utf8.Valid(d.key) {
			k := string(d.key)
			d.KeyText = &k
		}
		if d.value != nil && utf8.Valid(d.value) {
			v := string(d.value)
			d.ValueText = &v
		}
		return d, err
	})
}

func dlqList(ctx context.Context, pool *pgxpool.Pool, f dlqFilter, asJSON bool, stdout io.Writer) error {
	dls, err := selectDeadLetters(ctx, pool, f, after{partition: -1, offset: -1}, f.limit)
	if err != nil {
		return err
	}
	if asJSON {
		enc := json.NewEncoder(stdout)
		for _, d := range dls {
			if err := enc.Encode(d); err != nil {
				return err
			}
		}
		return nil
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
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
	if f.limit > 0 && len(dls) == f.limit {
		fmt.Fprintf(stdout, "(first %d shown; -limit 0 shows all)\n", f.limit)
	}
	return nil
}

// preview is the start of a value, escaped onto one line.
func preview(d deadLetter) string {
	if d.null {
		return "null"
	}
	v := d.value
	if len(v) > 32 {
		return strconv.Quote(string(v[:32])) + "…"
	}
	return strconv.Quote(string(v))
}

// replayGroup is the ledger group replays apply under. It is not the
// daemon's: its applied offsets must not move, and it must not skip a
// dead letter because the daemon has moved past its offset.
func replayGroup(group string) string { return group + "/dlq-replay" }

// replayTally counts what a replay did.
type replayTally struct {
	replayed, failing, partial int
	applied                    sink.Result
}

// dlqReplay re-drives the pending dead letters that match f through the
// current configuration, one page at a time.
func dlqReplay(ctx context.Context, pool *pgxpool.Pool, s *sink.Sink, cfg *config.Config, f dlqFilter, stdout io.Writer) error {
	if err := s.EnsureTables(ctx, cfg); err != nil {
		return err
	}
	decoders := map[string]*batch.Decoder{}
	for i := range cfg.Pipelines {
		decoders[cfg.Pipelines[i].Name] = batch.NewDecoder(&cfg.Pipelines[i])
	}
	tallies := map[string]*replayTally{}
	var order []string
	const page = 1000
	f.all = false
	for _, p := range cfg.Pipelines {
		if f.pipeline != "" && f.pipeline != p.Name {
			continue
		}
		pf := f
		pf.pipeline = p.Name
		t := &replayTally{}
		tallies[p.Name] = t
		order = append(order, p.Name)
		from := after{partition: -1, offset: -1}
		for {
			dls, err := selectDeadLetters(ctx, pool, pf, from, page)
			if err != nil {
				return err
			}
			if len(dls) == 0 {
				break
			}
			if err := replayPage(ctx, pool, s, decoders[p.Name], cfg.Group, dls, t); err != nil {
				return err
			}
			last := dls[len(dls)-1]
			from = after{last.Topic, last.Partition, last.Offset}
			if len(dls) < page {
				break
			}
		}
	}
	for _, name := range order {
		t := tallies[name]
		a := t.applied
		fmt.Fprintf(stdout, "pipeline %s: %d replayed (%d inserted, %d updated, %d deleted, %d unchanged, %d stale or superseded), %d still failing, %d oversize kept only in part (not replayable)\n",
			name, t.replayed, a.Inserted, a.Updated, a.Deleted, a.Unchanged, t.replayed-a.Inserted-a.Updated-a.Deleted-a.Unchanged,
			t.failing, t.partial)
	}
	return nil
}

// replayPage decodes one page of dead letters of one pipeline, applies the
// rows through the sink, one batch per target date, and records the
// outcome of each dead letter.
func replayPage(ctx context.Context, pool *pgxpool.Pool, s *sink.Sink, dec *batch.Decoder, group string, dls []deadLetter, t *replayTally) error {
	p := dec.Pipeline()
	var failing []deadLetter
	var reasons []string
	batches := map[batch.Date]*batch.Batch{}
	decoded := map[batch.Date][]batch.Row{}
	byPos := map[batch.Position]deadLetter{}
	for _, d := range dls {
		if d.Class == batch.ClassOversize {
			t.partial++ // only its first bytes were kept
			continue
		}
		pos := batch.Position{TP: batch.TP{Topic: d.Topic, Partition: d.Partition}, Offset: d.Offset}
		byPos[pos] = d
		value := d.value
		if d.null {
			value = nil
		}
		row, date, err := dec.Decode(d.key, value, pos)
		if batch.Unavailable(err) {
			return fmt.Errorf("replay %s: %w", p.Name, err) // an outage, not a new reason: run again later
		}
		if err != nil {
			failing, reasons = append(failing, d), append(reasons, err.Error())
			continue
		}
		b := batches[date]
		if b == nil {
			b = batch.New(p, date, time.Now())
			batches[date] = b
		}
		b.Add(row)
		decoded[date] = append(decoded[date], row)
	}
	var replayed []deadLetter
	for date, b := range batches {
		res, err := s.Apply(ctx, b, sink.Commit{Group: replayGroup(group), Member: "consumer dlq replay"})
		if err != nil {
			return fmt.Errorf("replay %s batch of %s: %w", p.Name, date, err)
		}
		t.applied.Add(res)
		landed, err := whereRowsStand(ctx, pool, p, decoded[date])
		if err != nil {
			return err
		}
		for _, r := range decoded[date] {
			d := byPos[r.Pos]
			// A delete (applied under the version guard) or an ignored
			// tombstone is dealt with once its batch applies.
			if cur, ok := landed[r.ID]; r.Delete || r.Ignore || ok && !r.Newer(&cur) {
				replayed = append(replayed, d)
				continue
			}
			// Refused by PostgreSQL again: Apply has recorded the new
			// reason in the dead letter's row.
			failing, reasons = append(failing, d), append(reasons, "")
		}
	}
	if err := markDeadLetters(ctx, pool, p.Name, dlqReplayed, replayed, nil); err != nil {
		return err
	}
	if err := markDeadLetters(ctx, pool, p.Name, dlqAttempted, failing, reasons); err != nil {
		return err
	}
	t.replayed += len(replayed)
	t.failing += len(failing)
	return nil
}

// whereRowsStand returns, for the rows' record ids, the position of the
// version the target holds.
func whereRowsStand(ctx context.Context, pool *pgxpool.Pool, p *config.Pipeline, rows []batch.Row) (map[batch.ID]batch.Row, error) {
	ids := make([][16]byte, len(rows))
	for i, r := range rows {
		ids[i] = r.ID
	}
	q := fmt.Sprintf(dlqLanded, pgx.Identifier{p.Schema, p.Table}.Sanitize())
	res, err := pool.Query(ctx, q, ids)
	if err != nil {
		return nil, fmt.Errorf("read replayed rows of %s: %w", p.Table, err)
	}
	out := map[batch.ID]batch.Row{}
	var r batch.Row
	var id [16]byte
	_, err = pgx.ForEachRow(res, []any{&id, &r.Version, &r.Pos.Topic, &r.Pos.Partition, &r.Pos.Offset}, func() error {
		out[id] = r
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read replayed rows of %s: %w", p.Table, err)
	}
	return out, nil
}

// markDeadLetters runs stmt (dlqReplayed or dlqAttempted) for dls; reasons,
// for dlqAttempted, are the new reasons ("" keeps the stored one).
func markDeadLetters(ctx context.Context, pool *pgxpool.Pool, pipeline, stmt string, dls []deadLetter, reasons []string) error {
	if len(dls) == 0 {
		return nil
	}
	topics, parts, offs := make([]string, len(dls)), make([]int32, len(dls)), make([]int64, len(dls))
	for i, d := range dls {
		topics[i], parts[i], offs[i] = d.Topic, d.Partition, d.Offset
	}
	args := []any{pipeline, topics, parts, offs}
	if reasons != nil {
		rs := make([]*string, len(reasons))
		for i := range reasons {
			if reasons[i] != "" {
				rs[i] = &reasons[i]
			}
		}
		args = append(args, rs)
	}
	if _, err := pool.Exec(ctx, stmt, args...); err != nil {
		return fmt.Errorf("record replay of %d dead letter(s): %w", len(dls), err)
	}
	return nil
}
