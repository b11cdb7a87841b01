package consume_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/idemsink/idemsink/internal/consume"
	"github.com/idemsink/idemsink/internal/kafkatest"
	"github.com/idemsink/idemsink/internal/waittest"
)

// events is a slog handler that keeps the consumer's events with their
// attributes, for tests that check what an operator would see.
type events struct {
	mu    *sync.Mutex
	got   *[]map[string]string
	attrs []slog.Attr // from WithAttrs
}

func newEvents() *events { return &events{mu: &sync.Mutex{}, got: &[]map[string]string{}} }

func (h *events) Enabled(context.Context, slog.Level) bool { return true }
func (h *events) WithGroup(string) slog.Handler            { return h }

func (h *events) WithAttrs(as []slog.Attr) slog.Handler {
	return &events{mu: h.mu, got: h.got, attrs: append(slices.Clone(h.attrs), as...)}
}

func (h *events) Handle(_ context.Context, r slog.Record) error {
	attrs := map[string]string{"level": r.Level.String()}
	for _, a := range h.attrs {
		attrs[a.Key] = a.Value.String()
	}
	r.Attrs(func(a slog.Attr) bool { attrs[a.Key] = a.Value.String(); return true })
	if attrs["event"] == "" {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	*h.got = append(*h.got, attrs)
	return nil
}

// find returns the first event named ev, or nil.
func (h *events) find(ev string) map[string]string {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, a := range *h.got {
		if a["event"] == ev {
			return a
		}
	}
	return nil
}

// proxy forwards TCP connections to a PostgreSQL server until cut: then it
// drops every connection and refuses new ones, as an outage of the
// network or the server would, for the one member that goes through it.
type proxy struct {
	ln     net.Listener
	target string
	up     atomic.Bool
	mu     sync.Mutex
	conns  []net.Conn
}

func newProxy(t *testing.T, target string) *proxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, target: target}
	p.up.Store(true)
	t.Cleanup(func() { ln.Close(); p.cut() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if !p.up.Load() {
				c.Close()
				continue
			}
			s, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, s)
			p.mu.Unlock()
			go func() { _, _ = io.Copy(s, c); s.Close() }()
			go func() { _, _ = io.Copy(c, s); c.Close() }()
		}
	}()
	return p
}

func (p *proxy) cut() {
	p.up.Store(false)
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

func (p *proxy) restore() { p.up.Store(true) }

// poolVia returns a pool on the test database through addr.
func (e *env) poolVia(addr string) *pgxpool.Pool {
	e.t.Helper()
	cfg := e.pool.Config().Copy()
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		e.t.Fatal(err)
	}
	cfg.ConnConfig.Host = host
	fmt.Sscan(port, &cfg.ConnConfig.Port)
	cfg.MaxConns = 6
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(pool.Close)
	return pool
}

func (e *env) serverAddr() string {
	c := e.pool.Config().ConnConfig
	return net.JoinHostPort(c.Host, fmt.Sprint(c.Port))
}

// A permission error is not an outage and not bad input: the batch is
// retried, shows as stuck (the pending-batch age grows, an error-level
// event carries the SQLSTATE, the consumer is not ready), nothing is
// dead-lettered, and it applies once the grant is back.
func TestPermissionErrorIsStuck(t *testing.T) {
	t.Parallel()
	k := kafkatest.New(t)
	topic := k.Topic("t", 1)
	e := newEnv(t, k, simplePipeline("p", topic, "items", false))
	ctx := context.Background()
	log := newEvents()
	// A cap of one record: the stuck batch holds the whole backlog, so the
	// loop stops polling, and the gauges must still move.
	cfg := *e.cfg
	cfg.MaxBufferedRecords = 1
	mb := e.start(&cfg, consume.Options{Logger: slog.New(log)})
	k.Produce(kafkaRecord(topic, 0, rec{ID: 1, Status: "placed", Qty: 1, TS: "2026-03-01T10:00:00Z"}))
	e.waitApplied(e.cfg.Group, topic)
	waittest.For(t, 10*time.Second, "readiness", mb.c.Ready)

	// The test's role owns the table and is no superuser: it can revoke
	// its own privilege, and grant it back.
	if _, err := e.pool.Exec(ctx, "REVOKE INSERT ON items FROM CURRENT_USER"); err != nil {
		t.Fatal(err)
	}
	k.Produce(kafkaRecord(topic, 0, rec{ID: 2, Status: "placed", Qty: 2, TS: "2026-03-01T11:00:00Z"}))
	age := mb.m.PendingBatchAge.WithLabelValues("p")
	waittest.For(t, 30*time.Second, "the batch to show as stuck", func() bool {
		return testutil.ToFloat64(age) >= 2 && log.find(consume.EventStuck) != nil
	})
	ev := log.find(consume.EventStuck)
	if ev["sqlstate"] != "42501" || ev["level"] != "ERROR" || ev["class"] != "stuck" {
		t.Errorf("stuck event %v: want level ERROR, class stuck, SQLSTATE 42501", ev)
	}
	if mb.c.Ready() {
		t.Error("ready while a batch is stuck")
	}
	if n := e.count("SELECT applied_offset FROM idemsink.offsets"); n != 0 {
		t.Errorf("ledger applied offset %d while the batch is stuck, want 0", n)
	}
	if c := k.Committed(e.cfg.Group, topic); c[0] > 1 {
		t.Errorf("Kafka committed %d while the batch is stuck, want at most 1", c[0])
	}

	if _, err := e.pool.Exec(ctx, "GRANT INSERT ON items TO CURRENT_USER"); err != nil {
		t.Fatal(err)
	}
	e.waitApplied(e.cfg.Group, topic)
	waittest.For(t, 10*time.Second, "readiness after the grant", mb.c.Ready)
	if n := e.count("SELECT count(*) FROM items"); n != 2 {
		t.Errorf("%d rows, want 2", n)
	}
	if n := e.count("SELECT count(*) FROM idemsink.dead_letters"); n != 0 {
		t.Errorf("%d dead letters: a permission error is not bad input", n)
	}
	waittest.For(t, 10*time.Second, "the pending-batch age back to 0", func() bool { return testutil.ToFloat64(age) == 0 })
}

// A database outage during a rebalance holds neither the group nor the
// other member hostage: the member in the outage abandons its revoked
// batches at once, the newcomer gets its partitions within seconds (the
// rebalance timeout is a minute) and applies them, and once the database
// is back everything is applied, nothing lost or dead-lettered.
func TestOutageDuringRebalance(t *testing.T) {
	t.Parallel()
	k := kafkatest.New(t)
	topic := k.Topic("t", 4)
	e := newEnv(t, k, simplePipeline("p", topic, "items", false))
	cfg := *e.cfg
	cfg.RebalanceTimeout = time.Minute
	px := newProxy(t, e.serverAddr())
	log := newEvents()
	a := e.startWith(&cfg, consume.Options{Logger: slog.New(log)}, e.poolVia(px.ln.Addr().String()))
	produce := func(from, n int) { produceSpread(k, topic, 4, from, n) }
	produce(0, 40)
	e.waitApplied(e.cfg.Group, topic)

	px.cut()
	produce(40, 40)
	waittest.For(t, 30*time.Second, "the member in the outage to retry", func() bool {
		return testutil.ToFloat64(a.m.DBRetries) > 0 && !a.c.Ready()
	})
	b := e.start(&cfg, consume.Options{})
	waittest.For(t, 20*time.Second, "the newcomer to own partitions", func() bool { return len(b.c.Applied()) > 0 })
	owned := b.c.Applied()
	waittest.For(t, 30*time.Second, "the newcomer to apply its partitions", func() bool {
		ends := k.Ends(topic)
		for tp, a := range b.c.Applied() {
			if a != ends[tp.Partition]-1 {
				return false
			}
		}
		return true
	})
	if len(a.c.Applied()) == 0 || len(owned) == 4 {
		t.Logf("assignment after the rebalance: a %v, b %v", a.c.Applied(), owned)
	}
	if ev := log.find(consume.EventAbandoned); ev == nil {
		t.Error("the member in the outage did not abandon its revoked batches")
	} else if ev["level"] != slog.LevelWarn.String() {
		t.Errorf("abandoned batches logged at %s, want WARN", ev["level"])
	}
	if log.find(consume.EventRevoked) == nil {
		t.Error("no revocation logged by the member in the outage")
	}

	px.restore()
	e.waitApplied(e.cfg.Group, topic)
	if n := e.count("SELECT count(*) FROM items"); n != 80 {
		t.Errorf("%d rows, want 80", n)
	}
	if n := e.count("SELECT count(*) FROM idemsink.dead_letters"); n != 0 {
		t.Errorf("%d dead letters: an outage is not bad input", n)
	}
	waittest.For(t, 10*time.Second, "readiness after the outage", a.c.Ready)
	committed := k.Committed(e.cfg.Group, topic)
	for p, end := range k.Ends(topic) {
		if committed[p] > end {
			t.Errorf("partition %d: Kafka committed %d past the end %d", p, committed[p], end)
		}
	}
}

// Lag per partition comes from the fetches' high watermark minus the
// ledger's applied offset: it grows while records cannot be applied and
// falls back to 0 once they are. (A partition paused after a failed batch
// is not fetched: its lag then stays at what the last fetch reported.)
func TestLagGauge(t *testing.T) {
	t.Parallel()
	k := kafkatest.New(t)
	topic := k.Topic("t", 2)
	e := newEnv(t, k, simplePipeline("p", topic, "items", false))
	px := newProxy(t, e.serverAddr())
	mb := e.startWith(e.cfg, consume.Options{}, e.poolVia(px.ln.Addr().String()))
	produce := func(from, n int) { produceSpread(k, topic, 2, from, n) }
	produce(0, 2)
	e.waitApplied(e.cfg.Group, topic)
	px.cut()
	produce(2, 10)
	waittest.For(t, 30*time.Second, "a lag of 5 on both partitions", func() bool {
		return testutil.CollectAndCount(mb.m.Lag) == 2 &&
			testutil.ToFloat64(mb.m.Lag.WithLabelValues(topic, "0")) == 5 && testutil.ToFloat64(mb.m.Lag.WithLabelValues(topic, "1")) == 5
	})
	px.restore()
	e.waitApplied(e.cfg.Group, topic)
	waittest.For(t, 30*time.Second, "the lag back to 0", func() bool {
		return testutil.ToFloat64(mb.m.Lag.WithLabelValues(topic, "0")) == 0 && testutil.ToFloat64(mb.m.Lag.WithLabelValues(topic, "1")) == 0
	})
}

// produceSpread produces records with ids from..from+n-1, round robin over
// the topic's partitions, in one call: a fetch that follows it reports
// every partition's new end.
func produceSpread(k *kafkatest.Cluster, topic string, partitions, from, n int) {
	var recs []*kgo.Record
	for i := from; i < from+n; i++ {
		recs = append(recs, kafkaRecord(topic, int32(i%partitions), rec{ID: int64(i), Status: "s", Qty: i, TS: "2026-03-01T10:00:00Z"}))
	}
	k.Produce(recs...)
}

// A serialization failure is retried at once, not after a backoff, and is
// no sign of an outage: with a one-minute backoff the batch still applies
// within seconds.
func TestConflictRetriedAtOnce(t *testing.T) {
	t.Parallel()
	k := kafkatest.New(t)
	topic := k.Topic("t", 1)
	e := newEnv(t, k, simplePipeline("p", topic, "items", false))
	ctx := context.Background()
	// nextval is not rolled back with the failed transaction: only the
	// first insert fails.
	if _, err := e.pool.Exec(ctx, `CREATE SEQUENCE once;
CREATE FUNCTION conflict_once() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN IF nextval('once') = 1 THEN RAISE EXCEPTION 'simulated' USING ERRCODE = '40001'; END IF; RETURN NEW; END $$;
CREATE TRIGGER conflict_once BEFORE INSERT ON items FOR EACH ROW EXECUTE FUNCTION conflict_once()`); err != nil {
		t.Fatal(err)
	}
	cfg := *e.cfg
	cfg.RetryBackoff, cfg.RetryBackoffMax = time.Minute, time.Minute
	log := newEvents()
	mb := e.start(&cfg, consume.Options{Logger: slog.New(log)})
	produceSpread(k, topic, 1, 0, 3)
	e.waitApplied(e.cfg.Group, topic)
	ev := log.find(consume.EventRetry)
	if ev == nil || ev["class"] != "conflict" {
		t.Fatalf("retry event %v: want one of class conflict", ev)
	}
	if got := testutil.ToFloat64(mb.m.DBRetries); got != 1 {
		t.Errorf("%v retries, want 1", got)
	}
	if n := e.count("SELECT count(*) FROM items"); n != 3 {
		t.Errorf("%d rows, want 3", n)
	}
	waittest.For(t, 10*time.Second, "readiness", mb.c.Ready)
}

// Open batches alone can fill the backlog (records over many target
// dates, none of them full): at the cap, fetching waits and idle lanes
// flush their oldest batch, so consumption goes on and the backlog never
// passes the cap.
func TestOpenBatchesAtTheCap(t *testing.T) {
	t.Parallel()
	k := kafkatest.New(t)
	topic := k.Topic("t", 2)
	p := simplePipeline("p", topic, "items", false)
	p.Batch.MaxRecords, p.Batch.Linger = 1000, 300*time.Millisecond
	e := newEnv(t, k, p)
	cfg := *e.cfg
	cfg.MaxBufferedRecords = 20
	mb := e.start(&cfg, consume.Options{})
	var recs []*kgo.Record
	for i := range 200 {
		ts := fmt.Sprintf("2026-03-%02dT10:00:00Z", 1+i%25)
		recs = append(recs, kafkaRecord(topic, int32(i%2), rec{ID: int64(i), Status: "s", Qty: i, TS: ts}))
	}
	k.Produce(recs...)
	peak := 0.0
	waittest.For(t, 60*time.Second, "all 200 records applied", func() bool {
		peak = max(peak, testutil.ToFloat64(mb.m.Buffered))
		return e.count("SELECT count(*) FROM items") == 200
	})
	if peak > 20 {
		t.Errorf("the backlog reached %v records, above the cap of 20", peak)
	}
	if peak == 0 {
		t.Error("the backlog gauge never moved")
	}
}
