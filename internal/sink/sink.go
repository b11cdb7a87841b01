// Package sink writes micro-batches into PostgreSQL: it stages a batch with
// binary COPY, upserts only changed rows under a version guard, verifies the
// result, and records the batch and the applied offsets in the ledger, all
// in one transaction.
package sink

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/idemsink/idemsink/internal/config"
	"github.com/idemsink/idemsink/internal/metrics"
	"github.com/idemsink/idemsink/internal/record"
)

// Fault points a test build can crash at (see internal/fault).
const (
	FaultAfterStage  = "after-stage"
	FaultAfterUpsert = "after-upsert"
)

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
		// Every class starts at 0, so that rate() sees a pipeline's
		// first dead letter of a class instead of a new series.
		for _, class := range record.Classes {
			s.m.DeadLetters.WithLabelValues(p.Name, class)
		}
		s.m.DeadLetters.WithLabelValues(p.Name, ClassOther)
	}
	return s
}

// Commit is what the consumer knows about a batch's place in the group.
type Commit struct {
	Group      string
	Generation int32
	Member     string
	// Applied is, per partition, the end of the contiguous applied prefix
	// once this batch commits.
	Applied map[record.TP]int64
}

// Counts are what applying records did, for one date's batch or summed
// over a transaction.
type Counts struct {
	Records    int // records taken from Kafka
	Superseded int // replaced by a newer version within the transaction
	Skipped    int // at or below the ledger's applied offset
	Staged     int
	Inserted   int
	Updated    int
	// Repaired counts rows restored by the record they came from: the
	// same version and position, other content (a row damaged by hand, or
	// a column added since it was written).
	Repaired     int
	Unchanged    int
	Stale        int // older than the stored version, not written
	Deleted      int
	DeadLettered int
	// DeadClasses counts the dead letters this batch inserted (not those
	// already stored, as after an offset reset), by class: the class
	// their reason starts with, or ClassOther.
	DeadClasses map[string]int
}

// Add adds o to c.
func (c *Counts) Add(o Counts) {
	c.Records += o.Records
	c.Superseded += o.Superseded
	c.Skipped += o.Skipped
	c.Staged += o.Staged
	c.Inserted += o.Inserted
	c.Updated += o.Updated
	c.Repaired += o.Repaired
	c.Unchanged += o.Unchanged
	c.Stale += o.Stale
	c.Deleted += o.Deleted
	c.DeadLettered += o.DeadLettered
	for class, n := range o.DeadClasses {
		if c.DeadClasses == nil {
			c.DeadClasses = map[string]int{}
		}
		c.DeadClasses[class] += n
	}
}

// BatchResult reports one target date's batch of a transaction: its entry
// in the batch log.
type BatchResult struct {
	Date           record.Date
	BatchID, RunID [16]byte
	Counts
	// Applications is how many times this batch id has been applied.
	Applications int
}

// Result reports what applying a unit did: the counts summed over its
// dates, the transaction's phase times, and one BatchResult per date.
type Result struct {
	Counts
	Stage, Upsert time.Duration
	Verify        time.Duration
	Batches       []BatchResult
}

// Add adds o's counts and phase times to r, for totals over many
// transactions; the per-date results are not kept.
func (r *Result) Add(o Result) {
	r.Counts.Add(o.Counts)
	r.Stage += o.Stage
	r.Upsert += o.Upsert
	r.Verify += o.Verify
}

// Offset is a partition's ledger entry.
type Offset struct {
	TP         record.TP
	Applied    int64 // -1: nothing applied yet
	Generation int32
	Member     string
	UpdatedAt  time.Time
}

// Claim makes the caller's generation the owner of the partitions' ledger
// rows, fencing out writers of older generations, and returns each
// partition's applied offset.
func (s *Sink) Claim(ctx context.Context, group string, generation int32, member string, tps []record.TP) (map[record.TP]Offset, error) {
	topics, parts := splitTPs(tps)
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("claim ledger rows: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // a no-op after Commit
	if _, err := tx.Exec(ctx, claimOffsets, group, generation, member, topics, parts); err != nil {
		return nil, fmt.Errorf("claim ledger rows: %w", err)
	}
	rows, err := tx.Query(ctx, lockOffsets, group, topics, parts)
	if err != nil {
		return nil, fmt.Errorf("claim ledger rows: %w", err)
	}
	out := map[record.TP]Offset{}
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
	if err := tx.Commit(ctx); err != nil {
		return nil, fmt.Errorf("claim ledger rows: %w", err)
	}
	return out, nil
}

// Ping checks that the database answers.
func (s *Sink) Ping(ctx context.Context) error { return s.pool.Ping(ctx) }

func splitTPs(tps []record.TP) ([]string, []int32) {
	topics, parts := make([]string, len(tps)), make([]int32, len(tps))
	for i, tp := range tps {
		topics[i], parts[i] = tp.Topic, tp.Partition
	}
	return topics, parts
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
