package sink

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/idemsink/idemsink/internal/record"
	"github.com/idemsink/idemsink/migrations"
)

// Migrate applies the ledger migrations on one connection of pool, under
// the migration tool's advisory lock, and returns the schema version.
func Migrate(ctx context.Context, pool *pgxpool.Pool) (int32, error) {
	var v int32
	err := pool.AcquireFunc(ctx, func(c *pgxpool.Conn) error {
		var err error
		v, err = migrations.Migrate(ctx, c.Conn(), -1)
		return err
	})
	return v, err
}

// Offsets returns the group's ledger entries.
func (s *Sink) Offsets(ctx context.Context, group string) ([]Offset, error) {
	rows, err := s.pool.Query(ctx, readOffsets, group)
	if err != nil {
		return nil, fmt.Errorf("read ledger offsets: %w", err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Offset, error) {
		var o Offset
		err := r.Scan(&o.TP.Topic, &o.TP.Partition, &o.Applied, &o.Generation, &o.Member, &o.UpdatedAt)
		return o, err
	})
}

// CaughtUp reports whether the group's ledger has applied every partition
// up to the given end offsets (see AppliedToEnd).
func (s *Sink) CaughtUp(ctx context.Context, group string, ends map[record.TP]int64) (bool, error) {
	offs, err := s.Offsets(ctx, group)
	if err != nil {
		return false, err
	}
	applied := map[record.TP]int64{}
	for _, o := range offs {
		applied[o.TP] = o.Applied
	}
	return AppliedToEnd(applied, ends), nil
}

// AppliedToEnd is the one definition of "caught up", for the demo, the
// bench and the tests: every partition of ends that has records (ends are
// the next offsets to be written, as Kafka's high watermark) has its last
// record applied in applied (applied offsets by partition; a partition
// absent has nothing applied).
func AppliedToEnd(applied, ends map[record.TP]int64) bool {
	for tp, end := range ends {
		if end <= 0 {
			continue
		}
		if a, ok := applied[tp]; !ok || a < end-1 {
			return false
		}
	}
	return true
}

// ResetLedger forgets the group's applied offsets for the topics, so that
// a replay from reset Kafka offsets applies every record again. It returns
// the number of partitions forgotten.
func (s *Sink) ResetLedger(ctx context.Context, group string, topics []string) (int, error) {
	tag, err := s.pool.Exec(ctx, "DELETE FROM idemsink.offsets WHERE group_id = $1 AND topic = ANY($2)", group, topics)
	if err != nil {
		return 0, fmt.Errorf("reset ledger: %w", err)
	}
	return int(tag.RowsAffected()), nil
}

// SetOffsets moves the group's ledger to the given next offsets (the first
// offset of each partition to apply), for an offset reset. It runs commit,
// the matching Kafka commit, while it holds the partitions' ledger rows
// locked, and keeps its change only if commit succeeds: a member that
// joins meanwhile blocks on those rows when it claims them, and then reads
// the new ledger beside the new Kafka offsets, never one without the other.
// Generations are kept, so older writers stay fenced out.
func (s *Sink) SetOffsets(ctx context.Context, group string, next map[record.TP]int64, commit func(context.Context) error) error {
	topics, parts, applied := make([]string, 0, len(next)), make([]int32, 0, len(next)), make([]int64, 0, len(next))
	for tp, n := range next {
		topics, parts, applied = append(topics, tp.Topic), append(parts, tp.Partition), append(applied, n-1)
	}
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, setOffsets, group, topics, parts, applied); err != nil {
			return fmt.Errorf("set ledger offsets: %w", err)
		}
		return commit(ctx)
	})
}

// setOffsets writes each partition's applied offset, creating the rows it
// lacks, in the fixed order lockOffsets uses so that it queues behind a
// batch instead of deadlocking with it.
const setOffsets = `INSERT INTO idemsink.offsets AS o (group_id, topic, partition, applied_offset, generation, member_id)
SELECT $1, x.topic, x.partition, x.applied, 0, 'offsets reset' FROM unnest($2::text[], $3::integer[], $4::bigint[]) AS x(topic, partition, applied)
ORDER BY x.topic, x.partition
ON CONFLICT (group_id, topic, partition) DO UPDATE
  SET applied_offset = EXCLUDED.applied_offset, member_id = 'offsets reset', updated_at = now()`

// LastBatches returns, per partition, when the group last applied a batch
// that held records of it. It reads the whole batch log of the group: an
// operator's command, not something to run per batch.
func (s *Sink) LastBatches(ctx context.Context, group string) (map[record.TP]time.Time, error) {
	rows, err := s.pool.Query(ctx, lastBatches, group)
	if err != nil {
		return nil, fmt.Errorf("read last batches: %w", err)
	}
	out := map[record.TP]time.Time{}
	var tp record.TP
	var at time.Time
	_, err = pgx.ForEachRow(rows, []any{&tp.Topic, &tp.Partition, &at}, func() error {
		out[tp] = at
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read last batches: %w", err)
	}
	return out, nil
}

const lastBatches = `SELECT r.topic, r.partition, max(b.at) FROM (
  SELECT last_applied_at AS at, ranges FROM idemsink.batches WHERE group_id = $1
  UNION ALL SELECT applied_at, ranges FROM idemsink.unchanged_applications WHERE group_id = $1
) AS b, jsonb_to_recordset(b.ranges) AS r(topic text, partition integer)
GROUP BY 1, 2`
