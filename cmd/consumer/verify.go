package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/idemsink/idemsink/internal/config"
	"github.com/idemsink/idemsink/internal/decode"
	"github.com/idemsink/idemsink/internal/record"
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
		var r dateRange
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
			if r, err = parseRange(*from, *to); err != nil {
				return fmt.Errorf("verify: %w", err)
			}
		}
		ps, err := choosePipelines(e.cfg, *only)
		if err != nil {
			return fmt.Errorf("verify: %w", err)
		}
		return verify(ctx, e, r, ps, *asJSON)
	}
}

// dateRange is an inclusive range of target dates; zero means none.
type dateRange struct{ From, To record.Date }

func parseRange(from, to string) (dateRange, error) {
	var r dateRange
	var err error
	if r.From, err = record.ParseDate(from); err != nil {
		return r, fmt.Errorf("%q is not a date (YYYY-MM-DD)", from)
	}
	r.To = r.From
	if to != "" {
		if r.To, err = record.ParseDate(to); err != nil {
			return r, fmt.Errorf("%q is not a date (YYYY-MM-DD)", to)
		}
	}
	if before(r.To, r.From) {
		return r, fmt.Errorf("--to %s is before --from %s", r.To, r.From)
	}
	return r, nil
}

func (r dateRange) has(d record.Date) bool { return !before(d, r.From) && !before(r.To, d) }

func (r dateRange) String() string {
	if r.From == r.To {
		return r.From.String()
	}
	return r.From.String() + ".." + r.To.String()
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
	Checked     int              `json:"partitions_checked"`
	Ahead       []string         `json:"committed_past_ledger"`
	DeadLetters map[string]int64 `json:"dead_letters"`
	Pipelines   []reconciliation `json:"reconciled,omitempty"`
}

// reconciliation compares one pipeline's table with its topics for a range
// of target dates.
type reconciliation struct {
	Pipeline    string    `json:"pipeline"`
	Table       string    `json:"table"`
	Dates       string    `json:"dates"`
	Records     int64     `json:"records_read"`
	Undecodable int64     `json:"undecodable"`
	Keys        int       `json:"keys"`
	Matching    int       `json:"matching"`
	Findings    []finding `json:"findings"`
}

// finding is one key that does not match.
type finding struct {
	Kind   string `json:"kind"` // missing, extra, differs, older
	Key    string `json:"key"`
	Detail string `json:"detail"`
}

func verify(ctx context.Context, e *env, r dateRange, pipelines []*config.Pipeline, asJSON bool) error {
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
	if r != (dateRange{}) {
		for _, p := range pipelines {
			rec, err := c.reconcile(ctx, e, p, r, ps)
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

// newest is what the log says of a key: its newest record, with the
// decoded row kept only when the record falls on the dates reconciled.
type newest struct {
	row  record.Row
	date record.Date
}

// reconcile reads p's topics from the start of the log to the end as it is
// now, keeps the newest record per key, and compares the keys whose newest
// record falls in r with the table, in a transaction it rolls back.
func (c *cluster) reconcile(ctx context.Context, e *env, p *config.Pipeline, r dateRange, ps []position) (reconciliation, error) {
	rec := reconciliation{Pipeline: p.Name, Table: p.Schema + "." + p.Table, Dates: r.String(), Findings: []finding{}}
	from, to := map[record.TP]int64{}, map[record.TP]int64{}
	var total int64
	for _, pos := range ps {
		if slices.Contains(p.Topics, pos.Topic) {
			from[pos.tp()], to[pos.tp()] = pos.Start, pos.End
			total += pos.End - pos.Start
		}
	}
	dec := decode.NewDecoder(p)
	keys := map[record.ID]*newest{}
	prog := newProgress(e.stderr, e.log, "verify: read "+p.Name, total)
	err := readRange(ctx, e.cfg, e.log, from, to, func(kr *kgo.Record) error {
		prog.add(1)
		rec.Records++
		row, d, err := dec.Decode(kr.Key, kr.Value, record.Position{TP: record.TP{Topic: kr.Topic, Partition: kr.Partition}, Offset: kr.Offset})
		if decode.Unavailable(err) {
			return err // an outage: the reconciliation cannot be trusted
		}
		if err != nil {
			rec.Undecodable++
			return nil
		}
		if row.Ignore {
			return nil // changes nothing
		}
		if !r.has(d) {
			row.Values = nil // only its position is needed
		}
		row.Key, row.Value = nil, nil
		if n, ok := keys[row.ID]; !ok || row.Newer(&n.row) {
			keys[row.ID] = &newest{row: row, date: d}
		}
		return nil
	})
	prog.done()
	if err != nil {
		return rec, err
	}
	var expected []*newest
	for _, n := range keys {
		if r.has(n.date) {
			expected = append(expected, n)
		}
	}
	rec.Keys = len(expected)

	q := newReconcileSQL(p)
	tx, err := c.pool.Begin(ctx)
	if err != nil {
		return rec, fmt.Errorf("begin: %w", err)
	}
	// Nothing of this transaction is kept: the temporary table goes with it.
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // rolling back is the point
	if _, err := tx.Exec(ctx, q.create); err != nil {
		return rec, fmt.Errorf("create the expected rows' table: %w", err)
	}
	if _, err := tx.CopyFrom(ctx, pgx.Identifier{"_idemsink_expected"}, q.cols, pgx.CopyFromSlice(len(expected), func(i int) ([]any, error) {
		row := &expected[i].row
		vals := append([]any{row.ID}, row.Values...)
		return append(vals, row.Version, row.Pos.Topic, row.Pos.Partition, row.Pos.Offset), nil
	})); err != nil {
		return rec, fmt.Errorf("copy %d expected rows: %w", len(expected), err)
	}
	rows, err := tx.Query(ctx, q.compare)
	if err != nil {
		return rec, fmt.Errorf("compare with %s: %w", rec.Table, err)
	}
	var kind string
	var key []string
	var pos record.Position
	bad := 0
	if _, err := pgx.ForEachRow(rows, []any{&kind, &key, &pos.Topic, &pos.Partition, &pos.Offset}, func() error {
		bad++
		f := finding{Kind: kind, Key: showKey(p, key)}
		switch kind {
		case "missing":
			f.Detail = fmt.Sprintf("its newest record (%s at offset %d) is not in the table", pos.TP, pos.Offset)
		case "older":
			f.Detail = fmt.Sprintf("the table holds an older version than the log's newest (%s at offset %d)", pos.TP, pos.Offset)
		default:
			f.Detail = fmt.Sprintf("the table's content differs from the log's newest record (%s at offset %d); a replay keeps a row at the same version: delete the row, then replay", pos.TP, pos.Offset)
		}
		rec.Findings = append(rec.Findings, f)
		return nil
	}); err != nil {
		return rec, fmt.Errorf("compare with %s: %w", rec.Table, err)
	}
	rec.Matching = len(expected) - bad
	if q.extra == "" {
		return rec, nil
	}
	rows, err = tx.Query(ctx, q.extra, r.From.Time(), r.To.Time(), p.Date.TimeZone)
	if err != nil {
		return rec, fmt.Errorf("look for extra rows in %s: %w", rec.Table, err)
	}
	var id pgtype.UUID
	var version int64
	if _, err := pgx.ForEachRow(rows, []any{&key, &id, &version, &pos.Topic, &pos.Partition, &pos.Offset}, func() error {
		f := finding{Kind: "extra", Key: showKey(p, key), Detail: "no record of the topics has this key"}
		if n, ok := keys[record.ID(id.Bytes)]; ok {
			t := record.Row{Version: version, Pos: pos}
			f.Kind, f.Detail = "differs", fmt.Sprintf("the table dates it in %s, but its newest record (%s at offset %d) is of %s", r, n.row.Pos.TP, n.row.Pos.Offset, n.date)
			if n.row.Newer(&t) {
				f.Kind = "older"
			}
		}
		rec.Findings = append(rec.Findings, f)
		return nil
	}); err != nil {
		return rec, fmt.Errorf("look for extra rows in %s: %w", rec.Table, err)
	}
	return rec, nil
}

func showKey(p *config.Pipeline, vals []string) string {
	parts := make([]string, len(vals))
	for i, v := range vals {
		parts[i] = p.Key[i] + "=" + v
	}
	return strings.Join(parts, " ")
}

// reconcileSQL holds verify's statements for one pipeline, built from
// validated configuration with every identifier quoted.
type reconcileSQL struct {
	cols    []string
	create  string
	compare string // kind, key, topic, partition, offset of expected rows that do not match
	extra   string // key, record_id, version, topic, partition, offset of table rows on the dates ($1..$2, zone $3) not expected
}

func newReconcileSQL(p *config.Pipeline) reconcileSQL {
	target := pgx.Identifier{p.Schema, p.Table}.Sanitize()
	var defs, tCols, eCols, tKey, eKey []string
	for _, col := range p.Columns {
		q := pgx.Identifier{col.Name}.Sanitize()
		defs = append(defs, q+" "+col.Type)
		tCols, eCols = append(tCols, "t."+q), append(eCols, "e."+q)
	}
	for _, k := range p.Key {
		q := pgx.Identifier{k}.Sanitize()
		tKey, eKey = append(tKey, "t."+q+"::text"), append(eKey, "e."+q+"::text")
	}
	s := reconcileSQL{cols: append(append([]string{"record_id"}, p.ColumnNames()...), "_version", "_src_topic", "_src_partition", "_src_offset")}
	s.create = fmt.Sprintf(`CREATE TEMP TABLE _idemsink_expected (record_id uuid PRIMARY KEY, %s, _version bigint, _src_topic text, _src_partition integer, _src_offset bigint) ON COMMIT DROP`,
		strings.Join(defs, ", "))
	tContent := "(t._version, " + strings.Join(tCols, ", ") + ")"
	eContent := "(e._version, " + strings.Join(eCols, ", ") + ")"
	// A row may sit at an older position than the newest record with the
	// same content: the sink does not rewrite an unchanged row. Only a
	// different content is a mismatch; older or not says which kind.
	s.compare = fmt.Sprintf(`SELECT CASE WHEN t.record_id IS NULL THEN 'missing'
    WHEN (t._version, t._src_offset, t._src_partition, t._src_topic) < (e._version, e._src_offset, e._src_partition, e._src_topic) THEN 'older'
    ELSE 'differs' END,
  ARRAY[%s], e._src_topic, e._src_partition, e._src_offset
FROM _idemsink_expected e LEFT JOIN %s t ON t.record_id = e.record_id
WHERE t.record_id IS NULL OR %s IS DISTINCT FROM %s
ORDER BY e._src_topic, e._src_partition, e._src_offset`, strings.Join(eKey, ", "), target, tContent, eContent)
	if on := onDates(p); on != "" {
		s.extra = fmt.Sprintf(`SELECT ARRAY[%s], t.record_id, t._version, t._src_topic, t._src_partition, t._src_offset
FROM %s t WHERE %s AND NOT EXISTS (SELECT FROM _idemsink_expected e WHERE e.record_id = t.record_id)
ORDER BY t._src_topic, t._src_partition, t._src_offset`, strings.Join(tKey, ", "), target, on)
	}
	return s
}

// onDates is the condition that a table row t falls on the target dates
// $1..$2 in zone $3: from the column that holds the date field, else from
// the batch that wrote the row.
func onDates(p *config.Pipeline) string {
	for _, col := range p.Columns {
		if col.Field != p.Date.Field {
			continue
		}
		q := "t." + pgx.Identifier{col.Name}.Sanitize()
		switch col.Type {
		case "timestamptz":
			return fmt.Sprintf("(%s AT TIME ZONE $3::text)::date BETWEEN $1::date AND $2::date", q)
		case "date":
			return fmt.Sprintf("%s BETWEEN $1::date AND $2::date AND $3::text IS NOT NULL", q)
		case "bigint":
			return fmt.Sprintf("(to_timestamp(%s / 1000.0) AT TIME ZONE $3::text)::date BETWEEN $1::date AND $2::date", q)
		}
	}
	return `EXISTS (SELECT FROM idemsink.batches b WHERE b.batch_id = t._batch_id AND b.target_date BETWEEN $1::date AND $2::date AND $3::text IS NOT NULL)`
}
