package sink

import (
	"context"
	"fmt"

	"github.com/idemsink/idemsink/internal/record"
	"github.com/jackc/pgx/v5"
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

// splitDeletes separates a batch's deletes from its upserts.
func splitDeletes(rows []record.Row) (upserts, deletes []record.Row) {
	for i, r := range rows {
		if r.Delete {
			if deletes == nil {
				upserts = append(make([]record.Row, 0, len(rows)), rows[:i]...)
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

// dropTombstoned takes out of the stage the rows a tombstone supersedes and
// returns how many. $1 is the pipeline.
func dropTombstoned(ctx context.Context, tx pgx.Tx, st *statements, pipeline string) (int64, error) {
	tag, err := tx.Exec(ctx, fmt.Sprintf(`DELETE FROM %s s USING idemsink.tombstones k
WHERE k.pipeline = $1 AND k.record_id = s.record_id
  AND (k.version, k.src_offset, k.src_partition, k.src_topic) >= (s._version, s._src_offset, s._src_partition, s._src_topic)`, st.stage), pipeline)
	if err != nil {
		return 0, fmt.Errorf("drop tombstoned rows from the stage: %w", err)
	}
	return tag.RowsAffected(), nil
}

// applyDeletes keeps the tombstones and removes the rows older than them,
// then verifies that no key of the batch's deletes is left at an older
// position. It returns the number of target rows removed.
func applyDeletes(ctx context.Context, tx pgx.Tx, st *statements, pipeline string, batchID [16]byte, dels []record.Row) (int, error) {
	if len(dels) == 0 {
		return 0, nil
	}
	n := len(dels)
	ids, versions, topics, parts, offs := make([]record.ID, n), make([]int64, n), make([]string, n), make([]int32, n), make([]int64, n)
	for i, r := range dels {
		ids[i], versions[i], topics[i], parts[i], offs[i] = r.ID, r.Version, r.Pos.Topic, r.Pos.Partition, r.Pos.Offset
	}
	// input is the deletes as a relation, from parameters $first on.
	input := func(first int) string {
		return fmt.Sprintf(`SELECT * FROM unnest($%d::uuid[], $%d::bigint[], $%d::text[], $%d::integer[], $%d::bigint[]) AS x(record_id, version, topic, part, off)`,
			first, first+1, first+2, first+3, first+4)
	}
	var kept, gone int64
	err := tx.QueryRow(ctx, fmt.Sprintf(`WITH d AS (%s),
newer AS (
  SELECT d.* FROM d WHERE NOT EXISTS (SELECT FROM idemsink.tombstones k WHERE k.pipeline = $1 AND k.record_id = d.record_id
    AND (k.version, k.src_offset, k.src_partition, k.src_topic) >= (d.version, d.off, d.part, d.topic))
),
kept AS (
  INSERT INTO idemsink.tombstones AS k (pipeline, record_id, version, src_topic, src_partition, src_offset, batch_id)
  SELECT $1, record_id, version, topic, part, off, $7 FROM newer
  ON CONFLICT (pipeline, record_id) DO UPDATE SET version = EXCLUDED.version, src_topic = EXCLUDED.src_topic,
    src_partition = EXCLUDED.src_partition, src_offset = EXCLUDED.src_offset, batch_id = EXCLUDED.batch_id, deleted_at = now()
  RETURNING 1
),
gone AS (
  DELETE FROM %s t USING newer d WHERE t.record_id = d.record_id
    AND (d.version, d.off, d.part, d.topic) > (t._version, t._src_offset, t._src_partition, t._src_topic)
  RETURNING 1
)
SELECT (SELECT count(*) FROM kept), (SELECT count(*) FROM gone)`, input(2), st.target),
		pipeline, ids, versions, topics, parts, offs, record.ID(batchID)).Scan(&kept, &gone)
	if err != nil {
		return 0, fmt.Errorf("delete from %s: %w", st.target, err)
	}
	// Contract 6 (docs/design.md) for deletes: no deleted key is left
	// behind its delete.
	var behind int64
	if err := tx.QueryRow(ctx, fmt.Sprintf(`WITH d AS (%s)
SELECT count(*) FROM d JOIN %s t ON t.record_id = d.record_id
WHERE (t._version, t._src_offset, t._src_partition, t._src_topic) < (d.version, d.off, d.part, d.topic)`, input(1), st.target),
		ids, versions, topics, parts, offs).Scan(&behind); err != nil {
		return 0, fmt.Errorf("verify deletes from %s: %w", st.target, err)
	}
	if behind != 0 {
		return 0, &VerifyError{Staged: int64(n), Copied: int64(n), Behind: behind}
	}
	return int(gone), nil
}

// withoutTombstoned is dropTombstoned for the row-by-row path, which
// upserts before it stages: it returns the rows no tombstone supersedes.
func withoutTombstoned(ctx context.Context, tx pgx.Tx, pipeline string, rows []record.Row) ([]record.Row, int64, error) {
	if len(rows) == 0 {
		return rows, 0, nil
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
		return nil, 0, fmt.Errorf("find tombstoned rows: %w", err)
	}
	gone, err := pgx.CollectRows(q, pgx.RowTo[[16]byte])
	if err != nil {
		return nil, 0, fmt.Errorf("find tombstoned rows: %w", err)
	}
	if len(gone) == 0 {
		return rows, 0, nil
	}
	drop := map[record.ID]bool{}
	for _, id := range gone {
		drop[id] = true
	}
	kept := make([]record.Row, 0, n-len(gone))
	for _, r := range rows {
		if !drop[r.ID] {
			kept = append(kept, r)
		}
	}
	return kept, int64(len(gone)), nil
}
