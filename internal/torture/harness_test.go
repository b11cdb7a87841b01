package torture_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.yaml.in/yaml/v3"

	"github.com/idemsink/idemsink/internal/config"
	"github.com/idemsink/idemsink/internal/consume"
	"github.com/idemsink/idemsink/internal/gen"
	"github.com/idemsink/idemsink/internal/kafkatest"
	"github.com/idemsink/idemsink/internal/metrics"
	"github.com/idemsink/idemsink/internal/pgtest"
	"github.com/idemsink/idemsink/internal/record"
	"github.com/idemsink/idemsink/internal/sink"
	"github.com/idemsink/idemsink/internal/torture"
	"github.com/idemsink/idemsink/internal/waittest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// long reports whether TORTURE_LONG=1 asks for the long run (make torture).
func long() bool { return os.Getenv("TORTURE_LONG") == "1" }

// pick returns the fast or the long value.
func pick[T any](fast, slow T) T {
	if long() {
		return slow
	}
	return fast
}

// schedule is a deliberate pause between two actions of a scenario (kills,
// membership changes, faults): a random interval in [lo, hi), not a wait
// for a condition.
func schedule(rng *rand.Rand, lo, hi time.Duration) <-chan time.Time {
	return time.NewTimer(lo + time.Duration(rng.Int64N(int64(hi-lo)))).C
}

// env is one scenario: a Kafka topic, a consumer group, a database, the
// producer of the log and the monitor of the invariants.
type env struct {
	t        *testing.T
	scenario string
	began    time.Time
	rng      *rand.Rand
	seed     uint64
	k        *kafkatest.Cluster
	url      string
	pool     *pgxpool.Pool
	topic    string
	parts    int32
	group    string
	cl       *kgo.Client
	adm      *kadm.Client
	prod     *producer
	mon      *monitor
	children []*child
}

func newEnv(t *testing.T, scenario string, k *kafkatest.Cluster, parts int32) *env {
	t.Helper()
	seed := rand.Uint64()
	e := &env{t: t, scenario: scenario, began: time.Now(), seed: seed, rng: rand.New(rand.NewPCG(seed, 1)), k: k, parts: parts}
	t.Logf("%s: seed %d", scenario, seed)
	e.url = pgtest.URL(t)
	pool, err := pgxpool.New(context.Background(), e.url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	e.pool = pool
	e.topic = k.Topic("orders", parts)
	e.group = kafkatest.Name(t, "group")
	e.cl, err = kgo.NewClient(kgo.SeedBrokers(k.Brokers...), kgo.ProducerLinger(0),
		kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.RequestRetries(20))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.cl.Close)
	e.adm = kadm.NewClient(e.cl)
	e.prod = &producer{e: e, g: gen.New(gen.Options{Seed: seed, Days: 3, UpdateRate: 0.3, DupRate: 0.1, StaleRate: 0.1, LateRate: 0.2,
		// A quarter of the keys are old orders, dated anywhere in the two
		// years before: their records, updates included, spread over
		// hundreds of dates, which share transactions.
		WideRate: 0.25}),
		rng: rand.New(rand.NewPCG(seed, 2)), badRate: 0.006}
	e.mon = e.startMonitor()
	return e
}

// kafka names the Kafka the scenario runs on, for the summary line.
func (e *env) kafka() string {
	if e.k.Fake != nil {
		return "kfake"
	}
	return "real"
}

// ---- the log ----

// producer writes the scenario's log and remembers where every record went.
type producer struct {
	e       *env
	g       *gen.Generator
	rng     *rand.Rand
	badRate float64

	mu  sync.Mutex
	log []torture.Record
	bad int
}

// malformed are the kinds of bad input slipped into the log, each made from
// a good event so that it lands among the versions of a real key.
var malformed = []func(v []byte) []byte{
	func([]byte) []byte { return []byte("{not json") },
	func([]byte) []byte { return []byte(`["an", "array"]`) },
	func([]byte) []byte { return nil }, // a tombstone
	func(v []byte) []byte { return edit(v, func(m map[string]any) { delete(m, "version") }) },
	func(v []byte) []byte { return edit(v, func(m map[string]any) { m["quantity"] = "lots" }) },
	func(v []byte) []byte { return edit(v, func(m map[string]any) { m["event_time"] = "yesterday" }) },
}

func edit(v []byte, f func(map[string]any)) []byte {
	var m map[string]any
	if err := json.Unmarshal(v, &m); err != nil {
		panic(err)
	}
	f(m)
	b, err := json.Marshal(m)
	if err != nil {
		panic(err)
	}
	return b
}

// records turns events into Kafka records: the key's partition is fixed by
// its order, and now and then a malformed record goes before the event.
func (p *producer) records(events []gen.Event) []*kgo.Record {
	var recs []*kgo.Record
	for _, ev := range events {
		part := int32(ev.Line.OrderID % int64(p.e.parts))
		key := gen.KafkaKey(ev.Key())
		if p.rng.Float64() < p.badRate {
			p.bad++
			bad := malformed[p.bad%len(malformed)](ev.Value)
			recs = append(recs, &kgo.Record{Topic: p.e.topic, Partition: part, Key: key, Value: bad})
		}
		recs = append(recs, &kgo.Record{Topic: p.e.topic, Partition: part, Key: key, Value: ev.Value})
		if p.rng.Float64() < p.badRate {
			// A delete (the pipeline applies them): mostly newer than the
			// event, now and then a late one that must change nothing.
			v := ev.Line.Version + 1
			if p.rng.IntN(4) == 0 {
				v = ev.Line.Version - 1
			}
			recs = append(recs, &kgo.Record{Topic: p.e.topic, Partition: part,
				Key: fmt.Appendf(nil, `{"order_id":%d,"line_no":%d,"version":%d}`, ev.Line.OrderID, ev.Line.LineNo, v)})
		}
	}
	return recs
}

// produce writes n events made by next and records their positions.
func (p *producer) produce(ctx context.Context, n int, next func(*gen.Generator) gen.Event) error {
	p.mu.Lock()
	events := make([]gen.Event, n)
	for i := range events {
		events[i] = next(p.g)
	}
	recs := p.records(events)
	p.mu.Unlock()
	res := p.e.cl.ProduceSync(ctx, recs...)
	if err := res.FirstErr(); err != nil {
		return fmt.Errorf("produce: %w", err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, r := range res {
		p.log = append(p.log, torture.Record{Partition: r.Record.Partition, Offset: r.Record.Offset, Key: r.Record.Key, Value: r.Record.Value})
	}
	return nil
}

func anyEvent(g *gen.Generator) gen.Event { return g.Next() }

// run produces total events in chunks, one chunk per tick, in the
// background; the returned function waits for the end and reports the
// first error.
func (p *producer) run(total, chunk int, every time.Duration) (wait func() error) {
	done := make(chan error, 1)
	ctx, cancel := context.WithCancel(context.Background())
	p.e.t.Cleanup(cancel)
	go func() {
		tick := time.NewTicker(every) // the producer's pace, a schedule
		defer tick.Stop()
		for sent := 0; sent < total; sent += chunk {
			if err := p.produce(ctx, min(chunk, total-sent), anyEvent); err != nil {
				done <- err
				return
			}
			select {
			case <-tick.C:
			case <-ctx.Done():
				done <- ctx.Err()
				return
			}
		}
		done <- nil
	}()
	var once sync.Once
	var err error
	return func() error {
		once.Do(func() { err = <-done })
		return err
	}
}

// Log returns the records produced so far.
func (p *producer) Log() []torture.Record {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.log)
}

// ---- Kafka and ledger state ----

// ends returns the topic's end offsets.
func (e *env) ends(ctx context.Context) (map[int32]int64, error) {
	listed, err := e.adm.ListEndOffsets(ctx, e.topic)
	if err != nil {
		return nil, err
	}
	out := map[int32]int64{}
	var ferr error
	listed.Each(func(o kadm.ListedOffset) {
		if o.Err != nil {
			ferr = o.Err
		}
		out[o.Partition] = o.Offset
	})
	return out, ferr
}

// committed returns the group's committed offsets on the topic.
func (e *env) committed(ctx context.Context) (map[int32]int64, error) {
	offs, err := e.adm.FetchOffsets(ctx, e.group)
	if err != nil {
		return nil, err
	}
	if err := offs.Error(); err != nil {
		return nil, err
	}
	out := map[int32]int64{}
	offs.Each(func(o kadm.OffsetResponse) {
		if o.Topic == e.topic && o.At >= 0 {
			out[o.Partition] = o.At
		}
	})
	return out, nil
}

// ledger returns the ledger's applied offset and generation per partition.
func (e *env) ledger(ctx context.Context) (applied map[int32]int64, gens map[int32]int32, members map[int32]string, err error) {
	rows, err := e.pool.Query(ctx, `SELECT partition, applied_offset, generation, member_id FROM idemsink.offsets WHERE group_id = $1 AND topic = $2`, e.group, e.topic)
	if err != nil {
		return nil, nil, nil, err
	}
	defer rows.Close()
	applied, gens, members = map[int32]int64{}, map[int32]int32{}, map[int32]string{}
	for rows.Next() {
		var p, g int32
		var a int64
		var m string
		if err := rows.Scan(&p, &a, &g, &m); err != nil {
			return nil, nil, nil, err
		}
		applied[p], gens[p], members[p] = a, g, m
	}
	return applied, gens, members, rows.Err()
}

func (e *env) mustLedger() map[int32]int64 {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, _, _, err := e.ledger(ctx)
	if err != nil {
		e.t.Fatalf("read ledger: %v", err)
	}
	return a
}

func (e *env) mustEnds() map[int32]int64 {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ends, err := e.ends(ctx)
	if err != nil {
		e.t.Fatalf("end offsets: %v", err)
	}
	return ends
}

// caughtUp reports whether the ledger has applied every partition of the
// topic to ends (sink.AppliedToEnd).
func (e *env) caughtUp(applied, ends map[int32]int64) bool {
	tps := func(m map[int32]int64) map[record.TP]int64 {
		out := make(map[record.TP]int64, len(m))
		for p, o := range m {
			out[record.TP{Topic: e.topic, Partition: p}] = o
		}
		return out
	}
	return sink.AppliedToEnd(tps(applied), tps(ends))
}

// waitApplied waits until the ledger reaches the end of every partition.
func (e *env) waitApplied(d time.Duration) {
	e.t.Helper()
	ends := e.mustEnds()
	var last map[int32]int64
	waittest.Describe(e.t, d, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		a, _, _, err := e.ledger(ctx)
		if err != nil {
			return false
		}
		last = a
		return e.caughtUp(a, ends)
	}, func() string { return fmt.Sprintf("the ledger to reach %v (last seen %v)", ends, last) })
}

// settle waits until the ledger and Kafka's committed offsets both reach
// the end of every partition, at most d, and gives up early when neither
// has moved for 20 s. It does not stop the test when they fail to: the
// verdict that follows says what was lost.
func (e *env) settle(d time.Duration) {
	e.t.Helper()
	ends := e.mustEnds()
	moved := time.Now()
	var applied, committed map[int32]int64
	done, stalled := false, false
	waittest.Until(d, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		a, _, _, aerr := e.ledger(ctx)
		c, cerr := e.committed(ctx)
		cancel()
		if aerr == nil && cerr == nil {
			if !maps.Equal(a, applied) || !maps.Equal(c, committed) {
				moved = time.Now()
			}
			applied, committed = a, c
			done = e.caughtUp(a, ends)
			for p, end := range ends {
				done = done && (end == 0 || c[p] == end)
			}
		}
		stalled = time.Since(moved) > 20*time.Second
		return done || stalled
	})
	if !done {
		e.t.Errorf("the group did not settle at the end of the log %v: ledger applied %v, Kafka committed %v", ends, applied, committed)
	}
}

// evictAll removes every member from the group at once, as session
// timeouts would after a crash, so that a restarted member need not wait
// 6 s for the dead one to expire. A live member is expelled too and must
// rejoin: one more fault for it.
func (e *env) evictAll(ctx context.Context) (int, error) {
	described, err := e.adm.DescribeGroups(ctx, e.group)
	if err != nil {
		return 0, err
	}
	g, ok := described[e.group]
	if !ok || len(g.Members) == 0 {
		return 0, nil
	}
	req := kmsg.NewPtrLeaveGroupRequest()
	req.Group = e.group
	for _, m := range g.Members {
		rm := kmsg.NewLeaveGroupRequestMember()
		rm.MemberID = m.MemberID
		req.Members = append(req.Members, rm)
	}
	resp, err := req.RequestWith(ctx, e.cl)
	if err != nil {
		return 0, err
	}
	if err := kerr.ErrorForCode(resp.ErrorCode); err != nil {
		return 0, err
	}
	return len(g.Members), nil
}

// ---- the monitor ----

// monitor samples Kafka's committed offsets and the ledger throughout a
// scenario and checks two invariants at every sample: a committed offset
// never passes the ledger's applied offset + 1, and the ledger's applied
// offset never moves backwards. Kafka is read first: a commit follows the
// PostgreSQL commit and the ledger only grows, so a correct daemon can
// never be caught between the two reads.
type monitor struct {
	e      *env
	stop   chan struct{}
	done   chan struct{}
	mu     sync.Mutex
	n      int
	high   map[int32]int64
	faults []string
	count  int
}

func (e *env) startMonitor() *monitor {
	m := &monitor{e: e, stop: make(chan struct{}), done: make(chan struct{}), high: map[int32]int64{}}
	go func() {
		defer close(m.done)
		tick := time.NewTicker(100 * time.Millisecond) // the sampling rate
		defer tick.Stop()
		for {
			m.sample()
			select {
			case <-m.stop:
				m.sample()
				return
			case <-tick.C:
			}
		}
	}()
	e.t.Cleanup(m.halt)
	return m
}

func (m *monitor) sample() {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	committed, err := m.e.committed(ctx)
	if err != nil {
		return // the group may not exist yet, or a fault hit the admin request
	}
	applied, _, _, err := m.e.ledger(ctx)
	if err != nil {
		return // PostgreSQL may be down
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.n++
	for p, c := range committed {
		a, ok := applied[p]
		if !ok {
			a = -1
		}
		if c > a+1 {
			m.violation("partition %d: Kafka committed %d but the ledger applied only up to %d", p, c, a)
		}
	}
	for p, a := range applied {
		h, ok := m.high[p]
		if ok && a < h {
			m.violation("partition %d: the ledger's applied offset went back from %d to %d", p, h, a)
		}
		if !ok || a > h {
			m.high[p] = a
		}
	}
}

func (m *monitor) violation(format string, args ...any) {
	m.count++
	if len(m.faults) < 10 {
		m.faults = append(m.faults, fmt.Sprintf(format, args...))
	}
}

func (m *monitor) halt() {
	select {
	case <-m.stop:
	default:
		close(m.stop)
	}
	<-m.done
}

// ---- the verdict ----

// verify stops the monitor and checks the scenario's outcome against the
// oracle; it prints the summary line and fails the test on any loss,
// duplicate, wrong row or invariant violation.
func (e *env) verify(extra string) torture.Report {
	e.t.Helper()
	e.mon.halt()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	t := e.t

	o := torture.NewDeleting(e.prod.Log())
	ends := e.mustEnds()
	if want := o.Ends(); !maps.Equal(ends, withZeros(want, e.parts)) {
		t.Errorf("Kafka's end offsets %v differ from the produced log's %v", ends, want)
	}
	applied := e.mustLedger()
	committed, err := e.committed(ctx)
	if err != nil {
		t.Fatalf("committed offsets: %v", err)
	}
	for p := range e.parts {
		a, ok := applied[p]
		if !ok {
			a = -1
		}
		if ends[p] > 0 && a != ends[p]-1 {
			t.Errorf("partition %d: ledger applied %d, want %d (the end of the log)", p, a, ends[p]-1)
		}
		if committed[p] > a+1 {
			e.mon.violation("partition %d: at the end Kafka committed %d but the ledger applied only up to %d", p, committed[p], a)
		}
	}

	rows, err := e.pool.Query(ctx, `SELECT order_id, line_no, sku, quantity, unit_price::text, currency, customer_id, status, store,
  event_time, version, _version FROM order_lines`)
	if err != nil {
		t.Fatalf("read order_lines: %v", err)
	}
	var obs torture.Observed
	for rows.Next() {
		var r torture.Row
		if err := rows.Scan(&r.OrderID, &r.LineNo, &r.SKU, &r.Quantity, &r.UnitPrice, &r.Currency, &r.CustomerID, &r.Status,
			&r.Store, &r.EventTime, &r.Version, &r.StoredVersion); err != nil {
			t.Fatalf("read order_lines: %v", err)
		}
		obs.Rows = append(obs.Rows, r)
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("read order_lines: %v", err)
	}
	obs.Dead = map[torture.Pos]string{}
	drows, err := e.pool.Query(ctx, `SELECT partition, kafka_offset, reason FROM idemsink.dead_letters WHERE topic = $1`, e.topic)
	if err != nil {
		t.Fatalf("read dead letters: %v", err)
	}
	for drows.Next() {
		var p torture.Pos
		var reason string
		if err := drows.Scan(&p.Partition, &p.Offset, &reason); err != nil {
			t.Fatalf("read dead letters: %v", err)
		}
		obs.Dead[p] = reason
	}
	if err := drows.Err(); err != nil {
		t.Fatalf("read dead letters: %v", err)
	}
	obs.Applied = applied

	rep := o.Check(obs)
	// How many target dates the log spread over, and how many
	// transactions wrote the batch log's entries (one xmin each; an entry
	// applied again counts under its latest transaction).
	var dates, txns int
	if err := e.pool.QueryRow(ctx, `SELECT count(DISTINCT target_date), count(DISTINCT xmin::text) FROM idemsink.batches`).Scan(&dates, &txns); err != nil {
		t.Fatalf("read batch log: %v", err)
	}
	line := strings.Join(strings.Fields(fmt.Sprintf("torture: %s kafka=%s %s %s dates=%d txns=%d violations=%d samples=%d took=%s", e.scenario, e.kafka(),
		extra, rep, dates, txns, e.mon.count, e.mon.n, time.Since(e.began).Round(time.Second))), " ")
	t.Log(line)
	fmt.Println(line)
	if !rep.OK() {
		t.Errorf("the tables disagree with the oracle: %s\n  %s", rep, strings.Join(rep.Problems, "\n  "))
	}
	if !rep.OK() || e.mon.count > 0 {
		e.forensics(ctx, rep)
	}
	if e.mon.count > 0 {
		t.Errorf("%d invariant violations:\n  %s", e.mon.count, strings.Join(e.mon.faults, "\n  "))
	}
	if e.mon.n == 0 {
		t.Errorf("the monitor never managed a sample")
	}
	return rep
}

// forensics writes what a failed scenario left behind to a file that
// outlives the test: the problems, the ledger's batches and offsets, and
// the log of every child process.
func (e *env) forensics(ctx context.Context, rep torture.Report) {
	f, err := os.CreateTemp("", "torture-"+e.scenario+"-*.txt")
	if err != nil {
		e.t.Logf("forensics: %v", err)
		return
	}
	defer f.Close()
	fmt.Fprintf(f, "scenario %s seed %d topic %s group %s\n%s\n%s\n\n", e.scenario, e.seed, e.topic, e.group, rep, strings.Join(rep.Problems, "\n"))
	fmt.Fprintf(f, "monitor:\n%s\n\n", strings.Join(e.mon.faults, "\n"))
	dump := func(title, query string, args ...any) {
		fmt.Fprintf(f, "== %s\n", title)
		rows, err := e.pool.Query(ctx, query, args...)
		if err != nil {
			fmt.Fprintf(f, "%v\n", err)
			return
		}
		defer rows.Close()
		for rows.Next() {
			vals, err := rows.Values()
			if err != nil {
				fmt.Fprintf(f, "%v\n", err)
				return
			}
			fmt.Fprintln(f, vals...)
		}
	}
	dump("offsets", `SELECT partition, applied_offset, generation, member_id, updated_at FROM idemsink.offsets WHERE group_id = $1 ORDER BY 1`, e.group)
	dump("batches", `SELECT first_applied_at, last_applied_at, applications, generation, member_id, target_date, ranges::text, records, superseded,
  skipped, staged, inserted, updated, unchanged, stale, dead_lettered FROM idemsink.batches ORDER BY first_applied_at`)
	dump("dead letters", `SELECT partition, kafka_offset, reason FROM idemsink.dead_letters ORDER BY 1, 2`)
	fmt.Fprintf(f, "== log\n")
	for _, r := range e.prod.Log() {
		fmt.Fprintf(f, "%d@%d %s\n", r.Partition, r.Offset, r.Value)
	}
	for _, c := range e.children {
		cause := c.cause()
		c.out.mu.Lock()
		fmt.Fprintf(f, "== child %s started %s ended %s\n%s\n", c.name, c.started.Format(time.RFC3339Nano), cause, strings.Join(c.out.lines, "\n"))
		c.out.mu.Unlock()
	}
	e.t.Logf("forensics in %s", f.Name())
}

func withZeros(m map[int32]int64, parts int32) map[int32]int64 {
	out := maps.Clone(m)
	for p := range parts {
		if _, ok := out[p]; !ok {
			out[p] = 0
		}
	}
	return out
}

// ---- the daemon as a child process ----

// binary builds cmd/consumer once for the whole run, lazily.
type binary struct {
	once sync.Once
	dir  string
	path string
	err  error
}

func (b *binary) get(t *testing.T) string {
	t.Helper()
	b.once.Do(func() {
		root, err := moduleRoot()
		if err != nil {
			b.err = err
			return
		}
		goTool, err := exec.LookPath("go")
		if err != nil {
			b.err = fmt.Errorf("the torture tests build cmd/consumer and need the go tool on PATH: %w", err)
			return
		}
		b.path = filepath.Join(b.dir, "consumer")
		cmd := exec.Command(goTool, "build", "-tags", "faultinject", "-o", b.path, "./cmd/consumer")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			b.err = fmt.Errorf("go build -tags faultinject ./cmd/consumer: %w\n%s", err, out)
		}
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.path
}

func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the test's directory")
		}
		dir = parent
	}
}

// knobs are the daemon settings a scenario turns.
type knobs struct {
	metrics     bool
	maxRecords  int
	linger      time.Duration
	maxBuffered int
	session     time.Duration
	rebalance   time.Duration
	shutdown    time.Duration
	backoff     time.Duration
	backoffMax  time.Duration
}

var defaultKnobs = knobs{maxRecords: 50, linger: 20 * time.Millisecond, maxBuffered: 500, session: 6 * time.Second,
	rebalance: 10 * time.Second, shutdown: 10 * time.Second, backoff: 50 * time.Millisecond, backoffMax: 500 * time.Millisecond}

// childConfig writes a YAML configuration for a child daemon and returns
// its path and metrics address ("" without metrics).
func (e *env) childConfig(k knobs) (path, metricsAddr string) {
	e.t.Helper()
	p := gen.Pipeline("orders", e.topic, "order_lines")
	var cols []map[string]any
	for _, c := range p.Columns {
		cols = append(cols, map[string]any{"name": c.Name, "type": c.Type})
	}
	doc := map[string]any{
		"brokers":              e.k.Brokers,
		"group":                e.group,
		"database_url":         e.url,
		"max_buffered_records": k.maxBuffered,
		"session_timeout":      k.session.String(),
		"rebalance_timeout":    k.rebalance.String(),
		"shutdown_timeout":     k.shutdown.String(),
		"retry_backoff":        k.backoff.String(),
		"retry_backoff_max":    k.backoffMax.String(),
		"pipelines": []any{map[string]any{
			"name": p.Name, "topics": p.Topics, "table": p.Table, "key": p.Key, "columns": cols,
			"date":    map[string]any{"field": p.Date.Field, "time_zone": p.Date.TimeZone},
			"version": map[string]any{"field": p.Version.Field, "type": p.Version.Type},
			"batch":   map[string]any{"max_records": k.maxRecords, "linger": k.linger.String()},
			"deletes": "apply",
		}},
	}
	if k.metrics {
		metricsAddr = freeAddr(e.t)
		doc["metrics_addr"] = metricsAddr
	}
	b, err := yaml.Marshal(doc)
	if err != nil {
		e.t.Fatal(err)
	}
	if _, err := config.Parse(b, nil); err != nil {
		e.t.Fatalf("the child's configuration does not load: %v\n%s", err, b)
	}
	path = filepath.Join(e.t.TempDir(), "idemsink.yaml")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		e.t.Fatal(err)
	}
	return path, metricsAddr
}

func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// child is one life of the daemon as a process.
type child struct {
	name    string
	cmd     *exec.Cmd
	out     *output
	metrics string
	done    chan struct{}
	state   *os.ProcessState
	sent    string // the signal the test sent, if any
	started time.Time
}

// startChild runs "consumer run" with the given configuration and fault
// specification (IDEMSINK_FAULT; "" disables fault points).
func (e *env) startChild(bin, name, cfgPath, metricsAddr, faults string) *child {
	e.t.Helper()
	c := &child{name: name, out: newOutput(), metrics: metricsAddr, done: make(chan struct{}), started: time.Now()}
	e.children = append(e.children, c)
	c.cmd = exec.Command(bin, "run", "-config", cfgPath)
	c.cmd.Env = append(os.Environ(), "IDEMSINK_FAULT="+faults, "IDEMSINK_DATABASE_URL=", "IDEMSINK_BROKERS=")
	c.cmd.Stdout, c.cmd.Stderr = c.out, c.out
	if err := c.cmd.Start(); err != nil {
		e.t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		_ = c.cmd.Wait()
		c.state = c.cmd.ProcessState
		close(c.done)
	}()
	e.t.Cleanup(func() {
		if !c.exited() {
			_ = c.cmd.Process.Signal(syscall.SIGCONT)
			_ = c.cmd.Process.Kill()
			<-c.done
		}
	})
	return c
}

// waitEvent waits until the child has logged event at least n times.
func (c *child) waitEvent(t *testing.T, d time.Duration, msg string, n int) {
	t.Helper()
	waittest.For(t, d, fmt.Sprintf("%s to log %q", c.name, msg), func() bool {
		if c.exited() {
			t.Fatalf("%s exited (%s):\n%s", c.name, c.state, c.out.tail(40))
		}
		return c.out.count(msg) >= n
	})
}

func (c *child) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

func (c *child) signal(sig syscall.Signal) {
	if c.exited() {
		return
	}
	switch sig {
	case syscall.SIGKILL:
		c.sent = "SIGKILL"
	case syscall.SIGTERM:
		c.sent = "SIGTERM"
	}
	_ = c.cmd.Process.Signal(sig)
}

// wait waits for the child to exit, killing it after d.
func (c *child) wait(d time.Duration) bool {
	select {
	case <-c.done:
		return true
	case <-time.After(d):
		_ = c.cmd.Process.Kill()
		<-c.done
		return false
	}
}

// cause says how a finished child ended: a fault point, a signal the test
// sent, or an exit status.
func (c *child) cause() string {
	if p := c.out.lastFault(); p != "" {
		return p
	}
	if c.sent != "" {
		return c.sent
	}
	if c.state == nil {
		return "running"
	}
	return c.state.String()
}

// get fetches a path of the child's metrics server.
func (c *child) get(path string) (int, string, error) {
	cl := http.Client{Timeout: time.Second}
	resp, err := cl.Get("http://" + c.metrics + path)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// gauge reads one unlabelled metric from the child's /metrics.
func (c *child) gauge(name string) (float64, error) {
	code, body, err := c.get("/metrics")
	if err != nil {
		return 0, err
	}
	if code != http.StatusOK {
		return 0, fmt.Errorf("/metrics: %d", code)
	}
	for line := range strings.Lines(body) {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	return 0, fmt.Errorf("%s not in /metrics", name)
}

// output collects a child's log lines and counts the ones that matter.
type output struct {
	mu      sync.Mutex
	partial []byte
	lines   []string
	faults  []string
	counts  map[string]int
}

// watched are the events of the daemon the scenarios count: the values of
// the "event" attribute of its log records (consume.Event*), so that a
// reworded log message cannot break a scenario.
var watched = []string{consume.EventFenced, consume.EventLost, consume.EventRevoked, consume.EventAssigned, consume.EventRetry,
	consume.EventStuck, consume.EventCommitFailed, consume.EventDeadLetter, consume.EventResumed, consume.EventClaimRetry, consume.EventAbandoned}

// eventOf returns the event attribute of a text or JSON log line, or "".
func eventOf(line string) string {
	for _, prefix := range []string{" event=", `"event":"`} {
		if _, rest, ok := strings.Cut(line, prefix); ok {
			if i := strings.IndexAny(rest, " \"\n"); i >= 0 {
				rest = rest[:i]
			}
			return rest
		}
	}
	return ""
}

func newOutput() *output { return &output{counts: map[string]int{}} }

func (o *output) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.partial = append(o.partial, p...)
	for {
		i := bytes.IndexByte(o.partial, '\n')
		if i < 0 {
			break
		}
		line := string(o.partial[:i])
		o.partial = o.partial[i+1:]
		if len(o.lines) < 5000 {
			o.lines = append(o.lines, line)
		}
		if point, ok := strings.CutPrefix(line, "fault: crashing at "); ok {
			o.faults = append(o.faults, strings.TrimSpace(point))
		}
		if ev := eventOf(line); ev != "" {
			o.counts[ev]++
		}
	}
	return len(p), nil
}

func (o *output) lastFault() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.faults) == 0 {
		return ""
	}
	return o.faults[len(o.faults)-1]
}

func (o *output) count(msg string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.counts[msg]
}

// tail returns the last n lines.
func (o *output) tail(n int) string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return strings.Join(o.lines[max(0, len(o.lines)-n):], "\n")
}

// ---- the daemon's core in-process ----

// member is a consumer running in the test process.
type member struct {
	c      *consume.Consumer
	m      *metrics.Metrics
	cancel context.CancelFunc
	done   chan error
	logs   *counter
	err    error
	ended  bool
}

// config returns an in-process configuration with the scenario's knobs.
func (e *env) config(k knobs) *config.Config {
	e.t.Helper()
	p := gen.Pipeline("orders", e.topic, "order_lines")
	p.Batch.MaxRecords, p.Batch.Linger, p.Deletes = k.maxRecords, k.linger, "apply"
	cfg := &config.Config{
		Brokers: e.k.Brokers, Group: e.group, DatabaseURL: e.url, Pipelines: []config.Pipeline{p},
		MaxBufferedRecords: k.maxBuffered, SessionTimeout: k.session, RebalanceTimeout: k.rebalance,
		ShutdownTimeout: k.shutdown, RetryBackoff: k.backoff, RetryBackoffMax: k.backoffMax,
	}
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		e.t.Fatal(err)
	}
	return cfg
}

// ensureTables creates the target table, as the daemon does on start.
func (e *env) ensureTables(cfg *config.Config) {
	e.t.Helper()
	if err := sink.New(e.pool, cfg, sink.Options{}).EnsureTables(context.Background(), cfg); err != nil {
		e.t.Fatalf("ensure tables: %v", err)
	}
}

func (e *env) startMember(cfg *config.Config, logs *counter) *member {
	mb := &member{m: metrics.New(nil), done: make(chan error, 1), logs: logs}
	log := slog.New(logs)
	sk := sink.New(e.pool, cfg, sink.Options{Logger: log, Metrics: mb.m})
	mb.c = consume.New(consume.Options{Config: cfg, Sink: sk, Logger: log, Metrics: mb.m})
	ctx, cancel := context.WithCancel(context.Background())
	mb.cancel = cancel
	go func() { mb.done <- mb.c.Run(ctx) }()
	e.t.Cleanup(func() { _ = mb.stop(time.Minute) })
	return mb
}

// stop cancels the member and waits for its shutdown, at most d.
func (mb *member) stop(d time.Duration) error {
	if mb.ended {
		return mb.err
	}
	mb.cancel()
	select {
	case mb.err = <-mb.done:
		mb.ended = true
		return mb.err
	case <-time.After(d):
		return fmt.Errorf("the consumer did not stop within %s", d)
	}
}

// counter is a slog handler that counts the daemon's events and
// keeps its warnings, for the failure report.
type counter struct {
	mu     sync.Mutex
	counts map[string]int
	warns  []string
}

func newCounter() *counter { return &counter{counts: map[string]int{}} }

func (c *counter) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelInfo }
func (c *counter) WithAttrs([]slog.Attr) slog.Handler           { return c }
func (c *counter) WithGroup(string) slog.Handler                { return c }

func (c *counter) Handle(_ context.Context, r slog.Record) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "event" {
			c.counts[a.Value.String()]++
		}
		return true
	})
	if r.Level >= slog.LevelWarn && len(c.warns) < 200 {
		var b strings.Builder
		b.WriteString(r.Message)
		r.Attrs(func(a slog.Attr) bool { fmt.Fprintf(&b, " %s=%v", a.Key, a.Value); return true })
		c.warns = append(c.warns, b.String())
	}
	return nil
}

func (c *counter) count(msg string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.counts[msg]
}

// fmtCounts formats a count map as k:v pairs in key order.
func fmtCounts[V int | int64](m map[string]V, order []string) string {
	var parts []string
	for _, k := range order {
		parts = append(parts, fmt.Sprintf("%s:%d", k, m[k]))
	}
	for _, k := range slices.Sorted(maps.Keys(m)) {
		if !slices.Contains(order, k) {
			parts = append(parts, fmt.Sprintf("%s:%d", k, m[k]))
		}
	}
	return strings.Join(parts, ",")
}
