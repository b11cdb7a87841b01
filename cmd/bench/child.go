package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/idemsink/idemsink/internal/batch"
	"github.com/idemsink/idemsink/internal/config"
	"github.com/idemsink/idemsink/internal/consume"
	"github.com/idemsink/idemsink/internal/record"
	"github.com/idemsink/idemsink/internal/sink"
)

// childEnv carries a child's spec, as JSON; its presence makes the binary
// a child.
const childEnv = "IDEMSINK_BENCH_CHILD"

// Kinds of child.
const (
	kindConsume = "consume" // run the product's consumer until caught up
	kindCeiling = "ceiling" // load the same rows by bare COPY + upsert
	// kindCeilingMix applies scenario 4's mixed stream by the same bare
	// loop, on one connection, to the ceiling's table as the first load
	// left it.
	kindCeilingMix = "ceiling-mix"
)

// childSpec is what a child process is asked to do.
type childSpec struct {
	Kind        string          `json:"kind"`
	Name        string          `json:"name"`
	Brokers     []string        `json:"brokers"`
	DatabaseURL string          `json:"database_url"`
	Pipeline    config.Pipeline `json:"pipeline"`
	// Pipelines, when set, are what the consumer runs instead of Pipeline
	// (scenario 7: two pipelines of ten topics each).
	Pipelines []config.Pipeline `json:"pipelines,omitempty"`
	// Follow keeps the consumer running, past the end offsets it saw at
	// start, until its standard input closes (scenario 6). It writes
	// "ready" on a line of its own once it owns every partition.
	Follow        bool   `json:"follow"`
	Group         string `json:"group"`
	NoKafkaCommit bool   `json:"no_kafka_commit"`
	// Connections is the consumer's apply_connections; 0 is the default.
	Connections int `json:"connections"`
	// Topic, Starts and Ends are the records the ceiling loads.
	Topic      string          `json:"topic"`
	Starts     map[int32]int64 `json:"starts,omitempty"`
	Ends       map[int32]int64 `json:"ends,omitempty"`
	CPUProfile string          `json:"cpu_profile"`
	MemProfile string          `json:"mem_profile"`
	// ServerPID is the local PostgreSQL postmaster, 0 if not ours.
	ServerPID int           `json:"server_pid"`
	Verbose   bool          `json:"verbose"`
	Timeout   time.Duration `json:"timeout"`
}

// phase is what a child measured over one timed phase.
type phase struct {
	Wall      float64 `json:"wall_s"`
	CPU       float64 `json:"cpu_s"`        // this process, user + system
	ServerCPU float64 `json:"server_cpu_s"` // the PostgreSQL server, -1 unknown
	PeakRSS   int64   `json:"peak_rss"`     // bytes, VmHWM of this process
	P50       float64 `json:"p50_ms"`       // per-batch transaction, begin to commit
	P99       float64 `json:"p99_ms"`
	Batches   int     `json:"batches"`
	DateLog   int     `json:"date_log"` // batch-log entries: one per target date per transaction
	// FirstBatch is the time from the consumer's start to its first
	// applied and committed transaction, in seconds.
	FirstBatch float64 `json:"first_batch_s"`

	Inserted, Updated, Unchanged, Stale, Superseded, Skipped, Dead int64
	// Stage, Upsert and Verify sum the sink's own timings; Tx sums whole
	// transactions, begin to commit (seconds).
	Stage, Upsert, Verify, Tx float64
	// Written is the ceiling's rows inserted or updated, by command tags.
	Written int64
	// WAL is the WAL the server wrote meanwhile, in bytes (-1 unknown):
	// target rows, ledger, and anything else the server did.
	WAL int64
}

func runChild(ctx context.Context, specJSON string, stdout, stderr io.Writer) error {
	var spec childSpec
	if err := json.Unmarshal([]byte(specJSON), &spec); err != nil {
		return fmt.Errorf("child: bad spec: %w", err)
	}
	level := slog.LevelWarn
	if spec.Verbose {
		level = slog.LevelInfo
	}
	// The consumer logs every batch at info; only the harness's own
	// progress is wanted at -v.
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: max(level, slog.LevelWarn)})).With("child", spec.Name)
	ctx, cancel := context.WithTimeout(ctx, spec.Timeout)
	defer cancel()
	var phases []phase
	var err error
	switch spec.Kind {
	case kindConsume:
		var p phase
		p, err = consumeChild(ctx, spec, log, stdout)
		phases = []phase{p}
	case kindCeiling, kindCeilingMix:
		phases, err = ceilingChild(ctx, spec, log)
	default:
		err = fmt.Errorf("unknown child kind %q", spec.Kind)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", spec.Name, err)
	}
	return json.NewEncoder(stdout).Encode(phases)
}

// consumeChild runs the product's consumer, exactly as the daemon wires it,
// until the ledger has applied every partition to its end offset.
func consumeChild(ctx context.Context, spec childSpec, log *slog.Logger, stdout io.Writer) (phase, error) {
	var ph phase
	pipelines := spec.Pipelines
	if len(pipelines) == 0 {
		pipelines = []config.Pipeline{spec.Pipeline}
	}
	var topics []string
	for _, p := range pipelines {
		topics = append(topics, p.Topics...)
	}
	cfg := &config.Config{Brokers: spec.Brokers, Group: spec.Group, DatabaseURL: spec.DatabaseURL,
		Pipelines: pipelines, ApplyConnections: spec.Connections}
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return ph, err
	}
	lat := newTxLatency()
	pool, err := childPool(ctx, spec.DatabaseURL, lat)
	if err != nil {
		return ph, err
	}
	defer pool.Close()
	sk := sink.New(pool, cfg, sink.Options{Logger: log})

	cl, err := kgo.NewClient(kgo.SeedBrokers(spec.Brokers...))
	if err != nil {
		return ph, err
	}
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, topics...)
	if err == nil {
		err = ends.Error()
	}
	cl.Close()
	if err != nil {
		return ph, fmt.Errorf("list end offsets: %w", err)
	}
	want := map[record.TP]int64{}
	ends.Each(func(o kadm.ListedOffset) { want[record.TP{Topic: o.Topic, Partition: o.Partition}] = o.Offset })

	var mu sync.Mutex
	var start time.Time // set before the consumer runs
	c := consume.New(consume.Options{
		Config: cfg, Sink: sk, Logger: log, NoKafkaCommit: spec.NoKafkaCommit,
		OnBatch: func(_ *batch.Unit, r sink.Result) {
			mu.Lock()
			defer mu.Unlock()
			if ph.Batches == 0 {
				ph.FirstBatch = time.Since(start).Seconds()
			}
			ph.Batches++
			ph.DateLog += len(r.Batches)
			ph.Inserted += int64(r.Inserted)
			ph.Updated += int64(r.Updated)
			ph.Unchanged += int64(r.Unchanged)
			ph.Stale += int64(r.Stale)
			ph.Superseded += int64(r.Superseded)
			ph.Skipped += int64(r.Skipped)
			ph.Dead += int64(r.DeadLettered)
			ph.Stage += r.Stage.Seconds()
			ph.Upsert += r.Upsert.Seconds()
			ph.Verify += r.Verify.Seconds()
		},
	})

	stop, err := startCPUProfile(spec.CPUProfile)
	if err != nil {
		return ph, err
	}
	wal0 := walLSN(ctx, pool)
	s0 := take(spec.ServerPID)
	start = s0.at
	rctx, stopRun := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- c.Run(rctx) }()
	if spec.Follow {
		err = follow(ctx, c, want, done, stdout)
	} else {
		err = waitCaughtUp(ctx, c, want, done)
	}
	s1 := take(spec.ServerPID)
	stop()
	ph.WAL = walSince(ctx, pool, wal0)
	stopRun()
	if rerr := <-done; err == nil && rerr != nil {
		err = fmt.Errorf("consumer: %w", rerr)
	}
	if err != nil {
		return ph, err
	}
	if err := writeAllocProfile(spec.MemProfile); err != nil {
		return ph, err
	}
	mu.Lock()
	defer mu.Unlock()
	t := s1.since(s0)
	ph.Wall, ph.CPU, ph.ServerCPU = t.Wall, t.CPU, t.ServerCPU
	ph.P50, ph.P99 = lat.percentiles()
	ph.Tx = lat.total()
	ph.Skipped += c.SkippedOnResume()
	ph.PeakRSS = peakRSS()
	return ph, nil
}

// waitCaughtUp waits until the consumer owns every partition and its
// ledger has applied each one up to its end offset.
func waitCaughtUp(ctx context.Context, c *consume.Consumer, want map[record.TP]int64, done <-chan error) error {
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		if c.CaughtUp(want) {
			return nil
		}
		select {
		case err := <-done:
			return fmt.Errorf("consumer stopped before catching up: %w", err)
		case <-ctx.Done():
			return fmt.Errorf("consumer did not catch up: %w", ctx.Err())
		case <-tick.C:
		}
	}
}

// follow waits until the consumer owns every partition of want, says
// "ready" on stdout, and then lets it run until stdin closes: the parent
// produces meanwhile and watches the rows arrive.
func follow(ctx context.Context, c *consume.Consumer, want map[record.TP]int64, done <-chan error, stdout io.Writer) error {
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for owned := false; !owned; {
		applied := c.Applied()
		owned = true
		for tp := range want {
			if _, ok := applied[tp]; !ok {
				owned = false
			}
		}
		if owned {
			break
		}
		select {
		case err := <-done:
			return fmt.Errorf("consumer stopped before owning every partition: %w", err)
		case <-ctx.Done():
			return fmt.Errorf("consumer did not get every partition: %w", ctx.Err())
		case <-tick.C:
		}
	}
	if _, err := fmt.Fprintln(stdout, "ready"); err != nil {
		return err
	}
	eof := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin) // until the parent closes it
		close(eof)
	}()
	select {
	case <-eof:
		return nil
	case err := <-done:
		return fmt.Errorf("consumer stopped while following: %w", err)
	case <-ctx.Done():
		return fmt.Errorf("follow: %w", ctx.Err())
	}
}

// childPool connects with the child's application name and the
// transaction latency tracer.
func childPool(ctx context.Context, dsn string, tracer pgx.QueryTracer) (*pgxpool.Pool, error) {
	pc, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("parse database URL: %w", err)
	}
	pc.ConnConfig.RuntimeParams["application_name"] = childApp
	pc.MaxConns = 8
	if tracer != nil {
		pc.ConnConfig.Tracer = tracer
	}
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	return pool, nil
}

func startCPUProfile(path string) (stop func(), err error) {
	if path == "" {
		return func() {}, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("cpu profile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		return nil, fmt.Errorf("cpu profile: %w", errors.Join(err, f.Close()))
	}
	return func() {
		pprof.StopCPUProfile()
		if err := f.Close(); err != nil {
			fmt.Fprintln(os.Stderr, "bench: cpu profile:", err)
		}
	}, nil
}

func writeAllocProfile(path string) error {
	if path == "" {
		return nil
	}
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("memory profile: %w", err)
	}
	runtime.GC()
	err = pprof.Lookup("allocs").WriteTo(f, 0)
	return errors.Join(err, f.Close())
}

// walLSN returns the server's current WAL insert position, or -1.
func walLSN(ctx context.Context, pool *pgxpool.Pool) int64 {
	var s string
	if err := pool.QueryRow(ctx, "SELECT pg_current_wal_insert_lsn()::text").Scan(&s); err != nil {
		return -1
	}
	hi, lo, ok := strings.Cut(s, "/")
	h, err1 := strconv.ParseUint(hi, 16, 32)
	l, err2 := strconv.ParseUint(lo, 16, 32)
	if !ok || err1 != nil || err2 != nil {
		return -1
	}
	return int64(h<<32 | l)
}

// walSince returns the WAL written since position from, or -1.
func walSince(ctx context.Context, pool *pgxpool.Pool, from int64) int64 {
	to := walLSN(ctx, pool)
	if from < 0 || to < 0 {
		return -1
	}
	return to - from
}
