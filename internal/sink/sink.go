// Package sink writes micro-batches into PostgreSQL: it stages a batch with
// binary COPY, upserts only changed rows under a version guard, verifies the
// result, and records the batch and the applied offsets in the ledger, all
// in one transaction.
package sink

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/idemsink/idemsink/internal/batch"
	"github.com/idemsink/idemsink/internal/config"
	"github.com/idemsink/idemsink/internal/metrics"
)

// Fault points a test build can crash at (see internal/fault).
const (
	FaultAfterStage  = "after-stage"
	FaultAfterUpsert = "after-upsert"
)

// ErrFenced means a writer from a newer group generation owns a partition
// of the batch: the batch must be abandoned, not retried.
var ErrFenced = errors.New("fenced by a newer consumer generation")

// VerifyError is a failed verification; the transaction was rolled back.
type VerifyError struct {
	Staged, Copied, Missing, Behind int64
}

func (e *VerifyError) Error() string {
	return fmt.Sprintf("verification failed: %d staged of %d copied, %d missing from the target, %d behind their staged version",
		e.Staged, e.Copied, e.Missing, e.Behind)
}

// Options configures a Sink.
type Options struct {
	Logger  *slog.Logger
	Metrics *metrics.Metrics
	// Fault, if set, is called at each named fault point.
	Fault func(point string)
}

// Sink applies batches of the configured pipelines.
type Sink struct {
	pool   *pgxpool.Pool
	log    *slog.Logger
	m      *metrics.Metrics
	fault  func(string)
	tables map[string]*statements
}

// New returns a sink for cfg's pipelines over pool.
func New(pool *pgxpool.Pool, cfg *config.Config, opts Options) *Sink {
	s := &Sink{pool: pool, log: opts.Logger, m: opts.Metrics, fault: opts.Fault, tables: map[string]*statements{}}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.m == nil {
		s.m = metrics.New(nil)
	}
	if s.fault == nil {
		s.fault = func(string) {}
	}
	for i := range cfg.Pipelines {
		p := &cfg.Pipelines[i]
		s.tables[p.Name] = buildStatements(p)
	}
	return s
}

// EnsureTables creates any missing target table, under an advisory lock so
// that concurrent starts do not race, and checks that existing tables have
// every configured column.
func (s *Sink) EnsureTables(ctx context.Context, cfg *config.Config) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, lockDDL); err != nil {
			return fmt.Errorf("lock for DDL: %w", err)
		}
		for i := range cfg.Pipelines {
			p := &cfg.Pipelines[i]
			st := s.tables[p.Name]
			if _, err := tx.Exec(ctx, st.createTable); err != nil {
				return fmt.Errorf("create table %s: %w", st.target, err)
			}
			rows, err := tx.Query(ctx, `SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute
WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped`, st.target)
			if err != nil {
				return fmt.Errorf("read columns of %s: %w", st.target, err)
			}
			have := map[string]string{}
			for rows.Next() {
				var name, typ string
				if err := rows.Scan(&name, &typ); err != nil {
					return err
				}
				have[name] = typ
			}
			if err := rows.Err(); err != nil {
				return fmt.Errorf("read columns of %s: %w", st.target, err)
			}
			for _, c := range p.Columns {
				typ, ok := have[c.Name]
				if !ok {
					return fmt.Errorf("table %s has no column %q that pipeline %s writes; add it or drop the table", st.target, c.Name, p.Name)
				}
				if want := canonicalType(c.Type); typ != want {
					return fmt.Errorf("table %s column %q is %s, but pipeline %s says %s", st.target, c.Name, typ, p.Name, c.Type)
				}
			}
		}
		return nil
	})
}

// canonicalType is the name format_type gives a configured type.
func canonicalType(t string) string {
	if t == "timestamptz" {
		return "timestamp with time zone"
	}
	return t
}

// Commit is what the consumer knows about a batch's place in the group.
type Commit struct {
	Group      string
	Generation int32
	Member     string
	// Applied is, per partition, the end of the contiguous applied prefix
	// once this batch commits.
	Applied map[batch.TP]int64
}

// Result reports what applying a batch did.
type Result struct {
	BatchID, RunID [16]byte
	Records        int // records taken from Kafka
	Superseded     int // replaced by a newer version within the batch
	Skipped        int // at or below the ledger's applied offset
	Staged         int
	Inserted       int
	Updated        int
	Unchanged      int
	Stale          int // older than the stored version, not written
	Deleted        int
	DeadLettered   int
	Stage, Upsert  time.Duration
	Verify         time.Duration
	// Applications is how many times this batch id has been applied.
	Applications int
	// Ledger holds the applied offsets the transaction found for the
	// batch's partitions; with ErrFenced it tells the caller where the
	// partitions really stand.
	Ledger map[batch.TP]int64
}

// Add adds o's counts and phase times to r, for totals over many batches.
func (r *Result) Add(o Result) {
	r.Records += o.Records
	r.Superseded += o.Superseded
	r.Skipped += o.Skipped
	r.Staged += o.Staged
	r.Inserted += o.Inserted
	r.Updated += o.Updated
	r.Unchanged += o.Unchanged
	r.Stale += o.Stale
	r.Deleted += o.Deleted
	r.DeadLettered += o.DeadLettered
	r.Stage += o.Stage
	r.Upsert += o.Upsert
	r.Verify += o.Verify
}

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
	for result, n := range map[string]int{"inserted": res.Inserted, "updated": res.Updated, "unchanged": res.Unchanged,
		"stale": res.Stale, "deleted": res.Deleted, "superseded": res.Superseded, "skipped": res.Skipped, "dead_lettered": res.DeadLettered} {
		s.m.Records.WithLabelValues(name, result).Add(float64(n))
	}
	s.m.BatchSeconds.WithLabelValues(name, "stage").Observe(res.Stage.Seconds())
	s.m.BatchSeconds.WithLabelValues(name, "upsert").Observe(res.Upsert.Seconds())
	s.m.BatchSeconds.WithLabelValues(name, "verify").Observe(res.Verify.Seconds())
	s.m.BatchSeconds.WithLabelValues(name, "total").Observe(time.Since(start).Seconds())
	return res, nil
}

func (s *Sink) apply(ctx context.Context, b *batch.Batch, c Commit, rowByRow bool) (Result, error) {
	st := s.tables[b.Pipeline.Name]
	res := Result{BatchID: b.ID(), RunID: batch.RunID(b.Pipeline.Name, b.Date), Records: b.Records, Superseded: b.Superseded}
	tps := make([]batch.TP, 0, len(c.Applied))
	for _, r := range b.Ranges() {
		tps = append(tps, batch.TP{Topic: r.Topic, Partition: r.Partition})
	}
	topics, parts := splitTPs(tps)

	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return res, fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // a no-op after Commit

	// Fence first: lock the batch's ledger rows and refuse to write if a
	// newer generation has claimed any of them.
	if _, err := tx.Exec(ctx, claimOffsets, c.Group, c.Generation, c.Member, topics, parts); err != nil {
		return res, fmt.Errorf("claim ledger rows: %w", err)
	}
	applied := map[batch.TP]int64{}
	rows, err := tx.Query(ctx, lockOffsets, c.Group, topics, parts)
	if err != nil {
		return res, fmt.Errorf("lock ledger rows: %w", err)
	}
	var fenced error
	for rows.Next() {
		var tp batch.TP
		var off int64
		var gen int32
		if err := rows.Scan(&tp.Topic, &tp.Partition, &off, &gen); err != nil {
			return res, fmt.Errorf("lock ledger rows: %w", err)
		}
		applied[tp] = off
		if gen > c.Generation {
			fenced = fmt.Errorf("%w: %s is at generation %d, this writer at %d", ErrFenced, tp, gen, c.Generation)
		}
	}
	if err := rows.Err(); err != nil {
		return res, fmt.Errorf("lock ledger rows: %w", err)
	}
	res.Ledger = applied
	if fenced != nil {
		return res, fenced
	}

	// Records at or below the applied offset were applied by an earlier
	// transaction (a redelivery): skip them.
	todo := b.Rows
	if slices.ContainsFunc(b.Rows, func(r batch.Row) bool { return r.Pos.Offset <= applied[r.Pos.TP] }) {
		todo = make([]batch.Row, 0, len(b.Rows))
		for _, r := range b.Rows {
			if r.Pos.Offset <= applied[r.Pos.TP] {
				res.Skipped++
				continue
			}
			todo = append(todo, r)
		}
	}
	var dead []batch.DeadLetter
	for _, d := range b.Dead {
		if d.Pos.Offset <= applied[d.Pos.TP] {
			res.Skipped++
			continue
		}
		dead = append(dead, d)
	}

	todo, dels := splitDeletes(todo)
	var tombstoned int64 // staged rows a delete supersedes: stale
	if rowByRow && b.Pipeline.Deletes == "apply" {
		if todo, tombstoned, err = withoutTombstoned(ctx, tx, b.Pipeline.Name, todo); err != nil {
			return res, err
		}
	}
	if _, err := tx.Exec(ctx, st.createStage); err != nil {
		return res, fmt.Errorf("create stage: %w", err)
	}
	t0 := time.Now()
	var copied int64
	if rowByRow {
		var good []batch.Row
		good, dead, err = s.upsertRows(ctx, tx, st, todo, dead, res.BatchID, &res)
		if err != nil {
			return res, err
		}
		todo = good
	}
	if len(todo) > 0 {
		copied, err = tx.CopyFrom(ctx, pgx.Identifier{"_idemsink_stage_" + b.Pipeline.Name}, st.stageCols, &rowSource{rows: todo})
		if err != nil {
			return res, fmt.Errorf("stage %d rows: %w", len(todo), err)
		}
	}
	if !rowByRow && len(todo) > 0 && b.Pipeline.Deletes == "apply" {
		n, err := dropTombstoned(ctx, tx, st, b.Pipeline.Name)
		if err != nil {
			return res, err
		}
		copied, tombstoned = copied-n, n
	}
	res.Stage = time.Since(t0)
	s.fault(FaultAfterStage)

	t0 = time.Now()
	if !rowByRow && len(todo) > 0 {
		var ins, upd int64
		if err := tx.QueryRow(ctx, st.upsert, res.BatchID).Scan(&ins, &upd); err != nil {
			return res, fmt.Errorf("upsert into %s: %w", st.target, err)
		}
		res.Inserted, res.Updated = int(ins), int(upd)
	}
	res.Upsert = time.Since(t0)

	t0 = time.Now()
	// The verify join reads one target row per staged row; left to itself
	// the planner picks a hash join over the whole target once a batch is
	// a few thousand rows. Index lookups are what it should be.
	if _, err := tx.Exec(ctx, planVerify); err != nil {
		return res, fmt.Errorf("plan verify: %w", err)
	}
	var staged, missing, behind, stale int64
	if err := tx.QueryRow(ctx, st.verify).Scan(&staged, &missing, &behind, &stale); err != nil {
		return res, fmt.Errorf("verify %s: %w", st.target, err)
	}
	res.Verify = time.Since(t0)
	if staged != copied || missing != 0 || behind != 0 {
		return res, &VerifyError{Staged: staged, Copied: copied, Missing: missing, Behind: behind}
	}
	res.Staged, res.Stale = int(staged+tombstoned), int(stale+tombstoned)
	if res.Deleted, err = applyDeletes(ctx, tx, st, b.Pipeline.Name, res.BatchID, dels); err != nil {
		return res, err
	}
	res.Unchanged = res.Staged - res.Inserted - res.Updated - res.Stale

	if len(dead) > 0 {
		if err := insertDead(ctx, tx, b.Pipeline.Name, res.BatchID, dead); err != nil {
			return res, err
		}
	}
	res.DeadLettered = len(dead)

	ranges, err := json.Marshal(b.Ranges())
	if err != nil {
		return res, fmt.Errorf("encode ranges: %w", err)
	}
	var date any
	if !b.Date.IsZero() {
		date = b.Date.Time()
	}
	if err := tx.QueryRow(ctx, recordBatch, res.BatchID, res.RunID, b.Pipeline.Name, date, c.Group, c.Generation, c.Member, ranges,
		res.Records, res.Superseded, res.Skipped, res.Staged, res.Inserted, res.Updated, res.Unchanged, res.Stale, res.Deleted,
		res.DeadLettered, ms(res.Stage), ms(res.Upsert), ms(res.Verify)).Scan(&res.Applications); err != nil {
		return res, fmt.Errorf("record batch: %w", err)
	}
	var offs []int64
	topics, parts = topics[:0], parts[:0]
	for _, tp := range tps {
		if a, ok := c.Applied[tp]; ok {
			topics, parts, offs = append(topics, tp.Topic), append(parts, tp.Partition), append(offs, a)
		}
	}
	if _, err := tx.Exec(ctx, advanceOffsets, c.Group, c.Generation, c.Member, topics, parts, offs); err != nil {
		return res, fmt.Errorf("advance ledger offsets: %w", err)
	}
	s.fault(FaultAfterUpsert)
	if err := tx.Commit(ctx); err != nil {
		return res, fmt.Errorf("commit: %w", err)
	}
	return res, nil
}

// upsertRows is the slow path for a batch the database refused: each row
// under its own savepoint, so that a refused row is dead-lettered and the
// rest still apply.
func (s *Sink) upsertRows(ctx context.Context, tx pgx.Tx, st *statements, rows []batch.Row, dead []batch.DeadLetter, batchID [16]byte, res *Result) ([]batch.Row, []batch.DeadLetter, error) {
	good := rows[:0:0]
	for _, r := range rows {
		args := make([]any, 0, len(r.Values)+6)
		args = append(args, r.ID)
		args = append(args, r.Values...)
		args = append(args, r.Version, r.Pos.Topic, r.Pos.Partition, r.Pos.Offset, batchID)
		if _, err := tx.Exec(ctx, "SAVEPOINT row"); err != nil {
			return nil, nil, fmt.Errorf("savepoint: %w", err)
		}
		var inserted bool
		err := tx.QueryRow(ctx, st.upsertRow, args...).Scan(&inserted)
		var pgErr *pgconn.PgError
		switch {
		case err == nil || errors.Is(err, pgx.ErrNoRows):
			if err == nil && inserted {
				res.Inserted++
			} else if err == nil {
				res.Updated++
			}
			good = append(good, r)
			if _, err := tx.Exec(ctx, "RELEASE SAVEPOINT row"); err != nil {
				return nil, nil, fmt.Errorf("release savepoint: %w", err)
			}
		case errors.As(err, &pgErr) && dataError(pgErr):
			if _, err := tx.Exec(ctx, "ROLLBACK TO SAVEPOINT row"); err != nil {
				return nil, nil, fmt.Errorf("rollback to savepoint: %w", err)
			}
			dead = append(dead, batch.DeadLetter{Pos: r.Pos, Key: r.Key, Value: r.Value,
				Reason: fmt.Sprintf("refused by PostgreSQL: %s (SQLSTATE %s)", pgErr.Message, pgErr.Code)})
		default:
			return nil, nil, fmt.Errorf("upsert row %s: %w", r.Pos.TP, err)
		}
	}
	return good, dead, nil
}

func insertDead(ctx context.Context, tx pgx.Tx, pipeline string, batchID [16]byte, dead []batch.DeadLetter) error {
	n := len(dead)
	topics, parts, offs := make([]string, n), make([]int32, n), make([]int64, n)
	keys, values, headers, reasons := make([][]byte, n), make([][]byte, n), make([][]byte, n), make([]string, n)
	for i, d := range dead {
		topics[i], parts[i], offs[i] = d.Pos.Topic, d.Pos.Partition, d.Pos.Offset
		keys[i], values[i], reasons[i] = d.Key, d.Value, d.Reason
		if len(d.Headers) > 0 {
			h, err := json.Marshal(d.Headers)
			if err != nil {
				return fmt.Errorf("encode headers: %w", err)
			}
			headers[i] = h
		}
	}
	if _, err := tx.Exec(ctx, insertDeadLetters, pipeline, batchID, topics, parts, offs, keys, values, headers, reasons); err != nil {
		return fmt.Errorf("insert %d dead letters: %w", n, err)
	}
	return nil
}

// Offset is a partition's ledger entry.
type Offset struct {
	TP         batch.TP
	Applied    int64 // -1: nothing applied yet
	Generation int32
	Member     string
	UpdatedAt  time.Time
}

// Claim makes the caller's generation the owner of the partitions' ledger
// rows, fencing out writers of older generations, and returns each
// partition's applied offset.
func (s *Sink) Claim(ctx context.Context, group string, generation int32, member string, tps []batch.TP) (map[batch.TP]Offset, error) {
	topics, parts := splitTPs(tps)
	rows, err := s.pool.Query(ctx, claimOffsets, group, generation, member, topics, parts)
	if err != nil {
		return nil, fmt.Errorf("claim ledger rows: %w", err)
	}
	out := map[batch.TP]Offset{}
	for rows.Next() {
		var o Offset
		if err := rows.Scan(&o.TP.Topic, &o.TP.Partition, &o.Applied, &o.Generation); err != nil {
			return nil, fmt.Errorf("claim ledger rows: %w", err)
		}
		out[o.TP] = o
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("claim ledger rows: %w", err)
	}
	return out, nil
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

// Ping checks that the database answers.
func (s *Sink) Ping(ctx context.Context) error { return s.pool.Ping(ctx) }

// Transient reports whether err is an outage rather than bad input: the
// operation should be retried, never dead-lettered.
func Transient(err error) bool {
	if err == nil || errors.Is(err, ErrFenced) {
		return false
	}
	var verr *VerifyError
	if errors.As(err, &verr) {
		return true
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return !dataError(pgErr)
	}
	return true
}

// dataError reports whether the database refused the data itself (class 22
// data exception, class 23 integrity violation), as opposed to failing.
func dataError(e *pgconn.PgError) bool {
	return len(e.Code) == 5 && (e.Code[:2] == "22" || e.Code[:2] == "23")
}

func splitTPs(tps []batch.TP) ([]string, []int32) {
	topics, parts := make([]string, len(tps)), make([]int32, len(tps))
	for i, tp := range tps {
		topics[i], parts[i] = tp.Topic, tp.Partition
	}
	return topics, parts
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// rowSource feeds rows to COPY without building an intermediate [][]any.
type rowSource struct {
	rows []batch.Row
	i    int
	buf  []any
}

func (r *rowSource) Next() bool { r.i++; return r.i <= len(r.rows) }

func (r *rowSource) Values() ([]any, error) {
	row := &r.rows[r.i-1]
	r.buf = append(r.buf[:0], row.ID)
	r.buf = append(r.buf, row.Values...)
	r.buf = append(r.buf, row.Version, row.Pos.Topic, row.Pos.Partition, row.Pos.Offset)
	return r.buf, nil
}

func (r *rowSource) Err() error { return nil }

// CaughtUp reports whether the group's ledger has applied every partition
// up to the given end offsets (the next offset to be written, as Kafka's
// high watermark).
func (s *Sink) CaughtUp(ctx context.Context, group string, ends map[batch.TP]int64) (bool, error) {
	offs, err := s.Offsets(ctx, group)
	if err != nil {
		return false, err
	}
	applied := map[batch.TP]int64{}
	for _, o := range offs {
		applied[o.TP] = o.Applied
	}
	for tp, end := range ends {
		if end <= 0 {
			continue
		}
		if a, ok := applied[tp]; !ok || a < end-1 {
			return false, nil
		}
	}
	return true, nil
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
