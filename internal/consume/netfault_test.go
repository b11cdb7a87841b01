package consume_test

import (
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/idemsink/idemsink/internal/consume"
	"github.com/idemsink/idemsink/internal/gen"
	"github.com/idemsink/idemsink/internal/kafkatest"
	"github.com/idemsink/idemsink/internal/waittest"
)

// A member cut off from Kafka (black-holed: its requests go unanswered,
// nothing is refused) for longer than its session timeout, while another
// member takes its partitions over: the batch it flushes while cut off is
// fenced, nothing is lost, nothing is applied twice, and once the link
// heals both members share the work again. On kfake and, in make
// test-kafka, on the real broker.
func TestKafkaBlackHole(t *testing.T) {
	t.Parallel()
	k := kafkatest.New(t)
	const parts = 4
	topic := k.Topic("orders", parts)
	p := gen.Pipeline("orders", topic, "order_lines")
	e := newEnv(t, k, p)

	// The member that will be cut: it holds its batches open for 15 s, and
	// waits 30 s before it gives up on a request, so that it still believes
	// it owns its partitions when the batch flushes, well after the other
	// member took over (the session timeout is 6 s).
	cutCfg := e.config(e.cfg.Group, p)
	cutCfg.Pipelines[0].Batch.Linger = 15 * time.Second
	link := kafkatest.NewProxy(t)
	g := gen.New(gen.Options{Seed: 11})
	var first []gen.Event
	for range 200 {
		first = append(first, g.NextNew())
	}
	k.Produce(orderRecords(topic, parts, first)...)
	a := e.start(cutCfg, consume.Options{ExtraOpts: []kgo.Opt{kgo.Dialer(link.Dial), kgo.RequestTimeoutOverhead(30 * time.Second)}})
	waittest.For(t, 30*time.Second, "the member behind the proxy to buffer every record",
		func() bool { return testutil.ToFloat64(a.m.Buffered) == 200 })

	link.Cut()
	cutAt := time.Now()
	b := e.start(e.cfg, consume.Options{})
	waittest.For(t, 60*time.Second, "the other member to take every partition over", func() bool { return len(b.c.Applied()) == parts })
	fenced := a.m.Batches.WithLabelValues(p.Name, "fenced")
	waittest.For(t, 60*time.Second, "the cut-off member's late batch to be fenced", func() bool { return testutil.ToFloat64(fenced) >= 1 })
	if n := testutil.ToFloat64(a.m.Batches.WithLabelValues(p.Name, "applied")); n != 0 {
		t.Errorf("the cut-off member applied %v batches while it had lost its partitions", n)
	}

	link.Heal()
	cutFor := time.Since(cutAt)
	var second []gen.Event
	for range 200 {
		second = append(second, g.NextNew())
	}
	k.Produce(orderRecords(topic, parts, second)...)
	e.waitApplied(e.cfg.Group, topic)
	if err := errors.Join(a.stop(), b.stop()); err != nil {
		t.Fatal(err)
	}
	if n := e.count("SELECT count(*) FROM order_lines"); n != 400 {
		t.Errorf("%d rows, want 400: a record was lost", n)
	}
	if n := e.count("SELECT coalesce(sum(records), 0) FROM idemsink.batches"); n != 400 {
		t.Errorf("the batch log holds %d records, want 400: a record was applied twice or never", n)
	}
	if n := e.count("SELECT count(*) FROM idemsink.batches WHERE applications > 1"); n != 0 {
		t.Errorf("%d batches applied more than once", n)
	}
	rows, logged := e.count("SELECT count(*) FROM order_lines"), e.count("SELECT coalesce(sum(records), 0) FROM idemsink.batches")
	t.Logf("netfault: black-hole kafka=%s cut=%.1fs session_timeout=%s late_batches_fenced=%v produced=400 rows=%d logged=%d lost=%d duplicated=%d",
		kafkaKind(), cutFor.Seconds(), e.cfg.SessionTimeout, testutil.ToFloat64(fenced), rows, logged, 400-rows, logged-400)
}

func kafkaKind() string {
	if kafkatest.Real() {
		return "real"
	}
	return "kfake"
}

// A slow link to Kafka (latency on every chunk, each way) only slows the
// member down: every record applied once, no batch fenced.
func TestKafkaSlowLink(t *testing.T) {
	t.Parallel()
	k := kafkatest.New(t)
	const parts = 3
	topic := k.Topic("orders", parts)
	p := gen.Pipeline("orders", topic, "order_lines")
	e := newEnv(t, k, p)
	link := kafkatest.NewProxy(t)
	link.Latency(40 * time.Millisecond)
	g := gen.New(gen.Options{Seed: 12})
	var events []gen.Event
	for range 300 {
		events = append(events, g.NextNew())
	}
	k.Produce(orderRecords(topic, parts, events)...)
	start := time.Now()
	m := e.start(e.cfg, consume.Options{ExtraOpts: []kgo.Opt{kgo.Dialer(link.Dial)}})
	e.waitApplied(e.cfg.Group, topic)
	took := time.Since(start)
	if err := m.stop(); err != nil {
		t.Fatal(err)
	}
	if n := e.count("SELECT count(*) FROM order_lines"); n != 300 {
		t.Errorf("%d rows, want 300", n)
	}
	if n := testutil.ToFloat64(m.m.Batches.WithLabelValues(p.Name, "fenced")); n != 0 {
		t.Errorf("%v batches fenced on a slow link", n)
	}
	if n := e.count("SELECT coalesce(sum(records), 0) FROM idemsink.batches"); n != 300 {
		t.Errorf("the batch log holds %d records, want 300", n)
	}
	t.Logf("netfault: slow-link kafka=%s latency=40ms/chunk each way produced=300 rows=%d fenced=%v applied_in=%.1fs",
		kafkaKind(), e.count("SELECT count(*) FROM order_lines"), testutil.ToFloat64(m.m.Batches.WithLabelValues(p.Name, "fenced")), took.Seconds())
}
