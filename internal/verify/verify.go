// Package verify reconciles a pipeline's table with its topics for a range
// of target dates: it reads the topics from the start of the log (no group,
// no commits), keeps the newest record of each key, and compares the keys
// whose newest record falls on those dates with the table, in a
// transaction it rolls back. Its findings are keys missing from the table,
// rows whose content differs, rows older than the log's newest record, and
// rows no record explains (extra). Its SQL is in sql.go.
package verify

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/idemsink/idemsink/internal/config"
	"github.com/idemsink/idemsink/internal/decode"
	"github.com/idemsink/idemsink/internal/kafka"
	"github.com/idemsink/idemsink/internal/record"
)

// Options is what a reconciliation runs with.
type Options struct {
	Config *config.Config
	Pool   *pgxpool.Pool
	Logger *slog.Logger
	// Progress, if set, gives the meter of the read of total records.
	Progress func(what string, total int64) kafka.Meter
}

// Reconciliation compares one pipeline's table with its topics for a range
// of target dates.
type Reconciliation struct {
	Pipeline    string    `json:"pipeline"`
	Table       string    `json:"table"`
	Dates       string    `json:"dates"`
	Records     int64     `json:"records_read"`
	Undecodable int64     `json:"undecodable"`
	Keys        int       `json:"keys"`
	Matching    int       `json:"matching"`
	Findings    []Finding `json:"findings"`
}

// Finding is one key that does not match.
type Finding struct {
	Kind   string `json:"kind"` // Missing, Extra, Differs, Older
	Key    string `json:"key"`
	Detail string `json:"detail"`
	// row is, for an Extra finding, the table row as it was read, so that
	// DeleteExtra removes it only if it has not changed since.
	row *record.Row
}

// Kinds of finding.
const (
	Missing = "missing" // the key's newest record is not in the table
	Extra   = "extra"   // a row on the dates that no record of the topics has
	Differs = "differs" // the row's content is not the newest record's
	Older   = "older"   // the row is an older version than the newest record
)

// newest is what the log says of a key: its newest record, with the
// decoded row kept only when the record falls on the dates reconciled.
type newest struct {
	row  record.Row
	date record.Date
}

// Reconcile reads p's topics over spans, keeps the newest record per key,
// and compares the keys whose newest record falls in r with the table.
// Nothing is written.
func Reconcile(ctx context.Context, o Options, p *config.Pipeline, r record.Dates, spans []kafka.Span) (Reconciliation, error) {
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	rec := Reconciliation{Pipeline: p.Name, Table: p.Schema + "." + p.Table, Dates: r.String(), Findings: []Finding{}}
	from, to := map[record.TP]int64{}, map[record.TP]int64{}
	var total int64
	for _, s := range spans {
		if slices.Contains(p.Topics, s.TP.Topic) {
			from[s.TP], to[s.TP] = s.Start, s.End
			total += s.End - s.Start
		}
	}
	dec := decode.NewDecoder(p)
	keys := map[record.ID]*newest{}
	var prog kafka.Meter = kafka.NoMeter{}
	if o.Progress != nil {
		prog = o.Progress("verify: read "+p.Name, total)
	}
	err := kafka.ReadRange(ctx, o.Config, log, from, to, func(kr *kgo.Record) error {
		prog.Add(1)
		rec.Records++
		row, d, err := dec.Decode(kr.Key, kr.Value, kafka.Position(kr))
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
		if !r.Has(d) && p.Format != "debezium" {
			row.Values = nil // only its position is needed
		}
		row.Key, row.Value = nil, nil
		if n, ok := keys[row.ID]; !ok || row.Newer(&n.row) {
			if ok {
				row.Fill(&n.row) // what an unchanged TOAST value held before
			}
			keys[row.ID] = &newest{row: row, date: d}
		}
		return nil
	})
	prog.Done()
	if err != nil {
		return rec, err
	}
	var expected []*newest
	for _, n := range keys {
		if r.Has(n.date) {
			expected = append(expected, n)
		}
	}
	rec.Keys = len(expected)

	q := newStatements(p)
	tx, err := o.Pool.Begin(ctx)
	if err != nil {
		return rec, fmt.Errorf("begin: %w", err)
	}
	// Nothing of this transaction is kept: the temporary table goes with it.
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // rolling back is the point
	if _, err := tx.Exec(ctx, q.create); err != nil {
		return rec, fmt.Errorf("create the expected rows' table: %w", err)
	}
	if _, err := tx.CopyFrom(ctx, pgx.Identifier{expectedTable}, q.cols, pgx.CopyFromSlice(len(expected), func(i int) ([]any, error) {
		row := &expected[i].row
		vals := append([]any{row.ID}, row.Values...)
		return append(vals, row.Version, row.Pos.Topic, row.Pos.Partition, row.Pos.Offset, row.Unavailable), nil
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
		f := Finding{Kind: kind, Key: showKey(p, key)}
		switch kind {
		case Missing:
			f.Detail = fmt.Sprintf("its newest record (%s at offset %d) is not in the table", pos.TP, pos.Offset)
		case Older:
			f.Detail = fmt.Sprintf("the table holds an older version than the log's newest (%s at offset %d)", pos.TP, pos.Offset)
		default:
			f.Detail = fmt.Sprintf("the table's content differs from the log's newest record (%s at offset %d); a replay of the date repairs it", pos.TP, pos.Offset)
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
		f := Finding{Kind: Extra, Key: showKey(p, key), Detail: "no record of the topics has this key",
			row: &record.Row{ID: record.ID(id.Bytes), Version: version, Pos: pos}}
		if n, ok := keys[record.ID(id.Bytes)]; ok {
			t := record.Row{Version: version, Pos: pos}
			f.Kind, f.Detail = Differs, fmt.Sprintf("the table dates it in %s, but its newest record (%s at offset %d) is of %s", r, n.row.Pos.TP, n.row.Pos.Offset, n.date)
			if n.row.Newer(&t) {
				f.Kind = Older
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

// DeleteExtra deletes the rows of rec's Extra findings from p's table, in
// one transaction, each only if it is still as it was read (same version
// and position): a row the live group rewrote since is left alone. It
// returns how many rows it deleted.
func DeleteExtra(ctx context.Context, pool *pgxpool.Pool, p *config.Pipeline, rec Reconciliation) (int, error) {
	var ids [][16]byte
	var versions, offsets []int64
	var topics []string
	var parts []int32
	for _, f := range rec.Findings {
		if f.Kind != Extra || f.row == nil {
			continue
		}
		r := f.row
		ids, versions = append(ids, r.ID), append(versions, r.Version)
		topics, parts, offsets = append(topics, r.Pos.Topic), append(parts, r.Pos.Partition), append(offsets, r.Pos.Offset)
	}
	if len(ids) == 0 {
		return 0, nil
	}
	tag, err := pool.Exec(ctx, newStatements(p).deleteExtra, ids, versions, topics, parts, offsets)
	if err != nil {
		return 0, fmt.Errorf("delete %d extra row(s) from %s.%s: %w", len(ids), p.Schema, p.Table, err)
	}
	return int(tag.RowsAffected()), nil
}
