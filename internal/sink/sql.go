package sink

import (
	"fmt"
	"hash/fnv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/idemsink/idemsink/internal/config"
)

// statements holds the SQL of one pipeline's target table, built once from
// validated configuration. Every identifier goes through pgx.Identifier.
type statements struct {
	target      string   // quoted schema.table
	stage       string   // quoted temp table name
	stageName   string   // the same, unquoted
	stageCols   []string // COPY column order
	stageOIDs   []uint32 // their types, as the stage declares them
	copyStage   string   // binary COPY into the stage, in stageCols order
	createTable string
	createStage string
	upsert      string // from the stage table: per batch id, what the probe found and what was written
	upsertRow   string // one row from parameters: record_id, columns..., version, topic, partition, offset, batch id[, unavailable]
	verify      string
	// unavailable: the pipeline reads Debezium events, whose columns may
	// be unavailable (an unchanged TOAST value): the stage has an
	// _unavailable column (the column indexes), the target's value is
	// kept for them, and incomplete/fill prepare the stage (see
	// unavailable.go). Other pipelines' SQL has none of it.
	unavailable bool
	incomplete  string
	fill        string
}

func quote(parts ...string) string { return pgx.Identifier(parts).Sanitize() }

func buildStatements(p *config.Pipeline) *statements {
	s := &statements{target: quote(p.Schema, p.Table), unavailable: p.Format == "debezium"}
	// The stage is a temp table that lives as long as its connection; its
	// name carries a hash of the pipeline and its columns, so that a
	// connection that staged before the pipeline gained a column never
	// copies into the old shape; it fits PostgreSQL's 63 bytes.
	h := fnv.New32a()
	h.Write([]byte(p.Name + "\x00"))
	for _, c := range p.Columns {
		h.Write([]byte(c.Name + " " + c.Type + "\x00"))
	}
	s.stageName = fmt.Sprintf("_idemsink_stage_%.38s_%08x", p.Name, h.Sum32())
	s.stage = quote(s.stageName)
	// kept is the value a column takes from a staged row s (alias) over
	// the target row t: the target's own where s could not carry it.
	kept := func(alias string, i int, q string) string {
		if !s.unavailable {
			return alias + "." + q
		}
		return fmt.Sprintf("CASE WHEN %d = ANY(%s._unavailable) THEN t.%s ELSE %s.%s END", i, alias, q, alias, q)
	}
	var cols, defs, stageDefs, sets, tContent, eContent, sContent []string
	for i, c := range p.Columns {
		q := quote(c.Name)
		cols = append(cols, q)
		null := " NOT NULL"
		if c.Nullable {
			null = ""
		}
		defs = append(defs, fmt.Sprintf("    %s %s%s", q, c.Type, null))
		stageDefs = append(stageDefs, fmt.Sprintf("%s %s", q, c.Type))
		if s.unavailable {
			sets = append(sets, fmt.Sprintf("%s = CASE WHEN %d = ANY($%d::integer[]) THEN t.%s ELSE EXCLUDED.%s END", q, i, len(p.Columns)+7, q, q))
		} else {
			sets = append(sets, fmt.Sprintf("%s = EXCLUDED.%s", q, q))
		}
		sContent = append(sContent, kept("s", i, q))
		tContent = append(tContent, "t."+q)
		eContent = append(eContent, "EXCLUDED."+q)
	}
	meta := []string{"_version", "_src_topic", "_src_partition", "_src_offset", "_batch_id"}
	s.stageCols = append(append([]string{"record_id"}, strings.Split(strings.Join(p.ColumnNames(), ","), ",")...), meta...)
	extra := ""
	if s.unavailable {
		s.stageCols = append(s.stageCols, "_unavailable")
		extra = ", _unavailable integer[]"
	}
	s.stageOIDs = []uint32{pgtype.UUIDOID}
	for i := range p.Columns {
		s.stageOIDs = append(s.stageOIDs, columnOID(p.Columns[i].Typ()))
	}
	s.stageOIDs = append(s.stageOIDs, pgtype.Int8OID, pgtype.TextOID, pgtype.Int4OID, pgtype.Int8OID, pgtype.UUIDOID)
	if s.unavailable {
		s.stageOIDs = append(s.stageOIDs, pgtype.Int4ArrayOID)
	}
	quoted := make([]string, len(s.stageCols))
	for i, c := range s.stageCols {
		quoted[i] = quote(c)
	}
	s.copyStage = fmt.Sprintf("COPY %s (%s) FROM STDIN (FORMAT binary)", s.stage, strings.Join(quoted, ", "))

	s.createTable = fmt.Sprintf(`CREATE TABLE IF NOT EXISTS %s (
    record_id uuid PRIMARY KEY,
%s,
    _version bigint NOT NULL,
    _src_topic text NOT NULL,
    _src_partition integer NOT NULL,
    _src_offset bigint NOT NULL,
    _batch_id uuid NOT NULL,
    _applied_at timestamptz NOT NULL
)`, s.target, strings.Join(defs, ",\n"))

	// ON COMMIT DELETE ROWS scopes the stage to one transaction: a rolled
	// back batch leaves nothing behind, a retried one starts empty, and a
	// temp table is invisible to every other session's batches. One
	// transaction stages the batches of many target dates at once: each
	// row carries its date's batch id, which the upsert writes into the
	// target and by which the upsert and the verification count per date.
	s.createStage = fmt.Sprintf(`CREATE TEMP TABLE IF NOT EXISTS %s (record_id uuid, %s, _version bigint, _src_topic text, _src_partition integer, _src_offset bigint, _batch_id uuid%s) ON COMMIT DELETE ROWS`,
		s.stage, strings.Join(stageDefs, ", "), extra)

	colList := strings.Join(cols, ", ")
	// position is the version tuple of contract 3 (docs/design.md),
	// written once: (version, offset, partition, topic), the same total
	// order as record.Row.Newer.
	position := func(alias string) string {
		return fmt.Sprintf("(%[1]s._version, %[1]s._src_offset, %[1]s._src_partition, %[1]s._src_topic)", alias)
	}
	// The version guard orders by (version, offset, partition, topic), the
	// same total order as record.Row.Newer, and lets a record write when it
	// is at or after the row's position and its content differs. "At" is
	// the record the row came from: it may restore a row damaged or left
	// incomplete (a column added since) at its own position; an older
	// record never writes. The change test includes _version: a higher
	// version with equal content still moves the fence forward, while a
	// redelivery (same version, same content) writes nothing.
	conflict := fmt.Sprintf(`ON CONFLICT (record_id) DO UPDATE SET %s,
    _version = EXCLUDED._version, _src_topic = EXCLUDED._src_topic,
    _src_partition = EXCLUDED._src_partition, _src_offset = EXCLUDED._src_offset,
    _batch_id = EXCLUDED._batch_id, _applied_at = EXCLUDED._applied_at
  WHERE %s >= %s
    AND (t._version, %s) IS DISTINCT FROM (EXCLUDED._version, %s)
  RETURNING (xmax = 0) AS inserted`, strings.Join(sets, ", "), position("EXCLUDED"), position("t"), strings.Join(tContent, ", "), strings.Join(eContent, ", "))
	insert := fmt.Sprintf(`INSERT INTO %s AS t (record_id, %s, _version, _src_topic, _src_partition, _src_offset, _batch_id, _applied_at)`, s.target, colList)

	// One probe of the target per staged row (the probe join) sorts the
	// staged rows into new keys, existing keys that are newer with other
	// content (to write), older ones with other content (stale) and the
	// rest (unchanged); only the first two are written, every other row is
	// left alone, not even locked (contract 4, docs/design.md). New keys
	// are inserted plainly: a key inserted meanwhile by another transaction
	// fails the batch with a unique violation, and the row-by-row retry
	// (upsertRow, ON CONFLICT) settles it. Rows to write are updated under
	// the version guard again: if another transaction changed the row since
	// the probe, the guard is re-evaluated on its newest version (READ
	// COMMITTED), so an older version never wins.
	//
	// The statement returns, per batch id (per target date), what the probe
	// found and what was written: this is the verification (contract 6)
	// when the two agree, as the probe read every staged row's target row
	// and the RETURNING rows prove every write (see txn.verify).
	var upd []string
	for i, c := range p.Columns {
		q := quote(c.Name)
		upd = append(upd, fmt.Sprintf("%s = %s", q, kept("p", i, q)))
	}
	// newer is the version guard for a staged row s against the target
	// row t: at or after t's position, with other content.
	newer := func(s, t string) string {
		return fmt.Sprintf("%s >= %s AND (%s._version, %s) IS DISTINCT FROM (%s._version, %s)", position(s), position(t),
			t, prefixed(t, p.ColumnNames()), s, prefixed(s, p.ColumnNames()))
	}
	contentT := "(t._version, " + strings.Join(tContent, ", ") + ")"
	contentS := "(s._version, " + strings.Join(sContent, ", ") + ")"
	s.upsert = fmt.Sprintf(`WITH probe AS MATERIALIZED (
  SELECT s.*, t.record_id IS NULL AS fresh,
    t.record_id IS NOT NULL AND (%[3]s) AS write,
    t.record_id IS NOT NULL AND %[8]s > %[7]s AND %[9]s IS DISTINCT FROM %[10]s AS stale,
    %[7]s = %[8]s AS same
  FROM %[1]s s LEFT JOIN %[2]s t ON t.record_id = s.record_id
), ins AS (
  INSERT INTO %[2]s (record_id, %[4]s, _version, _src_topic, _src_partition, _src_offset, _batch_id, _applied_at)
  SELECT record_id, %[4]s, _version, _src_topic, _src_partition, _src_offset, _batch_id, now() FROM probe WHERE fresh
  RETURNING _batch_id
), upd AS (
  UPDATE %[2]s t SET %[5]s, _version = p._version, _src_topic = p._src_topic, _src_partition = p._src_partition,
    _src_offset = p._src_offset, _batch_id = p._batch_id, _applied_at = now()
  FROM probe p WHERE p.write AND t.record_id = p.record_id AND %[6]s
  RETURNING t._batch_id, p.same
)
SELECT _batch_id, sum(staged), sum(fresh), sum(write), sum(stale), sum(inserted), sum(updated), sum(repaired)
FROM (
  SELECT _batch_id, 1 AS staged, fresh::int AS fresh, write::int AS write, stale::int AS stale, 0 AS inserted, 0 AS updated, 0 AS repaired FROM probe
  UNION ALL SELECT _batch_id, 0, 0, 0, 0, 1, 0, 0 FROM ins
  UNION ALL SELECT _batch_id, 0, 0, 0, 0, 0, 1, same::int FROM upd
) AS x
GROUP BY _batch_id`, s.stage, s.target, newer("s", "t"), colList, strings.Join(upd, ", "), newer("p", "t"), position("s"), position("t"),
		contentT, contentS)

	params := []string{"$1::uuid"}
	for i, c := range p.Columns {
		if s.unavailable {
			// The proposed row must be whole (NOT NULL is checked before
			// the conflict is): an unavailable column proposes its stored
			// value, which the row by row path has checked exists.
			params = append(params, fmt.Sprintf("CASE WHEN %d = ANY($%d::integer[]) THEN (SELECT %s FROM %s WHERE record_id = $1::uuid) ELSE $%d::%s END",
				i, len(p.Columns)+7, quote(c.Name), s.target, i+2, c.Type))
			continue
		}
		params = append(params, fmt.Sprintf("$%d::%s", i+2, c.Type))
	}
	n := len(p.Columns) + 2
	params = append(params, fmt.Sprintf("$%d::bigint, $%d::text, $%d::integer, $%d::bigint, $%d::uuid, now()", n, n+1, n+2, n+3, n+4))
	// With unavailable columns, $n+5 is their indexes: the conflict's SET
	// keeps the stored values (above).
	s.upsertRow = fmt.Sprintf("%s\n  VALUES (%s)\n  %s", insert, strings.Join(params, ", "), conflict)

	// Contract 6 (docs/design.md), as a second probe of the target: every staged row is in
	// the target at its staged version or a newer one. It runs when the
	// upsert's own counts do not prove it (see txn.verify), and after the
	// row-by-row path. "behind" counts rows where the target holds an older
	// or the same position with other content: the upsert should have
	// replaced or restored them. "stale" counts staged rows older than what
	// the target holds. All per batch id: per target date.
	s.verify = fmt.Sprintf(`SELECT s._batch_id, count(*),
  count(*) FILTER (WHERE t.record_id IS NULL),
  count(*) FILTER (WHERE %[1]s <= %[2]s AND %[3]s IS DISTINCT FROM %[4]s),
  count(*) FILTER (WHERE %[1]s > %[2]s AND %[3]s IS DISTINCT FROM %[4]s)
FROM %[5]s s LEFT JOIN %[6]s t ON t.record_id = s.record_id
GROUP BY s._batch_id`, position("t"), position("s"), contentT, contentS, s.stage, s.target)

	if s.unavailable {
		// A staged row with unavailable columns whose key the target does
		// not hold cannot be completed: it leaves the stage (and is
		// dead-lettered).
		s.incomplete = fmt.Sprintf(`DELETE FROM %s s WHERE s._unavailable IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM %s t WHERE t.record_id = s.record_id)
RETURNING s._src_topic, s._src_partition, s._src_offset`, s.stage, s.target)
		// The rest take the stored values, so that the probe's change
		// test compares like with like; the upsert's SET reads the target
		// again, under the row lock.
		var fills []string
		for i, c := range p.Columns {
			q := quote(c.Name)
			fills = append(fills, fmt.Sprintf("%s = %s", q, kept("s", i, q)))
		}
		s.fill = fmt.Sprintf(`UPDATE %s s SET %s FROM %s t WHERE t.record_id = s.record_id AND s._unavailable IS NOT NULL`,
			s.stage, strings.Join(fills, ", "), s.target)
	}
	return s
}

// Ledger statements; the schema is fixed by the migrations.
const (
	// claimOffsets makes sure a ledger row exists for each partition and
	// moves its generation up to the caller's; a row the caller's
	// generation and member hold already is not written again (only
	// locked), nor is one a newer generation holds: lockOffsets then
	// tells the caller it is fenced.
	claimOffsets = `INSERT INTO idemsink.offsets AS o (group_id, topic, partition, applied_offset, generation, member_id)
SELECT $1, x.topic, x.partition, -1, $2, $3 FROM unnest($4::text[], $5::integer[]) AS x(topic, partition)
ORDER BY x.topic, x.partition
ON CONFLICT (group_id, topic, partition) DO UPDATE
  SET generation = EXCLUDED.generation, member_id = EXCLUDED.member_id, updated_at = now()
  WHERE (o.generation, o.member_id) IS DISTINCT FROM (EXCLUDED.generation, EXCLUDED.member_id)
    AND EXCLUDED.generation >= o.generation`

	// lockOffsets locks the batch's partitions in a fixed order so that two
	// transactions on the same partitions queue instead of deadlocking.
	lockOffsets = `SELECT topic, partition, applied_offset, generation FROM idemsink.offsets
WHERE group_id = $1 AND (topic, partition) IN (SELECT * FROM unnest($2::text[], $3::integer[]))
ORDER BY topic, partition FOR UPDATE`

	advanceOffsets = `UPDATE idemsink.offsets o
SET applied_offset = GREATEST(o.applied_offset, x.applied), generation = GREATEST(o.generation, $2), member_id = $3, updated_at = now()
FROM unnest($4::text[], $5::integer[], $6::bigint[]) AS x(topic, partition, applied)
WHERE o.group_id = $1 AND o.topic = x.topic AND o.partition = x.partition`

	readOffsets = `SELECT topic, partition, applied_offset, generation, member_id, updated_at FROM idemsink.offsets
WHERE group_id = $1 ORDER BY topic, partition`

	// A record dead-lettered again (a redelivery, or consumer dlq replay)
	// keeps its row; its reason is the latest one. It returns the reason
	// of each dead letter it inserted (xmax = 0), not of those it only
	// updated: the metric counts new dead letters.
	insertDeadLetters = `INSERT INTO idemsink.dead_letters AS d (pipeline, topic, partition, kafka_offset, key, value, headers, reason, batch_id)
SELECT $1, x.topic, x.partition, x.off, x.key, x.value, x.headers, x.reason, x.batch_id
FROM unnest($2::uuid[], $3::text[], $4::integer[], $5::bigint[], $6::bytea[], $7::bytea[], $8::jsonb[], $9::text[]) AS x(batch_id, topic, partition, off, key, value, headers, reason)
ON CONFLICT (pipeline, topic, partition, kafka_offset) DO UPDATE SET reason = EXCLUDED.reason
  WHERE d.reason IS DISTINCT FROM EXCLUDED.reason
RETURNING d.reason, (d.xmax = 0) AS inserted`

	// recordBatches writes one batch-log entry per target date of the
	// transaction, in one statement. The phase times are the
	// transaction's, shared by its dates.
	recordBatches = `INSERT INTO idemsink.batches (batch_id, run_id, pipeline, target_date, group_id, generation, member_id, ranges,
  records, superseded, skipped, staged, inserted, updated, unchanged, stale, deleted, dead_lettered, stage_ms, upsert_ms, verify_ms, repaired)
SELECT x.batch_id, x.run_id, $1, x.target_date, $2, $3, $4, x.ranges::jsonb,
  x.records, x.superseded, x.skipped, x.staged, x.inserted, x.updated, x.unchanged, x.stale, x.deleted, x.dead_lettered, $5, $6, $7, x.repaired
FROM unnest($8::uuid[], $9::uuid[], $10::date[], $11::text[], $12::integer[], $13::integer[], $14::integer[], $15::integer[], $16::integer[],
  $17::integer[], $18::integer[], $19::integer[], $20::integer[], $21::integer[], $22::integer[])
  AS x(batch_id, run_id, target_date, ranges, records, superseded, skipped, staged, inserted, updated, unchanged, stale, deleted, dead_lettered, repaired)
ON CONFLICT (batch_id) DO UPDATE SET applications = idemsink.batches.applications + 1, last_applied_at = now(),
  group_id = EXCLUDED.group_id, generation = EXCLUDED.generation, member_id = EXCLUDED.member_id, skipped = EXCLUDED.skipped,
  staged = EXCLUDED.staged, inserted = EXCLUDED.inserted, updated = EXCLUDED.updated, repaired = EXCLUDED.repaired,
  unchanged = EXCLUDED.unchanged, stale = EXCLUDED.stale, deleted = EXCLUDED.deleted,
  dead_lettered = EXCLUDED.dead_lettered, stage_ms = EXCLUDED.stage_ms, upsert_ms = EXCLUDED.upsert_ms, verify_ms = EXCLUDED.verify_ms
RETURNING batch_id, applications`

	// recordApplications keeps every application of a batch (the batches
	// row holds only the latest), so that a backfill's history can be read
	// back: one row per target date of the transaction.
	recordApplications = `INSERT INTO idemsink.batch_applications (batch_id, application, pipeline, target_date, group_id, generation,
  member_id, records, skipped, staged, inserted, updated, repaired, unchanged, stale, deleted, dead_lettered)
SELECT x.batch_id, x.application, $1, x.target_date, $2, $3, $4, x.records, x.skipped, x.staged, x.inserted, x.updated, x.repaired,
  x.unchanged, x.stale, x.deleted, x.dead_lettered
FROM unnest($5::uuid[], $6::integer[], $7::date[], $8::integer[], $9::integer[], $10::integer[], $11::integer[], $12::integer[],
  $13::integer[], $14::integer[], $15::integer[], $16::integer[], $17::integer[])
  AS x(batch_id, application, target_date, records, skipped, staged, inserted, updated, repaired, unchanged, stale, deleted, dead_lettered)
ON CONFLICT (batch_id, application) DO NOTHING`

	// recordUnchanged keeps, in one row, the dates on which a transaction
	// changed nothing (see txn.record).
	recordUnchanged = `INSERT INTO idemsink.unchanged_applications (pipeline, group_id, generation, member_id, ranges, dates,
  records, superseded, skipped, staged, unchanged, stale)
VALUES ($1, $2, $3, $4, $5::jsonb, $6::date[], $7, $8, $9, $10, $11, $12)`

	// planJoins steers the upsert's and the verification's joins to index
	// lookups, for this transaction only.
	planJoins = `SELECT set_config('enable_hashjoin', 'off', true), set_config('enable_mergejoin', 'off', true)`

	// The lock key is an arbitrary constant shared by every idemsink
	// process: table creation runs under it, beside tern's own lock.
	lockDDL = `SELECT pg_advisory_xact_lock(7245092318765)`
)

// prefixed returns the quoted columns qualified by alias, comma-separated.
func prefixed(alias string, cols []string) string {
	out := make([]string, len(cols))
	for i, c := range cols {
		out[i] = alias + "." + quote(c)
	}
	return strings.Join(out, ", ")
}
