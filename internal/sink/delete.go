package sink

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/idemsink/idemsink/internal/batch"
	"github.com/idemsink/idemsink/internal/record"
)

// Deletes keep the deleted key's position in idemsink.tombstones (see
// migrations/003), because the row that carried it is gone. Two rules
// follow, both under the same total order as the upsert's version guard,
// (version, offset, partition, topic):
//
//   - a delete removes the target row only if it is newer than the row; a
//     late delete leaves a newer row alone;
//   - a staged row at or below its key's tombstone is stale: it is taken
//     out of the stage before the upsert, so a late, older upsert cannot
//     bring a deleted row back.
//
// A delete at or below the tombstone already kept (a redelivery, a replay)
// writes nothing at all, like an unchanged row.

// splitDeletes separates a unit's deletes from its upserts.
func splitDeletes(rows []batch.Dated) (upserts, deletes []batch.Dated) {
	for i, r := range rows {
		if r.Delete {
			if deletes == nil {
				upserts = append(make([]batch.Dated, 0, len(rows)), rows[:i]...)
			}
			deletes = append(deletes, r)
		} else if deletes != nil {
			upserts = append(upserts, r)
		}
	}
	if deletes == nil {
		return rows, nil
	}
	return upserts, deletes
}

// dropTombstoned takes out of the stage the rows a tombstone supersedes,
// and hands their number per batch id to took. $1 is the pipeline.
func dropTombstoned(ctx context.Context, tx pgx.Tx, st *statements, pipeline string, took func(record.ID, int64) error) error {
	rows, err := tx.Query(ctx, fmt.Sprintf(`WITH gone AS (
  DELETE FROM %s s USING idemsink.tombstones k
  WHERE k.pipeline = $1 AND k.record_id = s.record_id
    AND (k.version, k.src_offset, k.src_partition, k.src_topic) >= (s._version, s._src_offset, s._src_partition, s._src_topic)
  RETURNING s._batch_id
)
SELECT _batch_id, count(*) FROM gone GROUP BY _batch_id`, st.stage), pipeline)
	if err != nil {
		return fmt.Errorf("drop tombstoned rows from the stage: %w", err)
	}
	var id record.ID
	var n int64
	if _, err := pgx.ForEachRow(rows, []any{&id, &n}, func() error { return took(id, n) }); err != nil {
		return fmt.Errorf("drop tombstoned rows from the stage: %w", err)
	}
	return nil
}

// applyDeletes keeps the tombstones and removes the rows older than them,
// then verifies that no key of the unit's deletes is left at an older
// position. It hands the number of target rows removed per batch id (ids
// holds the batch id of each date index) to took.
func applyDeletes(ctx context.Context, tx pgx.Tx, st *statements, pipeline string, dels []batch.Dated, ids []record.ID, took func(record.ID, int64) error) error {
	if len(dels) == 0 {
		return nil
	}
	n := len(dels)
	rids, versions, topics, parts, offs, batches := make([]record.ID, n), make([]int64, n), make([]string, n), make([]int32, n), make([]int64, n), make([]record.ID, n)
	for i, r := range dels {
		rids[i], versions[i], topics[i], parts[i], offs[i], batches[i] = r.ID, r.Version, r.Pos.Topic, r.Pos.Partition, r.Pos.Offset, ids[r.Batch]
	}
	// input is the deletes as a relation, from parameters $first on.
	input := func(first int) string {
		return fmt.Sprintf(`SELECT * FROM unnest($%d::uuid[], $%d::bigint[], $%d::text[], $%d::integer[], $%d::bigint[], $%d::uuid[]) AS x(record_id, version, topic, part, off, batch_id)`,
			first, first+1, first+2, first+3, first+4, first+5)
	}
	rows, err := tx.Query(ctx, fmt.Sprintf(`WITH d AS (%s),
newer AS (
  SELECT d.* FROM d WHERE NOT EXISTS (SELECT FROM idemsink.tombstones k WHERE k.pipeline = $1 AND k.record_id = d.record_id
    AND (k.version, k.src_offset, k.src_partition, k.src_topic) >= (d.version, d.off, d.part, d.topic))
),
kept AS (
  INSERT INTO idemsink.tombstones AS k (pipeline, record_id, version, src_topic, src_partition, src_offset, batch_id)
  SELECT $1, record_id, version, topic, part, off, batch_id FROM newer
  ON CONFLICT (pipeline, record_id) DO UPDATE SET version = EXCLUDED.version, src_topic = EXCLUDED.src_topic,
    src_partition = EXCLUDED.src_partition, src_offset = EXCLUDED.src_offset, batch_id = EXCLUDED.batch_id, deleted_at = now()
  RETURNING 1
),
gone AS (
  DELETE FROM %s t USING newer d WHERE t.record_id = d.record_id
    AND (d.version, d.off, d.part, d.topic) > (t._version, t._src_offset, t._src_partition, t._src_topic)
  RETURNING d.batch_id
)
SELECT batch_id, count(*) FROM gone GROUP BY batch_id`, input(2), st.target),
		pipeline, rids, versions, topics, parts, offs, batches)
	if err != nil {
		return fmt.Errorf("delete from %s: %w", st.target, err)
	}
	var id record.ID
	var gone int64
	if _, err := pgx.ForEachRow(rows, []any{&id, &gone}, func() error { return took(id, gone) }); err != nil {
		return fmt.Errorf("delete from %s: %w", st.target, err)
	}
	// Contract 6 (docs/design.md) for deletes: no deleted key is left
	// behind its delete.
	var behind int64
	if err := tx.QueryRow(ctx, fmt.Sprintf(`WITH d AS (%s)
SELECT count(*) FROM d JOIN %s t ON t.record_id = d.record_id
WHERE (t._version, t._src_offset, t._src_partition, t._src_topic) < (d.version, d.off, d.part, d.topic)`, input(1), st.target),
		rids, versions, topics, parts, offs, batches).Scan(&behind); err != nil {
		return fmt.Errorf("verify deletes from %s: %w", st.target, err)
	}
	if behind != 0 {
		return &VerifyError{Staged: int64(n), Copied: int64(n), Behind: behind}
	}
	return nil
}

// withoutTombstoned is dropTombstoned for the row-by-row path, which
// upserts before it stages: it returns the rows no tombstone supersedes,
// and adds the others to their date's count in tombstoned.
func withoutTombstoned(ctx context.Context, tx pgx.Tx, pipeline string, rows []batch.Dated, tombstoned []int64) ([]batch.Dated, error) {
	if len(rows) == 0 {
		return rows, nil
	}
	n := len(rows)
	ids, versions, topics, parts, offs := make([]record.ID, n), make([]int64, n), make([]string, n), make([]int32, n), make([]int64, n)
	for i, r := range rows {
		ids[i], versions[i], topics[i], parts[i], offs[i] = r.ID, r.Version, r.Pos.Topic, r.Pos.Partition, r.Pos.Offset
	}
	q, err := tx.Query(ctx, `SELECT x.record_id FROM unnest($2::uuid[], $3::bigint[], $4::text[], $5::integer[], $6::bigint[]) AS x(record_id, version, topic, part, off)
JOIN idemsink.tombstones k ON k.pipeline = $1 AND k.record_id = x.record_id
WHERE (k.version, k.src_offset, k.src_partition, k.src_topic) >= (x.version, x.off, x.part, x.topic)`, pipeline, ids, versions, topics, parts, offs)
	if err != nil {
		return nil, fmt.Errorf("find tombstoned rows: %w", err)
	}
	gone, err := pgx.CollectRows(q, pgx.RowTo[[16]byte])
	if err != nil {
		return nil, fmt.Errorf("find tombstoned rows: %w", err)
	}
	if len(gone) == 0 {
		return rows, nil
	}
	drop := map[record.ID]bool{}
	for _, id := range gone {
		drop[id] = true
	}
	kept := make([]batch.Dated, 0, n-len(gone))
	for _, r := range rows {
		if drop[r.ID] {
			tombstoned[r.Batch]++
			continue
		}
		kept = append(kept, r)
	}
	return kept, nil
}
