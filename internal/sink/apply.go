package sink

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/idemsink/idemsink/internal/batch"
	"github.com/idemsink/idemsink/internal/record"
)

// Apply writes the batch and its ledger entries in one transaction. Only
// after it returns nil may the consumer commit offsets to Kafka.
func (s *Sink) Apply(ctx context.Context, b *batch.Batch, c Commit) (Result, error) {
	start := time.Now()
	res, err := s.apply(ctx, b, c, false)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && dataError(pgErr) {
		// A row the database refuses (out of range, a check constraint)
		// is bad input: apply row by row to find and dead-letter it.
		s.log.Warn("batch refused by the database; applying row by row", "pipeline", b.Pipeline.Name,
			"date", b.Date.String(), "err", err)
		res, err = s.apply(ctx, b, c, true)
	}
	outcome := "applied"
	var verr *VerifyError
	switch {
	case err == nil:
	case errors.Is(err, ErrFenced):
		outcome = "fenced"
	case errors.As(err, &verr):
		outcome = "verify_failed"
		s.m.VerifyFailures.WithLabelValues(b.Pipeline.Name).Inc()
	default:
		outcome = "error"
	}
	s.m.Batches.WithLabelValues(b.Pipeline.Name, outcome).Inc()
	if err != nil {
		return res, err
	}
	name := b.Pipeline.Name
	for result, n := range map[string]int{"inserted": res.Inserted, "updated": res.Updated, "repaired": res.Repaired, "unchanged": res.Unchanged,
		"stale": res.Stale, "deleted": res.Deleted, "superseded": res.Superseded, "skipped": res.Skipped, "dead_lettered": res.DeadLettered} {
		s.m.Records.WithLabelValues(name, result).Add(float64(n))
	}
	for class, n := range res.DeadClasses {
		s.m.DeadLetters.WithLabelValues(name, class).Add(float64(n))
	}
	s.m.BatchSeconds.WithLabelValues(name, "stage").Observe(res.Stage.Seconds())
	s.m.BatchSeconds.WithLabelValues(name, "upsert").Observe(res.Upsert.Seconds())
	s.m.BatchSeconds.WithLabelValues(name, "verify").Observe(res.Verify.Seconds())
	s.m.BatchSeconds.WithLabelValues(name, "total").Observe(time.Since(start).Seconds())
	return res, nil
}

// txn is one attempt at applying a batch: the transaction and what its
// phases hand to each other.
type txn struct {
	s      *Sink
	tx     pgx.Tx
	st     *statements
	b      *batch.Batch
	c      Commit
	tps    []record.TP
	res    Result
	todo   []record.Row // rows still to apply after the ledger's skips
	dels   []record.Row // deletes still to apply after the ledger's skips
	dead   []record.DeadLetter
	copied int64
	// tombstoned counts the rows a kept tombstone supersedes: taken out
	// before the upsert, counted stale (see delete.go).
	tombstoned int64
}

// apply runs the phases in order, in one transaction: fence, pending,
// stage, upsert, verify, delete, record. rowByRow replaces the set-based upsert
// with one savepoint per row, to isolate rows the database refuses.
func (s *Sink) apply(ctx context.Context, b *batch.Batch, c Commit, rowByRow bool) (Result, error) {
	t := &txn{s: s, st: s.tables[b.Pipeline.Name], b: b, c: c,
		res: Result{BatchID: b.ID(), RunID: batch.RunID(b.Pipeline.Name, b.Date), Records: b.Records, Superseded: b.Superseded}}
	for _, r := range b.Ranges() {
		t.tps = append(t.tps, record.TP{Topic: r.Topic, Partition: r.Partition})
	}
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return t.res, fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // a no-op after Commit
	t.tx = tx

	ledger, err := t.fence(ctx)
	if err != nil {
		return t.res, err
	}
	t.pending(ledger)
	if err := t.stage(ctx, rowByRow); err != nil {
		return t.res, err
	}
	s.fault(FaultAfterStage)
	if err := t.upsert(ctx, rowByRow); err != nil {
		return t.res, err
	}
	if err := t.verify(ctx); err != nil {
		return t.res, err
	}
	if err := t.delete(ctx); err != nil {
		return t.res, err
	}
	if err := t.record(ctx); err != nil {
		return t.res, err
	}
	s.fault(FaultAfterUpsert)
	if err := tx.Commit(ctx); err != nil {
		return t.res, fmt.Errorf("commit: %w", err)
	}
	return t.res, nil
}

// fence claims and locks the batch's ledger rows for this generation and
// refuses to go on if a newer generation has claimed any of them. It
// returns the partitions' applied offsets.
func (t *txn) fence(ctx context.Context) (map[record.TP]int64, error) {
	topics, parts := splitTPs(t.tps)
	if _, err := t.tx.Exec(ctx, claimOffsets, t.c.Group, t.c.Generation, t.c.Member, topics, parts); err != nil {
		return nil, fmt.Errorf("claim ledger rows: %w", err)
	}
	rows, err := t.tx.Query(ctx, lockOffsets, t.c.Group, topics, parts)
	if err != nil {
		return nil, fmt.Errorf("lock ledger rows: %w", err)
	}
	applied := map[record.TP]int64{}
	var fenced *FencedError
	for rows.Next() {
		var tp record.TP
		var off int64
		var gen int32
		if err := rows.Scan(&tp.Topic, &tp.Partition, &off, &gen); err != nil {
			return nil, fmt.Errorf("lock ledger rows: %w", err)
		}
		applied[tp] = off
		if gen > t.c.Generation && fenced == nil {
			fenced = &FencedError{TP: tp, Generation: t.c.Generation, Ledgered: gen}
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("lock ledger rows: %w", err)
	}
	if fenced != nil {
		fenced.Ledger = applied
		return nil, fenced
	}
	return applied, nil
}

// pending leaves out what an earlier transaction applied (a redelivery):
// the records at or below the ledger's applied offset. It separates the
// deletes from the upserts.
func (t *txn) pending(applied map[record.TP]int64) {
	done := func(p record.Position) bool { return p.Offset <= applied[p.TP] }
	t.todo = t.b.Rows
	for i, r := range t.b.Rows {
		if done(r.Pos) {
			// Copy on the first skip only: the common case skips nothing.
			t.todo = append(make([]record.Row, 0, len(t.b.Rows)), t.b.Rows[:i]...)
			for _, r := range t.b.Rows[i:] {
				if done(r.Pos) {
					t.res.Skipped++
					continue
				}
				t.todo = append(t.todo, r)
			}
			break
		}
	}
	t.todo, t.dels = splitDeletes(t.todo)
	for _, d := range t.b.Dead {
		if done(d.Pos) {
			t.res.Skipped++
			continue
		}
		t.dead = append(t.dead, d)
	}
}

// stage copies the rows into the transaction-scoped stage table. Row by
// row, each row is upserted first under its own savepoint, and only the
// rows the database took are staged (for verification).
func (t *txn) stage(ctx context.Context, rowByRow bool) error {
	if _, err := t.tx.Exec(ctx, t.st.createStage); err != nil {
		return fmt.Errorf("create stage: %w", err)
	}
	// The upsert and the verification read one target row per staged row;
	// left to itself the planner picks a hash join over the whole target
	// once a batch is a few thousand rows (the stage has no statistics).
	// Index lookups are what they should be.
	if _, err := t.tx.Exec(ctx, planJoins); err != nil {
		return fmt.Errorf("plan joins: %w", err)
	}
	t0 := time.Now()
	defer func() { t.res.Stage = time.Since(t0) }()
	deletes := t.b.Pipeline.Deletes == "apply"
	if rowByRow {
		if deletes {
			// Row by row upserts before it stages: the tombstoned rows
			// are left out first.
			var err error
			if t.todo, t.tombstoned, err = withoutTombstoned(ctx, t.tx, t.b.Pipeline.Name, t.todo); err != nil {
				return err
			}
		}
		if err := t.upsertRows(ctx); err != nil {
			return err
		}
	}
	if len(t.todo) == 0 {
		return nil
	}
	var err error
	t.copied, err = t.tx.CopyFrom(ctx, pgx.Identifier{t.st.stageName}, t.st.stageCols, &rowSource{rows: t.todo, unavailable: t.st.unavailable})
	if err != nil {
		return fmt.Errorf("stage %d rows: %w", len(t.todo), err)
	}
	if deletes && !rowByRow {
		n, err := dropTombstoned(ctx, t.tx, t.st, t.b.Pipeline.Name)
		if err != nil {
			return err
		}
		t.copied, t.tombstoned = t.copied-n, n
	}
	return t.completeStage(ctx)
}

// upsert merges the staged rows into the target: new keys inserted, newer
// versions with other content updated, everything else untouched.
func (t *txn) upsert(ctx context.Context, rowByRow bool) error {
	if rowByRow || len(t.todo) == 0 {
		return nil
	}
	t0 := time.Now()
	var ins, upd, rep int64
	if err := t.tx.QueryRow(ctx, t.st.upsert, t.res.BatchID).Scan(&ins, &upd, &rep); err != nil {
		return fmt.Errorf("upsert into %s: %w", t.st.target, err)
	}
	// Repaired rows are updates too; they are counted apart.
	t.res.Inserted, t.res.Updated, t.res.Repaired = int(ins), int(upd-rep), int(rep)
	t.res.Upsert = time.Since(t0)
	return nil
}

// verify checks, before the commit, that every staged row is in the target
// at its staged version or a newer one (docs/design.md, contract 6).
func (t *txn) verify(ctx context.Context) error {
	t0 := time.Now()
	var staged, missing, behind, stale int64
	if err := t.tx.QueryRow(ctx, t.st.verify).Scan(&staged, &missing, &behind, &stale); err != nil {
		return fmt.Errorf("verify %s: %w", t.st.target, err)
	}
	t.res.Verify = time.Since(t0)
	if staged != t.copied || missing != 0 || behind != 0 {
		return &VerifyError{Staged: staged, Copied: t.copied, Missing: missing, Behind: behind}
	}
	t.res.Staged, t.res.Stale = int(staged+t.tombstoned), int(stale+t.tombstoned)
	t.res.Unchanged = t.res.Staged - t.res.Inserted - t.res.Updated - t.res.Repaired - t.res.Stale
	return nil
}

// delete applies the batch's deletes under the version guard, keeping
// their tombstones, and verifies them (see delete.go).
func (t *txn) delete(ctx context.Context) error {
	var err error
	t.res.Deleted, err = applyDeletes(ctx, t.tx, t.st, t.b.Pipeline.Name, t.res.BatchID, t.dels)
	return err
}

// record writes the dead letters, the batch and the advanced ledger
// offsets, in the batch's transaction.
func (t *txn) record(ctx context.Context) error {
	res := &t.res
	if len(t.dead) > 0 {
		var err error
		if res.DeadClasses, err = insertDead(ctx, t.tx, t.b.Pipeline.Name, res.BatchID, t.dead); err != nil {
			return err
		}
	}
	res.DeadLettered = len(t.dead)

	ranges, err := json.Marshal(t.b.Ranges())
	if err != nil {
		return fmt.Errorf("encode ranges: %w", err)
	}
	var date any
	if !t.b.Date.IsZero() {
		date = t.b.Date.Time()
	}
	c := t.c
	if err := t.tx.QueryRow(ctx, recordBatch, res.BatchID, res.RunID, t.b.Pipeline.Name, date, c.Group, c.Generation, c.Member, ranges,
		res.Records, res.Superseded, res.Skipped, res.Staged, res.Inserted, res.Updated, res.Unchanged, res.Stale, res.Deleted,
		res.DeadLettered, ms(res.Stage), ms(res.Upsert), ms(res.Verify), res.Repaired).Scan(&res.Applications); err != nil {
		return fmt.Errorf("record batch: %w", err)
	}
	if _, err := t.tx.Exec(ctx, recordApplication, res.BatchID, res.Applications, t.b.Pipeline.Name, date, c.Group, c.Generation,
		c.Member, res.Records, res.Skipped, res.Staged, res.Inserted, res.Updated, res.Repaired, res.Unchanged, res.Stale,
		res.Deleted, res.DeadLettered); err != nil {
		return fmt.Errorf("record batch application: %w", err)
	}
	var topics []string
	var parts []int32
	var offs []int64
	for _, tp := range t.tps {
		if a, ok := c.Applied[tp]; ok {
			topics, parts, offs = append(topics, tp.Topic), append(parts, tp.Partition), append(offs, a)
		}
	}
	if _, err := t.tx.Exec(ctx, advanceOffsets, c.Group, c.Generation, c.Member, topics, parts, offs); err != nil {
		return fmt.Errorf("advance ledger offsets: %w", err)
	}
	return nil
}

// upsertRows is the slow path for a batch the database refused: each row
// under its own savepoint, so that a refused row is dead-lettered and the
// rest still apply. It leaves in t.todo the rows the database took.
func (t *txn) upsertRows(ctx context.Context) error {
	good := t.todo[:0:0]
	for _, r := range t.todo {
		args := make([]any, 0, len(r.Values)+6)
		args = append(args, r.ID)
		args = append(args, r.Values...)
		args = append(args, r.Version, r.Pos.Topic, r.Pos.Partition, r.Pos.Offset, t.res.BatchID)
		if t.st.unavailable {
			if len(r.Unavailable) > 0 {
				ok, err := t.stored(ctx, r)
				if err != nil {
					return err
				}
				if !ok {
					t.dead = append(t.dead, t.incompleteDead(r))
					continue
				}
			}
			args = append(args, unavailableArg(&r))
		}
		if _, err := t.tx.Exec(ctx, "SAVEPOINT row"); err != nil {
			return fmt.Errorf("savepoint: %w", err)
		}
		var inserted bool
		err := t.tx.QueryRow(ctx, t.st.upsertRow, args...).Scan(&inserted)
		var pgErr *pgconn.PgError
		switch {
		case err == nil || errors.Is(err, pgx.ErrNoRows):
			if err == nil && inserted {
				t.res.Inserted++
			} else if err == nil {
				t.res.Updated++
			}
			good = append(good, r)
			if _, err := t.tx.Exec(ctx, "RELEASE SAVEPOINT row"); err != nil {
				return fmt.Errorf("release savepoint: %w", err)
			}
		case errors.As(err, &pgErr) && dataError(pgErr):
			if _, err := t.tx.Exec(ctx, "ROLLBACK TO SAVEPOINT row"); err != nil {
				return fmt.Errorf("rollback to savepoint: %w", err)
			}
			t.dead = append(t.dead, refused(t.s.log, r, pgErr))
		default:
			return fmt.Errorf("upsert row %s: %w", r.Pos.TP, err)
		}
	}
	t.todo = good
	return nil
}

// ClassOther is the class of a dead letter whose reason starts with no
// known class; with it the metric's class label has a fixed set of values.
const ClassOther = "other"

// deadClass is the class a dead letter is counted under.
func deadClass(reason string) string {
	if c := record.ClassOf(reason); c != "" {
		return c
	}
	return ClassOther
}

// insertDead writes the dead letters and returns, by class, how many of
// them it inserted: one already stored (a redelivery after an offset
// reset) is not counted again.
func insertDead(ctx context.Context, tx pgx.Tx, pipeline string, batchID [16]byte, dead []record.DeadLetter) (map[string]int, error) {
	n := len(dead)
	topics, parts, offs := make([]string, n), make([]int32, n), make([]int64, n)
	keys, values, headers, reasons := make([][]byte, n), make([][]byte, n), make([][]byte, n), make([]string, n)
	for i, d := range dead {
		topics[i], parts[i], offs[i] = d.Pos.Topic, d.Pos.Partition, d.Pos.Offset
		keys[i], values[i], reasons[i] = d.Key, d.Value, d.Reason
		if len(d.Headers) > 0 {
			h, err := json.Marshal(d.Headers)
			if err != nil {
				return nil, fmt.Errorf("encode headers: %w", err)
			}
			headers[i] = h
		}
	}
	rows, err := tx.Query(ctx, insertDeadLetters, pipeline, batchID, topics, parts, offs, keys, values, headers, reasons)
	if err != nil {
		return nil, fmt.Errorf("insert %d dead letters: %w", n, err)
	}
	var classes map[string]int
	var reason string
	var inserted bool
	_, err = pgx.ForEachRow(rows, []any{&reason, &inserted}, func() error {
		if inserted {
			if classes == nil {
				classes = map[string]int{}
			}
			classes[deadClass(reason)]++
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("insert %d dead letters: %w", n, err)
	}
	return classes, nil
}
