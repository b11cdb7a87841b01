package sink

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/idemsink/idemsink/internal/batch"
	"github.com/idemsink/idemsink/internal/record"
)

// Apply writes a unit, the batches of one or many target dates, and its
// ledger entries in one transaction. Only after it returns nil may the
// consumer commit offsets to Kafka.
func (s *Sink) Apply(ctx context.Context, u *batch.Unit, c Commit) (Result, error) {
	start := time.Now()
	res, err := s.apply(ctx, u, c, false)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && dataError(pgErr) {
		// A row the database refuses (out of range, a check constraint)
		// is bad input: apply row by row to find and dead-letter it.
		first, last := u.Span()
		s.log.Warn("batch refused by the database; applying row by row", "pipeline", u.Pipeline.Name,
			"dates", u.Dates(), "first_date", first.String(), "last_date", last.String(), "err", err)
		res, err = s.apply(ctx, u, c, true)
	}
	outcome := "applied"
	var verr *VerifyError
	switch {
	case err == nil:
	case errors.Is(err, ErrFenced):
		outcome = "fenced"
	case errors.As(err, &verr):
		outcome = "verify_failed"
		s.m.VerifyFailures.WithLabelValues(u.Pipeline.Name).Inc()
	default:
		outcome = "error"
	}
	s.m.Batches.WithLabelValues(u.Pipeline.Name, outcome).Inc()
	if err != nil {
		return res, err
	}
	name := u.Pipeline.Name
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
	s.m.TransactionRecords.WithLabelValues(name).Observe(float64(res.Records))
	s.m.TransactionDates.WithLabelValues(name).Observe(float64(len(res.Batches)))
	return res, nil
}

// txn is one attempt at applying a unit: the transaction and what its
// phases hand to each other. Everything per target date is indexed like
// u.Batches(): bs, ids and res.Batches.
type txn struct {
	s    *Sink
	tx   pgx.Tx
	st   *statements
	u    *batch.Unit
	bs   []*batch.Batch
	ids  []record.ID       // batch id per date
	at   map[record.ID]int // date index per batch id
	c    Commit
	tps  []record.TP
	res  Result
	todo []batch.Dated // rows still to apply after the ledger's skips
	dels []batch.Dated // deletes still to apply after the ledger's skips
	dead []deadLetter
	// probed is per date: what the upsert's probe found (nil if it did
	// not run).
	probed []probed
	// copied and tombstoned are per date: the rows staged, and the rows
	// a kept tombstone supersedes (taken out before the upsert, counted
	// stale; see delete.go); deletes counts each date's deletes to apply.
	copied, tombstoned, deletes []int64
}

// deadLetter is a dead letter and the date index of its batch.
type deadLetter struct {
	record.DeadLetter
	batch int
}

// apply runs the phases in order, in one transaction: fence, pending,
// stage, upsert, verify, delete, record. rowByRow replaces the set-based upsert
// with one savepoint per row, to isolate rows the database refuses.
func (s *Sink) apply(ctx context.Context, u *batch.Unit, c Commit, rowByRow bool) (Result, error) {
	t := &txn{s: s, st: s.tables[u.Pipeline.Name], u: u, bs: u.Batches(), c: c, at: map[record.ID]int{}}
	t.res.Records = u.Records
	t.ids = make([]record.ID, len(t.bs))
	t.copied, t.tombstoned, t.deletes = make([]int64, len(t.bs)), make([]int64, len(t.bs)), make([]int64, len(t.bs))
	t.res.Batches = make([]BatchResult, len(t.bs))
	for i, b := range t.bs {
		t.ids[i] = b.ID()
		t.at[t.ids[i]] = i
		t.res.Batches[i] = BatchResult{Date: b.Date, BatchID: t.ids[i], RunID: batch.RunID(u.Pipeline.Name, b.Date),
			Counts: Counts{Records: b.Records, Superseded: b.Superseded}}
	}
	for _, r := range u.Ranges() {
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

// fence claims and locks the unit's ledger rows for this generation and
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

// pending keeps one row per key across the dates (batch.Newest, as a
// batch does within its date), then leaves out what an earlier
// transaction applied (a redelivery): the records at or below the
// ledger's applied offset. It separates the deletes from the upserts.
func (t *txn) pending(applied map[record.TP]int64) {
	done := func(p record.Position) bool { return p.Offset <= applied[p.TP] }
	n := 0
	for _, b := range t.bs {
		n += len(b.Rows)
	}
	rows := make([]batch.Dated, 0, n)
	for i, b := range t.bs {
		for j := range b.Rows {
			rows = append(rows, batch.Dated{Row: &b.Rows[j], Batch: i})
		}
		for _, d := range b.Dead {
			if done(d.Pos) {
				t.res.Batches[i].Skipped++
				continue
			}
			t.dead = append(t.dead, deadLetter{d, i})
		}
	}
	rows = batch.Newest(rows, func(i int) { t.res.Batches[i].Superseded++ })
	todo := rows[:0]
	for _, r := range rows {
		if done(r.Pos) {
			t.res.Batches[r.Batch].Skipped++
			continue
		}
		todo = append(todo, r)
	}
	t.todo, t.dels = splitDeletes(todo)
	for _, d := range t.dels {
		t.deletes[d.Batch]++
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
	deletes := t.u.Pipeline.Deletes == "apply"
	if rowByRow {
		if deletes {
			// Row by row upserts before it stages: the tombstoned rows
			// are left out first.
			var err error
			if t.todo, err = withoutTombstoned(ctx, t.tx, t.u.Pipeline.Name, t.todo, t.tombstoned); err != nil {
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
	for _, r := range t.todo {
		t.copied[r.Batch]++
	}
	if _, err := copyStage(ctx, t.tx, t.st, t.todo, t.ids); err != nil {
		return fmt.Errorf("stage %d rows: %w", len(t.todo), err)
	}
	if deletes && !rowByRow {
		if err := dropTombstoned(ctx, t.tx, t.st, t.u.Pipeline.Name, t.perBatch(func(i int, n int64) {
			t.copied[i] -= n
			t.tombstoned[i] += n
		})); err != nil {
			return err
		}
	}
	return t.completeStage(ctx)
}

// perBatch returns a function that takes a count by batch id (from a
// statement grouped by _batch_id) to f with the batch's date index.
func (t *txn) perBatch(f func(i int, n int64)) func(id record.ID, n int64) error {
	return func(id record.ID, n int64) error {
		i, ok := t.at[id]
		if !ok {
			return fmt.Errorf("batch id %s is not one of this transaction's", id)
		}
		f(i, n)
		return nil
	}
}

// upsert merges the staged rows into the target: new keys inserted, newer
// versions with other content updated, everything else untouched. The
// statement counts per batch id, that is per target date: what its probe
// of the target found for the staged rows, and what it wrote.
func (t *txn) upsert(ctx context.Context, rowByRow bool) error {
	if rowByRow || len(t.todo) == 0 {
		return nil
	}
	t0 := time.Now()
	rows, err := t.tx.Query(ctx, t.st.upsert)
	if err != nil {
		return fmt.Errorf("upsert into %s: %w", t.st.target, err)
	}
	t.probed = make([]probed, len(t.bs))
	var id record.ID
	var p probed
	var ins, upd, rep int64
	_, err = pgx.ForEachRow(rows, []any{&id, &p.staged, &p.fresh, &p.write, &p.stale, &ins, &upd, &rep}, func() error {
		i, ok := t.at[id]
		if !ok {
			return fmt.Errorf("batch id %s is not one of this transaction's", id)
		}
		t.probed[i] = p
		// Repaired rows are updates too; they are counted apart.
		r := &t.res.Batches[i]
		r.Inserted, r.Updated, r.Repaired = int(ins), int(upd-rep), int(rep)
		return nil
	})
	if err != nil {
		return fmt.Errorf("upsert into %s: %w", t.st.target, err)
	}
	t.res.Upsert = time.Since(t0)
	return nil
}

// probed is what the upsert's probe found for one date's staged rows.
type probed struct {
	staged, fresh, write, stale int64
}

// proven reports whether the upsert's own statement proves contract 6 for
// every date: each date's rows all staged, and each row the probe found
// new or behind returned by the insert or the update. The probe read the
// target row of every staged row in the statement's snapshot; a row it
// did not write was there at a newer position or with the same content,
// and a row it meant to write but the update's guard refused (another
// transaction wrote the row since) is not proven: verify then probes the
// target again.
func (t *txn) proven() bool {
	if t.probed == nil {
		return false
	}
	for i, p := range t.probed {
		r := &t.res.Batches[i]
		if p.staged != t.copied[i] || p.fresh != int64(r.Inserted) || p.write != int64(r.Updated+r.Repaired) {
			return false
		}
	}
	return true
}

// verify checks, before the commit, that every staged row is in the target
// at its staged version or a newer one (docs/design.md, contract 6), and
// takes the staged and stale counts per date. When the upsert's counts
// prove it (proven), they are the check; else a second probe of the target
// is.
func (t *txn) verify(ctx context.Context) error {
	if t.proven() {
		for i, p := range t.probed {
			r := &t.res.Batches[i]
			r.Staged, r.Stale = int(p.staged+t.tombstoned[i]), int(p.stale+t.tombstoned[i])
			r.Unchanged = r.Staged - r.Inserted - r.Updated - r.Repaired - r.Stale
		}
		return nil
	}
	t0 := time.Now()
	staged := make([]int64, len(t.bs))
	var missing, behind int64
	stale := make([]int64, len(t.bs))
	rows, err := t.tx.Query(ctx, t.st.verify)
	if err != nil {
		return fmt.Errorf("verify %s: %w", t.st.target, err)
	}
	var id record.ID
	var n, m, b, st int64
	_, err = pgx.ForEachRow(rows, []any{&id, &n, &m, &b, &st}, func() error {
		i, ok := t.at[id]
		if !ok {
			return fmt.Errorf("batch id %s is not one of this transaction's", id)
		}
		staged[i], stale[i] = n, st
		missing += m
		behind += b
		return nil
	})
	if err != nil {
		return fmt.Errorf("verify %s: %w", t.st.target, err)
	}
	t.res.Verify = time.Since(t0)
	var total, copied int64
	split := false // a date's rows counted under another date's batch id
	for i := range t.bs {
		total += staged[i]
		copied += t.copied[i]
		split = split || staged[i] != t.copied[i]
	}
	if split || total != copied || missing != 0 || behind != 0 {
		return &VerifyError{Staged: total, Copied: copied, Missing: missing, Behind: behind}
	}
	for i := range t.bs {
		r := &t.res.Batches[i]
		r.Staged, r.Stale = int(staged[i]+t.tombstoned[i]), int(stale[i]+t.tombstoned[i])
		r.Unchanged = r.Staged - r.Inserted - r.Updated - r.Repaired - r.Stale
	}
	return nil
}

// delete applies the unit's deletes under the version guard, keeping
// their tombstones, and verifies them (see delete.go).
func (t *txn) delete(ctx context.Context) error {
	return applyDeletes(ctx, t.tx, t.st, t.u.Pipeline.Name, t.dels, t.ids, t.perBatch(func(i int, n int64) {
		t.res.Batches[i].Deleted += int(n)
	}))
}

// record writes the dead letters, the batch log and the advanced ledger
// offsets, in the unit's transaction; it sums the dates' counts into the
// transaction's. A date on which the transaction wrote something gets its
// batch-log entry (idemsink.batches, idemsink.batch_applications); the
// dates on which it changed nothing (quiet) share one row of
// idemsink.unchanged_applications, so that a replay over rows already in
// place writes next to nothing however many dates it spans.
func (t *txn) record(ctx context.Context) error {
	var classes map[string]int
	if len(t.dead) > 0 {
		var err error
		if classes, err = insertDead(ctx, t.tx, t.u.Pipeline.Name, t.ids, t.dead); err != nil {
			return err
		}
	}
	for _, d := range t.dead {
		t.res.Batches[d.batch].DeadLettered++
	}
	total := Counts{}
	var logged, quiet []int
	for i := range t.bs {
		r := &t.res.Batches[i]
		total.Add(r.Counts)
		if t.quiet(i) {
			quiet = append(quiet, i)
		} else {
			logged = append(logged, i)
		}
	}
	t.res.Counts = total
	t.res.DeadClasses = classes
	if err := t.logBatches(ctx, logged); err != nil {
		return err
	}
	if err := t.logUnchanged(ctx, quiet); err != nil {
		return err
	}
	var topics []string
	var parts []int32
	var offs []int64
	for _, tp := range t.tps {
		if a, ok := t.c.Applied[tp]; ok {
			topics, parts, offs = append(topics, tp.Topic), append(parts, tp.Partition), append(offs, a)
		}
	}
	if _, err := t.tx.Exec(ctx, advanceOffsets, t.c.Group, t.c.Generation, t.c.Member, topics, parts, offs); err != nil {
		return fmt.Errorf("advance ledger offsets: %w", err)
	}
	return nil
}

// quiet reports whether the transaction changed nothing on date index i:
// a dated batch with no row inserted, updated, repaired or deleted, no
// delete to keep a tombstone for and no dead letter.
func (t *txn) quiet(i int) bool {
	r := &t.res.Batches[i]
	return !t.bs[i].Date.IsZero() && t.deletes[i] == 0 &&
		r.Inserted+r.Updated+r.Repaired+r.Deleted+r.DeadLettered == 0
}

// logBatches writes the batch-log entries of the date indexes at, one per
// date, and takes each batch's application number into its result.
func (t *txn) logBatches(ctx context.Context, at []int) error {
	if len(at) == 0 {
		return nil
	}
	n := len(at)
	ids, runs, ranges := make([]record.ID, n), make([]record.ID, n), make([]string, n)
	dates := make([]pgtype.Date, n)
	counts := make([][]int32, 11)
	for k := range counts {
		counts[k] = make([]int32, n)
	}
	for j, i := range at {
		b, r := t.bs[i], &t.res.Batches[i]
		ids[j], runs[j] = r.BatchID, r.RunID
		js, err := json.Marshal(b.Ranges())
		if err != nil {
			return fmt.Errorf("encode ranges: %w", err)
		}
		ranges[j] = string(js)
		if !b.Date.IsZero() {
			dates[j] = pgtype.Date{Time: b.Date.Time(), Valid: true}
		}
		for k, v := range []int{r.Records, r.Superseded, r.Skipped, r.Staged, r.Inserted, r.Updated, r.Unchanged, r.Stale, r.Deleted, r.DeadLettered, r.Repaired} {
			counts[k][j] = int32(v)
		}
	}
	res, c := &t.res, t.c
	args := []any{t.u.Pipeline.Name, c.Group, c.Generation, c.Member, ms(res.Stage), ms(res.Upsert), ms(res.Verify), ids, runs, dates, ranges}
	for _, col := range counts {
		args = append(args, col)
	}
	rows, err := t.tx.Query(ctx, recordBatches, args...)
	if err != nil {
		return fmt.Errorf("record batches: %w", err)
	}
	var id record.ID
	var applications int
	if _, err := pgx.ForEachRow(rows, []any{&id, &applications}, func() error {
		if i, ok := t.at[id]; ok {
			t.res.Batches[i].Applications = applications
		}
		return nil
	}); err != nil {
		return fmt.Errorf("record batches: %w", err)
	}
	apps := make([]int32, n)
	for j, i := range at {
		apps[j] = int32(t.res.Batches[i].Applications)
	}
	if _, err := t.tx.Exec(ctx, recordApplications, t.u.Pipeline.Name, c.Group, c.Generation, c.Member, ids, apps, dates,
		counts[0], counts[2], counts[3], counts[4], counts[5], counts[10], counts[6], counts[7], counts[8], counts[9]); err != nil {
		return fmt.Errorf("record batch applications: %w", err)
	}
	return nil
}

// logUnchanged writes one row for the quiet date indexes at: their dates,
// their counts summed and the transaction's offset ranges.
func (t *txn) logUnchanged(ctx context.Context, at []int) error {
	if len(at) == 0 {
		return nil
	}
	dates := make([]pgtype.Date, len(at))
	var sum Counts
	for j, i := range at {
		dates[j] = pgtype.Date{Time: t.bs[i].Date.Time(), Valid: true}
		sum.Add(t.res.Batches[i].Counts)
	}
	js, err := json.Marshal(t.u.Ranges())
	if err != nil {
		return fmt.Errorf("encode ranges: %w", err)
	}
	c := t.c
	if _, err := t.tx.Exec(ctx, recordUnchanged, t.u.Pipeline.Name, c.Group, c.Generation, c.Member, string(js), dates,
		sum.Records, sum.Superseded, sum.Skipped, sum.Staged, sum.Unchanged, sum.Stale); err != nil {
		return fmt.Errorf("record unchanged dates: %w", err)
	}
	return nil
}

// upsertRows is the slow path for a unit the database refused: each row
// under its own savepoint, so that a refused row is dead-lettered and the
// rest still apply. It leaves in t.todo the rows the database took.
func (t *txn) upsertRows(ctx context.Context) error {
	good := t.todo[:0:0]
	for _, r := range t.todo {
		args := make([]any, 0, len(r.Values)+6)
		args = append(args, r.ID)
		args = append(args, r.Values...)
		args = append(args, r.Version, r.Pos.Topic, r.Pos.Partition, r.Pos.Offset, t.ids[r.Batch])
		if t.st.unavailable {
			if len(r.Unavailable) > 0 {
				ok, err := t.stored(ctx, *r.Row)
				if err != nil {
					return err
				}
				if !ok {
					t.dead = append(t.dead, deadLetter{t.incompleteDead(*r.Row), r.Batch})
					continue
				}
			}
			args = append(args, unavailableArg(r.Row))
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
				t.res.Batches[r.Batch].Inserted++
			} else if err == nil {
				t.res.Batches[r.Batch].Updated++
			}
			good = append(good, r)
			if _, err := t.tx.Exec(ctx, "RELEASE SAVEPOINT row"); err != nil {
				return fmt.Errorf("release savepoint: %w", err)
			}
		case errors.As(err, &pgErr) && dataError(pgErr):
			if _, err := t.tx.Exec(ctx, "ROLLBACK TO SAVEPOINT row"); err != nil {
				return fmt.Errorf("rollback to savepoint: %w", err)
			}
			t.dead = append(t.dead, deadLetter{refused(t.s.log, *r.Row, pgErr), r.Batch})
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

// insertDead writes the dead letters (ids holds the batch id of each date
// index) and returns, by class, how many of them it inserted: one already
// stored (a redelivery after an offset reset) is not counted again.
func insertDead(ctx context.Context, tx pgx.Tx, pipeline string, ids []record.ID, dead []deadLetter) (map[string]int, error) {
	n := len(dead)
	batches, topics, parts, offs := make([]record.ID, n), make([]string, n), make([]int32, n), make([]int64, n)
	keys, values, headers, reasons := make([][]byte, n), make([][]byte, n), make([][]byte, n), make([]string, n)
	for i, d := range dead {
		batches[i] = ids[d.batch]
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
	rows, err := tx.Query(ctx, insertDeadLetters, pipeline, batches, topics, parts, offs, keys, values, headers, reasons)
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
