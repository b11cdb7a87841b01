package sink

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/idemsink/idemsink/internal/config"
	"github.com/idemsink/idemsink/internal/record"
)

// Reading and marking dead letters: the queries of consumer dlq and
// consumer verify against idemsink.dead_letters, which Apply writes
// (insertDeadLetters in sql.go, insertDead in apply.go).
const (
	// countDeadLetters counts the dead letters of each pipeline.
	countDeadLetters = `SELECT pipeline, count(*) FROM idemsink.dead_letters GROUP BY 1`

	// selectDeadLetters is the one filter: every parameter is optional, so
	// that its SQL stays in one place. Pages follow (topic, partition,
	// offset) within a pipeline.
	selectDeadLetters = `SELECT pipeline, topic, partition, kafka_offset, key, value, headers, reason, created_at, replayed_at, replays, last_replay_at
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

	// markAttempted counts a replay attempt of dead letters that still
	// fail; a new reason from the decoder replaces the old one.
	markAttempted = `UPDATE idemsink.dead_letters d
SET replays = replays + 1, last_replay_at = now(), reason = coalesce(x.reason, d.reason)
FROM unnest($2::text[], $3::integer[], $4::bigint[], $5::text[]) AS x(topic, partition, off, reason)
WHERE d.pipeline = $1 AND d.topic = x.topic AND d.partition = x.partition AND d.kafka_offset = x.off`

	// markReplayed marks dead letters whose replay applied.
	markReplayed = `UPDATE idemsink.dead_letters d
SET replays = replays + 1, last_replay_at = now(), replayed_at = now()
FROM unnest($2::text[], $3::integer[], $4::bigint[]) AS x(topic, partition, off)
WHERE d.pipeline = $1 AND d.topic = x.topic AND d.partition = x.partition AND d.kafka_offset = x.off`

	// selectLanded reads where the target's rows stand, to tell a replayed
	// record that applied (or was superseded by a newer version) from one
	// PostgreSQL refused again. %s is the quoted target table.
	selectLanded = `SELECT record_id, _version, _src_topic, _src_partition, _src_offset FROM %s WHERE record_id = ANY($1)`
)

// DeadLetterFilter selects dead letters; zero fields select everything
// (Partition -1 for every partition). All includes those already replayed.
type DeadLetterFilter struct {
	Pipeline, Reason, Topic string
	Partition               int
	Since, Until            time.Time
	All                     bool
}

// StoredDeadLetter is one row of idemsink.dead_letters.
type StoredDeadLetter struct {
	Pipeline     string
	Pos          record.Position
	Key, Value   []byte // Value nil: a tombstone
	Headers      []byte // JSON, or nil
	Reason       string
	CreatedAt    time.Time
	ReplayedAt   *time.Time
	Replays      int
	LastReplayAt *time.Time
}

// DeadLetters returns the number of dead letters per pipeline.
func (s *Sink) DeadLetters(ctx context.Context) (map[string]int64, error) {
	rows, err := s.pool.Query(ctx, countDeadLetters)
	if err != nil {
		return nil, fmt.Errorf("count dead letters: %w", err)
	}
	out := map[string]int64{}
	var p string
	var n int64
	if _, err := pgx.ForEachRow(rows, []any{&p, &n}, func() error { out[p] = n; return nil }); err != nil {
		return nil, fmt.Errorf("count dead letters: %w", err)
	}
	return out, nil
}

// ListDeadLetters returns up to limit dead letters that match f, in Kafka
// order per pipeline, after the position from (within f.Pipeline: pages
// follow one pipeline); limit 0 is no limit. Start from StartOfDeadLetters.
func (s *Sink) ListDeadLetters(ctx context.Context, f DeadLetterFilter, from record.Position, limit int) ([]StoredDeadLetter, error) {
	nullTime := func(t time.Time) any {
		if t.IsZero() {
			return nil
		}
		return t
	}
	if limit <= 0 {
		limit = 1 << 30
	}
	rows, err := s.pool.Query(ctx, selectDeadLetters, f.Pipeline, f.Reason, f.Topic, f.Partition, nullTime(f.Since), nullTime(f.Until), f.All,
		from.Topic, from.Partition, from.Offset, limit)
	if err != nil {
		return nil, fmt.Errorf("read dead letters: %w", err)
	}
	dls, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (StoredDeadLetter, error) {
		var d StoredDeadLetter
		err := row.Scan(&d.Pipeline, &d.Pos.Topic, &d.Pos.Partition, &d.Pos.Offset, &d.Key, &d.Value, &d.Headers, &d.Reason, &d.CreatedAt,
			&d.ReplayedAt, &d.Replays, &d.LastReplayAt)
		return d, err
	})
	if err != nil {
		return nil, fmt.Errorf("read dead letters: %w", err)
	}
	return dls, nil
}

// StartOfDeadLetters is the position before every dead letter.
var StartOfDeadLetters = record.Position{TP: record.TP{Partition: -1}, Offset: -1}

// MarkReplayed records that the dead letters at pos of pipeline applied.
func (s *Sink) MarkReplayed(ctx context.Context, pipeline string, pos []record.Position) error {
	return s.mark(ctx, markReplayed, pipeline, pos, nil)
}

// MarkAttempted records a replay of the dead letters at pos of pipeline
// that failed again; reasons[i], if not "", is the new reason of pos[i].
func (s *Sink) MarkAttempted(ctx context.Context, pipeline string, pos []record.Position, reasons []string) error {
	rs := make([]*string, len(reasons))
	for i := range reasons {
		if reasons[i] != "" {
			rs[i] = &reasons[i]
		}
	}
	return s.mark(ctx, markAttempted, pipeline, pos, rs)
}

func (s *Sink) mark(ctx context.Context, stmt, pipeline string, pos []record.Position, reasons []*string) error {
	if len(pos) == 0 {
		return nil
	}
	topics, parts, offs := make([]string, len(pos)), make([]int32, len(pos)), make([]int64, len(pos))
	for i, p := range pos {
		topics[i], parts[i], offs[i] = p.Topic, p.Partition, p.Offset
	}
	args := []any{pipeline, topics, parts, offs}
	if reasons != nil {
		args = append(args, reasons)
	}
	if _, err := s.pool.Exec(ctx, stmt, args...); err != nil {
		return fmt.Errorf("record replay of %d dead letter(s): %w", len(pos), err)
	}
	return nil
}

// Landed returns, for the given record ids of p's table, the version and
// position of the row the table holds (Version and Pos set).
func (s *Sink) Landed(ctx context.Context, p *config.Pipeline, ids []record.ID) (map[record.ID]record.Row, error) {
	raw := make([][16]byte, len(ids))
	for i, id := range ids {
		raw[i] = id
	}
	res, err := s.pool.Query(ctx, fmt.Sprintf(selectLanded, quote(p.Schema, p.Table)), raw)
	if err != nil {
		return nil, fmt.Errorf("read replayed rows of %s: %w", p.Table, err)
	}
	out := map[record.ID]record.Row{}
	var r record.Row
	var id [16]byte
	if _, err := pgx.ForEachRow(res, []any{&id, &r.Version, &r.Pos.Topic, &r.Pos.Partition, &r.Pos.Offset}, func() error {
		out[id] = r
		return nil
	}); err != nil {
		return nil, fmt.Errorf("read replayed rows of %s: %w", p.Table, err)
	}
	return out, nil
}
