package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/idemsink/idemsink/internal/batch"
	"github.com/idemsink/idemsink/internal/config"
	"github.com/idemsink/idemsink/internal/decode"
	"github.com/idemsink/idemsink/internal/record"
)

// ceilingStage is the ceiling's temporary staging table.
const ceilingStage = "_bench_ceiling_stage"

// ceilingSQL returns the ceiling's two statements for p's table: a
// transaction-scoped temporary stage shaped like the sink's, and one
// INSERT ... ON CONFLICT that writes only rows whose content differs. It is
// what a hand-written loader would do, and what PostgreSQL allows at best
// for an idempotent load: no version guard, no verification, no ledger.
func ceilingSQL(p *config.Pipeline) (createStage, upsert string, copyCols []string) {
	var cols, stageDefs, sets, tContent, eContent []string
	for _, c := range p.Columns {
		q := pgx.Identifier{c.Name}.Sanitize()
		cols = append(cols, q)
		stageDefs = append(stageDefs, q+" "+c.Type)
		sets = append(sets, fmt.Sprintf("%s = EXCLUDED.%s", q, q))
		tContent = append(tContent, "t."+q)
		eContent = append(eContent, "EXCLUDED."+q)
		copyCols = append(copyCols, c.Name)
	}
	copyCols = append(append([]string{"record_id"}, copyCols...), "_version", "_src_topic", "_src_partition", "_src_offset")
	createStage = fmt.Sprintf(`CREATE TEMP TABLE IF NOT EXISTS %s (record_id uuid, %s, _version bigint, _src_topic text, _src_partition integer, _src_offset bigint) ON COMMIT DELETE ROWS`,
		ceilingStage, strings.Join(stageDefs, ", "))
	colList := strings.Join(cols, ", ")
	upsert = fmt.Sprintf(`INSERT INTO %s AS t (record_id, %s, _version, _src_topic, _src_partition, _src_offset, _batch_id, _applied_at)
SELECT record_id, %s, _version, _src_topic, _src_partition, _src_offset, $1::uuid, now() FROM %s
ON CONFLICT (record_id) DO UPDATE SET %s, _version = EXCLUDED._version, _src_topic = EXCLUDED._src_topic,
  _src_partition = EXCLUDED._src_partition, _src_offset = EXCLUDED._src_offset, _batch_id = EXCLUDED._batch_id,
  _applied_at = EXCLUDED._applied_at
WHERE (t._version, %s) IS DISTINCT FROM (EXCLUDED._version, %s)`,
		pgx.Identifier{p.Schema, p.Table}.Sanitize(), colList, colList, ceilingStage, strings.Join(sets, ", "),
		strings.Join(tContent, ", "), strings.Join(eContent, ", "))
	return createStage, upsert, copyCols
}

// ceilingChild reads and decodes the segment before any timer starts,
// then times the bare loop over the same rows: on one connection, the load
// into the empty table and the same rows again (all unchanged); then, the
// table emptied, the same two passes on two connections at once, each
// batch's rows split between them by key hash (the machine's practical
// limit for a loader that keeps keys apart).
//
// For kindCeilingMix it times the first pass only: scenario 4's stream on
// one connection, over the ceiling table as its last pass left it (the
// first load's rows), as scenario 4 applies it over scenario 1's. Updates
// rewrite rows, so that is the ceiling an update-heavy stream is held to,
// not the first load's.
func ceilingChild(ctx context.Context, spec childSpec, log *slog.Logger) ([]phase, error) {
	chunks, err := readChunks(ctx, spec)
	if err != nil {
		return nil, err
	}
	log.Info("ceiling rows ready", "batches", len(chunks))
	pool, err := childPool(ctx, spec.DatabaseURL, nil)
	if err != nil {
		return nil, err
	}
	defer pool.Close()
	passes := 4
	if spec.Kind == kindCeilingMix {
		passes = 1
	}
	var phases []phase
	for pass := range passes {
		lanes := 1 + pass/2
		if pass == 2 {
			if _, err := pool.Exec(ctx, "TRUNCATE "+pgx.Identifier{spec.Pipeline.Schema, spec.Pipeline.Table}.Sanitize()); err != nil {
				return nil, fmt.Errorf("empty the ceiling table: %w", err)
			}
			if _, err := pool.Exec(ctx, "CHECKPOINT"); err != nil {
				return nil, fmt.Errorf("checkpoint: %w", err)
			}
		}
		stop, err := startCPUProfile(profileSuffix(spec.CPUProfile, pass))
		if err != nil {
			return nil, err
		}
		ph, err := ceilingPass(ctx, pool, spec, chunks, pass, lanes)
		stop()
		if err != nil {
			return nil, err
		}
		phases = append(phases, ph)
	}
	return phases, nil
}

// ceilingPass loads every chunk with the bare loop over lanes
// connections; with more than one, connection k takes the rows whose
// record_id hashes to k (split before the clock starts).
func ceilingPass(ctx context.Context, pool *pgxpool.Pool, spec childSpec, chunks [][]record.Row, pass, lanes int) (phase, error) {
	split := make([][][]record.Row, lanes)
	for lane := range lanes {
		for _, all := range chunks {
			var rows []record.Row
			for _, r := range all {
				if int(r.ID[15])%lanes == lane {
					rows = append(rows, r)
				}
			}
			split[lane] = append(split[lane], rows)
		}
	}
	createStage, upsert, copyCols := ceilingSQL(&spec.Pipeline)
	lat := newTxLatency()
	var ph phase
	var mu sync.Mutex
	// one is the bare loop on one connection over its share of the rows.
	one := func(ctx context.Context, lane int) error {
		conn, err := pool.Acquire(ctx)
		if err != nil {
			return fmt.Errorf("connect: %w", err)
		}
		defer conn.Release()
		for i, rows := range split[lane] {
			t0 := time.Now()
			var id [16]byte
			binary.BigEndian.PutUint64(id[:], uint64(pass)<<40|uint64(lane)<<32|uint64(i))
			var written int64
			err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
				if _, err := tx.Exec(ctx, createStage); err != nil {
					return fmt.Errorf("create stage: %w", err)
				}
				if _, err := tx.CopyFrom(ctx, pgx.Identifier{ceilingStage}, copyCols, &copySource{rows: rows}); err != nil {
					return fmt.Errorf("copy: %w", err)
				}
				tag, err := tx.Exec(ctx, upsert, id)
				written = tag.RowsAffected()
				return err
			})
			if err != nil {
				return fmt.Errorf("ceiling batch: %w", err)
			}
			lat.add(time.Since(t0))
			mu.Lock()
			ph.Written += written
			ph.Batches++
			ph.DateLog++
			mu.Unlock()
		}
		return nil
	}
	wal0 := walLSN(ctx, pool)
	s0 := take(spec.ServerPID)
	gctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errs := make([]error, lanes)
	for lane := range lanes {
		wg.Go(func() {
			if errs[lane] = one(gctx, lane); errs[lane] != nil {
				cancel()
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return ph, err
	}
	t := take(spec.ServerPID).since(s0)
	ph.WAL = walSince(ctx, pool, wal0)
	ph.Wall, ph.CPU, ph.ServerCPU = t.Wall, t.CPU, t.ServerCPU
	ph.P50, ph.P99 = lat.percentiles()
	ph.Tx = lat.total()
	ph.PeakRSS = peakRSS()
	return ph, nil
}

func profileSuffix(path string, pass int) string {
	if path == "" || pass == 0 {
		return path
	}
	return path + [...]string{"", ".again", ".2conn", ".2conn.again"}[pass]
}

// readChunks reads the segment from Kafka and decodes it with the
// product's decoder into batches as the consumer now cuts them: at most the
// pipeline's batch size, whatever the records' target dates (one
// transaction carries many dates), newest row per key.
func readChunks(ctx context.Context, spec childSpec) ([][]record.Row, error) {
	offsets := map[int32]kgo.Offset{}
	left := map[int32]int64{}
	for p, end := range spec.Ends {
		if n := end - spec.Starts[p]; n > 0 {
			offsets[p] = kgo.NewOffset().At(spec.Starts[p])
			left[p] = n
		}
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(spec.Brokers...),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{spec.Topic: offsets}))
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	dec := decode.NewDecoder(&spec.Pipeline)
	size := spec.Pipeline.Batch.MaxRecords
	var open *batch.Batch
	var chunks [][]record.Row
	now := time.Now()
	for len(left) > 0 {
		fetches := cl.PollFetches(ctx)
		if err := fetches.Err0(); err != nil {
			return nil, fmt.Errorf("read %s: %w", spec.Topic, err)
		}
		var derr error
		fetches.EachRecord(func(r *kgo.Record) {
			if r.Offset >= spec.Ends[r.Partition] || derr != nil {
				return
			}
			pos := record.Position{TP: record.TP{Topic: r.Topic, Partition: r.Partition}, Offset: r.Offset}
			row, _, err := dec.Decode(r.Key, r.Value, pos)
			if err != nil {
				derr = fmt.Errorf("decode %v: %w", pos, err)
				return
			}
			if open == nil {
				open = batch.New(&spec.Pipeline, record.Date{}, now)
			}
			open.Add(row)
			if open.Records >= size {
				chunks = append(chunks, open.Rows)
				open = nil
			}
			if left[r.Partition]--; left[r.Partition] == 0 {
				delete(left, r.Partition)
			}
		})
		if derr != nil {
			return nil, derr
		}
	}
	if open != nil {
		chunks = append(chunks, open.Rows)
	}
	return chunks, nil
}

// copySource feeds rows to COPY in the sink's staging column order.
type copySource struct {
	rows []record.Row
	i    int
	buf  []any
}

func (s *copySource) Next() bool { s.i++; return s.i <= len(s.rows) }

func (s *copySource) Values() ([]any, error) {
	r := &s.rows[s.i-1]
	s.buf = append(s.buf[:0], r.ID)
	s.buf = append(s.buf, r.Values...)
	s.buf = append(s.buf, r.Version, r.Pos.Topic, r.Pos.Partition, r.Pos.Offset)
	return s.buf, nil
}

func (s *copySource) Err() error { return nil }
