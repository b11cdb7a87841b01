package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/idemsink/idemsink/internal/config"
	"github.com/idemsink/idemsink/internal/gen"
	"github.com/idemsink/idemsink/internal/pglocal"
	"github.com/idemsink/idemsink/internal/sink"
)

// childApp is the application_name of every connection a child opens, so
// that the parent can wait for them to end (and flush their statistics).
const childApp = "idemsink-bench-child"

// env is the harness: the database, the brokers and the pipelines.
type env struct {
	o      options
	log    *slog.Logger
	stderr io.Writer
	exe    string

	pg       *pglocal.Server // nil: an external database
	dsn      string
	cluster  *kfake.Cluster // nil: a real broker
	brokers  []string
	pool     *pgxpool.Pool
	producer *kgo.Client
	adm      *kadm.Client

	// The pipelines: the scenario table, the ceiling's identically shaped
	// table, and the two backlog tables of scenario 5.
	load, ceiling, small, big                    config.Pipeline
	groupLoad, groupReplay, groupSmall, groupBig string
	// Scenario 6: the first load again at the low-latency linger (same
	// topic as load, its own table), and the two freshness pipelines,
	// default and low-latency, each on its own topic.
	loadLL, fresh, freshLL config.Pipeline
	groupLL, groupFresh    string
	// Scenario 7: two pipelines of manyTopics/2 topics each.
	many      []config.Pipeline
	groupMany string
	// topics are the topics this run created.
	topics []string

	src     *source
	loadSeg segment
}

func setup(ctx context.Context, o options, log *slog.Logger, stderr io.Writer) (_ *env, err error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find own executable: %w", err)
	}
	e := &env{o: o, log: log, stderr: stderr, exe: exe, dsn: o.database, brokers: o.brokers}
	defer func() {
		if err != nil {
			err = errors.Join(err, e.close())
		}
	}()
	if e.dsn == "" {
		if err := pglocal.Available(); err != nil {
			return nil, fmt.Errorf("no -database or TEST_DATABASE_URL, and no local PostgreSQL: %w", err)
		}
		opts := pglocal.Options{Logger: log}
		if o.durable {
			opts.Settings = append(opts.Settings, durableSettings...)
		}
		if o.has(6) {
			// Scenario 6 reads each row's commit time from its xmin.
			opts.Settings = append(opts.Settings, "track_commit_timestamp = on")
		}
		if e.pg, err = pglocal.Start(ctx, opts); err != nil {
			return nil, fmt.Errorf("start PostgreSQL: %w", err)
		}
		e.dsn = e.pg.DSN("postgres")
	}
	if len(e.brokers) == 0 {
		if e.cluster, err = kfake.NewCluster(kfake.NumBrokers(1)); err != nil {
			return nil, fmt.Errorf("start in-process Kafka: %w", err)
		}
		e.brokers = e.cluster.ListenAddrs()
	}

	// Names: a per-run suffix keeps topics and groups of earlier runs on a
	// real broker (and their ledger rows) out of this one.
	runID := strconv.FormatInt(time.Now().Unix(), 36)
	e.load = gen.Pipeline("bench_orders", "bench-orders-"+runID, "bench_order_lines")
	e.ceiling = gen.Pipeline("bench_ceiling", "bench-ceiling-unused-"+runID, "bench_order_lines_ceiling")
	e.small = gen.Pipeline("bench_backlog_small", "bench-backlog-small-"+runID, "bench_backlog_small")
	e.big = gen.Pipeline("bench_backlog_big", "bench-backlog-big-"+runID, "bench_backlog_big")
	e.groupLoad, e.groupReplay = "bench-"+runID+"-load", "bench-"+runID+"-replay"
	e.groupSmall, e.groupBig = "bench-"+runID+"-backlog-small", "bench-"+runID+"-backlog-big"
	e.loadLL = gen.Pipeline("bench_orders_ll", e.load.Topics[0], "bench_order_lines_ll")
	e.loadLL.Batch.Linger = o.freshLinger
	e.fresh = gen.Pipeline("bench_fresh", "bench-fresh-"+runID, "bench_fresh")
	e.freshLL = gen.Pipeline("bench_fresh_ll", "bench-fresh-ll-"+runID, "bench_fresh_ll")
	e.freshLL.Batch.Linger = o.freshLinger
	e.groupLL, e.groupFresh = "bench-"+runID+"-ll", "bench-"+runID+"-fresh"
	e.groupMany = "bench-" + runID + "-many"
	e.many = []config.Pipeline{gen.Pipeline("bench_many_a", "", "bench_many_a"), gen.Pipeline("bench_many_b", "", "bench_many_b")}
	for i := range manyTopics {
		p := &e.many[i*len(e.many)/manyTopics]
		if i%(manyTopics/len(e.many)) == 0 {
			p.Topics = nil
		}
		p.Topics = append(p.Topics, fmt.Sprintf("bench-many-%02d-%s", i, runID))
	}
	// A topic is read by one pipeline of a config, so loadLL, which reads
	// the load's topic, is validated in a config of its own.
	cfg := &config.Config{Brokers: e.brokers, Group: e.groupLoad, DatabaseURL: e.dsn,
		Pipelines: []config.Pipeline{e.load, e.ceiling, e.small, e.big, e.fresh, e.freshLL, e.many[0], e.many[1]}}
	cfgLL := &config.Config{Brokers: e.brokers, Group: e.groupLL, DatabaseURL: e.dsn, Pipelines: []config.Pipeline{e.loadLL}}
	for _, c := range []*config.Config{cfg, cfgLL} {
		c.SetDefaults()
		if err := c.Validate(); err != nil {
			return nil, err
		}
	}
	e.load, e.ceiling, e.small, e.big = cfg.Pipelines[0], cfg.Pipelines[1], cfg.Pipelines[2], cfg.Pipelines[3]
	e.fresh, e.freshLL, e.many = cfg.Pipelines[4], cfg.Pipelines[5], cfg.Pipelines[6:8]
	e.loadLL = cfgLL.Pipelines[0]

	if e.pool, err = pgxpool.New(ctx, e.dsn); err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	if _, err := sink.Migrate(ctx, e.pool); err != nil {
		return nil, fmt.Errorf("migrate: %w", err)
	}
	var drop []string
	for _, p := range e.pipelines() {
		drop = append(drop, pgx.Identifier{p.Schema, p.Table}.Sanitize())
	}
	if _, err := e.pool.Exec(ctx, "DROP TABLE IF EXISTS "+strings.Join(drop, ", ")); err != nil {
		return nil, fmt.Errorf("drop the bench tables of an earlier run: %w", err)
	}
	for _, c := range []*config.Config{cfg, cfgLL} {
		if err := sink.New(e.pool, c, sink.Options{Logger: log}).EnsureTables(ctx, c); err != nil {
			return nil, err
		}
	}

	if e.producer, err = kgo.NewClient(kgo.SeedBrokers(e.brokers...), kgo.MaxBufferedRecords(100_000),
		kgo.ProducerLinger(5*time.Millisecond)); err != nil {
		return nil, fmt.Errorf("producer: %w", err)
	}
	e.adm = kadm.NewClient(e.producer)
	create := map[string]int32{e.load.Topics[0]: int32(o.partitions), e.small.Topics[0]: int32(o.partitions), e.big.Topics[0]: int32(o.partitions)}
	if o.has(6) {
		create[e.fresh.Topics[0]], create[e.freshLL.Topics[0]] = int32(o.partitions), int32(o.partitions)
	}
	if o.has(7) {
		for _, p := range e.many {
			for _, t := range p.Topics {
				create[t] = manyPartitions
			}
		}
	}
	for t, n := range create {
		e.topics = append(e.topics, t)
		resp, err := e.adm.CreateTopic(ctx, n, -1, nil, t)
		if err == nil {
			err = resp.Err
		}
		if err != nil {
			return nil, fmt.Errorf("create topic %s: %w", t, err)
		}
	}
	return e, nil
}

func (e *env) close() error {
	var errs []error
	if e.producer != nil {
		if e.cluster == nil {
			// A real broker keeps what we made; clean up after ourselves.
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			_, err := e.adm.DeleteTopics(ctx, e.topics...)
			cancel()
			if err != nil {
				errs = append(errs, fmt.Errorf("delete bench topics: %w", err))
			}
		}
		e.producer.Close()
	}
	if e.pool != nil {
		e.pool.Close()
	}
	if e.cluster != nil {
		e.cluster.Close()
	}
	if e.pg != nil {
		errs = append(errs, e.pg.Close())
	}
	return errors.Join(errs...)
}

// Scenario 7's shape: 600 partitions, as 20 topics of 30.
const (
	manyTopics     = 20
	manyPartitions = 30
)

// pipelines returns every pipeline of the run, each with its own table.
func (e *env) pipelines() []config.Pipeline {
	return append([]config.Pipeline{e.load, e.ceiling, e.small, e.big, e.loadLL, e.fresh, e.freshLL}, e.many...)
}

// segment is a run of records produced to one topic.
type segment struct {
	topic        string
	records      int64
	bytes        int64 // keys and values
	took         time.Duration
	starts, ends map[int32]int64
}

// produce generates n records with next and produces them to topic.
func (e *env) produce(ctx context.Context, topic string, n int, next func() (key, value []byte)) (segment, error) {
	seg := segment{topic: topic, records: int64(n)}
	var err error
	if seg.starts, err = e.endOffsets(ctx, topic); err != nil {
		return seg, err
	}
	t0 := time.Now()
	var mu sync.Mutex
	var first error
	for range n {
		k, v := next()
		seg.bytes += int64(len(k) + len(v))
		e.producer.Produce(ctx, &kgo.Record{Topic: topic, Key: k, Value: v}, func(_ *kgo.Record, err error) {
			if err != nil {
				mu.Lock()
				first = cmpErr(first, err)
				mu.Unlock()
			}
		})
	}
	if err := e.producer.Flush(ctx); err != nil {
		return seg, fmt.Errorf("produce to %s: %w", topic, err)
	}
	if first != nil {
		return seg, fmt.Errorf("produce to %s: %w", topic, first)
	}
	seg.took = time.Since(t0)
	if seg.ends, err = e.endOffsets(ctx, topic); err != nil {
		return seg, err
	}
	var got int64
	for p, end := range seg.ends {
		got += end - seg.starts[p]
	}
	if got != seg.records {
		return seg, fmt.Errorf("produce to %s: %d records landed, want %d", topic, got, seg.records)
	}
	return seg, nil
}

func cmpErr(first, err error) error {
	if first != nil {
		return first
	}
	return err
}

func (e *env) endOffsets(ctx context.Context, topic string) (map[int32]int64, error) {
	ends, err := e.adm.ListEndOffsets(ctx, topic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("list end offsets of %s: %w", topic, err)
	}
	out := map[int32]int64{}
	ends.Each(func(o kadm.ListedOffset) { out[o.Partition] = o.Offset })
	return out, nil
}

// resetKafkaOffsets commits offset 0 for every partition of topic in
// group, leaving the ledger as it is: an operator's offset reset.
func (e *env) resetKafkaOffsets(ctx context.Context, group, topic string) error {
	ends, err := e.endOffsets(ctx, topic)
	if err != nil {
		return err
	}
	var offs kadm.Offsets
	for p := range ends {
		offs.Add(kadm.Offset{Topic: topic, Partition: p, At: 0, LeaderEpoch: -1})
	}
	resp, err := e.adm.CommitOffsets(ctx, group, offs)
	if err == nil {
		err = resp.Error()
	}
	if err != nil {
		return fmt.Errorf("reset Kafka offsets of %s: %w", group, err)
	}
	return nil
}

// settle gives every scenario the same starting state: no dead tuples or
// dirty buffers left by the previous one, fresh planner statistics, so
// that autovacuum and checkpoints do not land at random inside a
// measurement. The server's own autovacuum stays on.
func (e *env) settle(ctx context.Context) error {
	var tables []string
	for _, p := range e.pipelines() {
		tables = append(tables, pgx.Identifier{p.Schema, p.Table}.Sanitize())
	}
	if _, err := e.pool.Exec(ctx, "VACUUM (ANALYZE) "+strings.Join(tables, ", ")+", idemsink.batches, idemsink.offsets"); err != nil {
		return fmt.Errorf("vacuum: %w", err)
	}
	if _, err := e.pool.Exec(ctx, "CHECKPOINT"); err != nil {
		e.log.Info("checkpoint refused; going on without it", "err", err)
	}
	return nil
}

// writes returns the rows inserted and updated in table so far, by the
// statistics collector. It first waits until every child connection has
// ended: a backend flushes its counters when it exits.
func (e *env) writes(ctx context.Context, table string) (int64, error) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		var n int
		if err := e.pool.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", childApp).Scan(&n); err != nil {
			return 0, fmt.Errorf("wait for child connections to end: %w", err)
		}
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("%d child connections still open after 30s", n)
		}
		time.Sleep(20 * time.Millisecond)
	}
	var w int64
	// Each statement is its own transaction, so the stats snapshot is fresh.
	err := e.pool.QueryRow(ctx, `SELECT coalesce(sum(n_tup_ins + n_tup_upd), 0)::bigint FROM pg_stat_user_tables
WHERE schemaname = 'public' AND relname = $1`, table).Scan(&w)
	if err != nil {
		return 0, fmt.Errorf("read table statistics: %w", err)
	}
	return w, nil
}

// checkRows is a sanity check, not a measurement: the table holds one row
// per generated key. The sink's own verification and the torture tests
// check the content.
func (e *env) checkRows(ctx context.Context, p config.Pipeline, keys int64) error {
	var n int64
	if err := e.pool.QueryRow(ctx, "SELECT count(*) FROM "+pgx.Identifier{p.Schema, p.Table}.Sanitize()).Scan(&n); err != nil {
		return fmt.Errorf("count rows of %s: %w", p.Table, err)
	}
	if n != keys {
		return fmt.Errorf("%s holds %d rows, want one per generated key: %d", p.Table, n, keys)
	}
	return nil
}

// scenario runs one consumer child over seg and records its row.
func (e *env) scenario(ctx context.Context, rep *report, n int, name string, seg segment, p config.Pipeline, group string, noKafkaCommit bool) (*row, error) {
	if err := e.settle(ctx); err != nil {
		return nil, err
	}
	before, err := e.writes(ctx, p.Table)
	if err != nil {
		return nil, err
	}
	phases, err := e.child(ctx, childSpec{Kind: kindConsume, Name: name, Pipeline: p, Group: group, NoKafkaCommit: noKafkaCommit,
		Connections: e.o.connections, CPUProfile: profile(e.o.cpuprofile, fmt.Sprintf("s%d", n)), MemProfile: profile(e.o.memprofile, fmt.Sprintf("s%d", n))})
	if err != nil {
		return nil, fmt.Errorf("scenario %s: %w", name, err)
	}
	after, err := e.writes(ctx, p.Table)
	if err != nil {
		return nil, err
	}
	r := rep.add(name, seg, phases[0], after-before)
	fmt.Fprintf(e.stderr, "          %.0f records/s, %.1fs, CPU %.1fs, peak RSS %.0f MiB, rows written %d\n",
		r.rate(), r.Wall, r.CPU, float64(r.PeakRSS)/(1<<20), r.written)
	return r, nil
}

// child runs this binary again as a child process doing spec, and returns
// what it measured.
func (e *env) child(ctx context.Context, spec childSpec) ([]phase, error) {
	spec.Brokers, spec.DatabaseURL, spec.Verbose, spec.Timeout = e.brokers, e.dsn, e.o.verbose, e.o.timeout
	spec.ServerPID = e.serverPID()
	b, err := json.Marshal(spec)
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, e.exe)
	cmd.Env = append(os.Environ(), childEnv+"="+string(b))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, e.stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("child process: %w", err)
	}
	var phases []phase
	if err := json.Unmarshal(out.Bytes(), &phases); err != nil {
		return nil, fmt.Errorf("child process: unreadable result %q: %w", out.String(), err)
	}
	if len(phases) == 0 {
		return nil, fmt.Errorf("child process: empty result %q", out.String())
	}
	return phases, nil
}

// serverPID returns the local PostgreSQL server's postmaster pid, or 0
// when the server is not ours to watch.
func (e *env) serverPID() int {
	if e.pg == nil {
		return 0
	}
	b, err := os.ReadFile(e.pg.DataDir() + "/postmaster.pid")
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(strings.SplitN(string(b), "\n", 2)[0]))
	if err != nil {
		return 0
	}
	return pid
}

// serverCPU returns the CPU seconds the PostgreSQL server with postmaster
// pid used so far: the postmaster and its live children, plus the children
// it reaped (their time is in its cutime and cstime). -1 if unknown.
func serverCPU(pid int) float64 {
	if pid <= 0 {
		return -1
	}
	ticks, ok := procTicks(pid, true)
	if !ok {
		return -1
	}
	dirs, _ := os.ReadDir("/proc")
	for _, d := range dirs {
		child, err := strconv.Atoi(d.Name())
		if err != nil || child == pid {
			continue
		}
		if ppid, ok := procPPID(child); ok && ppid == pid {
			t, _ := procTicks(child, false)
			ticks += t
		}
	}
	return float64(ticks) / clockTicks
}

// clockTicks is USER_HZ, 100 on every Linux architecture Go supports.
const clockTicks = 100

// procStat returns the fields of /proc/pid/stat after the command name.
func procStat(pid int) ([]string, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return nil, false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return nil, false
	}
	return strings.Fields(s[i+1:]), true
}

func procPPID(pid int) (int, bool) {
	f, ok := procStat(pid)
	if !ok || len(f) < 2 {
		return 0, false
	}
	ppid, err := strconv.Atoi(f[1])
	return ppid, err == nil
}

// procTicks sums utime and stime (and cutime and cstime if reaped).
func procTicks(pid int, reaped bool) (int64, bool) {
	f, ok := procStat(pid)
	if !ok || len(f) < 15 {
		return 0, false
	}
	// Fields after ")" start at field 3 (state): utime is field 14.
	idx := []int{11, 12}
	if reaped {
		idx = append(idx, 13, 14)
	}
	var sum int64
	for _, i := range idx {
		n, err := strconv.ParseInt(f[i], 10, 64)
		if err != nil {
			return 0, false
		}
		sum += n
	}
	return sum, true
}
