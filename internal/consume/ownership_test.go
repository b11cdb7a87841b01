package consume_test

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/idemsink/idemsink/internal/consume"
	"github.com/idemsink/idemsink/internal/gen"
	"github.com/idemsink/idemsink/internal/kafkatest"
	"github.com/idemsink/idemsink/internal/record"
	"github.com/idemsink/idemsink/internal/sink"
	"github.com/idemsink/idemsink/internal/waittest"
)

// A batch fenced because a newer generation claimed its partition in the
// ledger is dropped, and the partition is read again from the ledger (step
// 8): counted as a fence, logged as a resync, never as a Schema Registry
// hold-back, and nothing of it written. Once the group's generation moves
// past the other writer's, the records dropped at the fence are applied:
// none is skipped.
func TestFencedPartitionReadAgainFromLedger(t *testing.T) {
	t.Parallel()
	k := kafkatest.New(t)
	topic := k.Topic("t", 1)
	e := newEnv(t, k, simplePipeline("p", topic, "items", false))
	log := newEvents()
	a := e.start(e.cfg, consume.Options{Logger: slog.New(log)})
	ctx := context.Background()
	s := sink.New(e.pool, e.cfg, sink.Options{})
	var gen int32
	waittest.For(t, 30*time.Second, "the member to claim the partition", func() bool {
		offs, err := s.Offsets(ctx, e.cfg.Group)
		if err != nil || len(offs) != 1 {
			return false
		}
		gen = offs[0].Generation
		return true
	})
	tp := record.TP{Topic: topic, Partition: 0}
	if _, err := s.Claim(ctx, e.cfg.Group, gen+1, "a-newer-writer", []record.TP{tp}); err != nil {
		t.Fatal(err)
	}
	produceSpread(k, topic, 1, 0, 10)
	waittest.For(t, 30*time.Second, "the batch to be fenced and the partition read again from the ledger", func() bool {
		return testutil.ToFloat64(a.m.Fences) >= 1 && log.find(consume.EventFenced) != nil && log.find(consume.EventResync) != nil
	})
	if n := e.count("SELECT count(*) FROM items"); n != 0 {
		t.Errorf("%d rows written by a fenced member, want 0", n)
	}
	if ev := log.find(consume.EventRegistryResume); ev != nil {
		t.Errorf("a fence logged as a Schema Registry hold-back: %v", ev)
	}
	if n := testutil.ToFloat64(a.m.RegistryRetries); n != 0 {
		t.Errorf("schema registry retries %v after a fence, want 0", n)
	}

	// A second member joins: the group's generation passes the other
	// writer's, and whoever owns the partition applies every record.
	e.start(e.cfg, consume.Options{})
	e.waitApplied(e.cfg.Group, topic)
	if n := e.count("SELECT count(*) FROM items"); n != 10 {
		t.Errorf("%d rows, want 10: records dropped at the fence were skipped", n)
	}
}

// The revoke callback commits the revoked partitions' applied offsets to
// Kafka before it returns (step 7 during a hand-over), and the member never
// commits for them after: the Kafka commit runs outside c.mu, so this is
// the order its ownership lock has to keep. The newcomer then resumes from
// Kafka's commit, not from a ledger ahead of it.
func TestRevokedPartitionsCommittedBeforeHandOver(t *testing.T) {
	t.Parallel()
	k := kafkatest.New(t)
	const parts = 4
	topic := k.Topic("orders", parts)
	p := gen.Pipeline("orders", topic, "order_lines")
	p.Batch.Linger = 3 * time.Second // batches are open when the rebalance comes
	e := newEnv(t, k, p)

	// seq orders, as the broker and the first member see them, the first
	// member's commits (a partition each) and its revocation (-1). The
	// first member is told apart by its static instance id.
	var mu sync.Mutex
	var seq []int32
	if k.Fake != nil {
		k.Fake.ControlKey(int16(kmsg.OffsetCommit), func(req kmsg.Request) (kmsg.Response, error, bool) {
			r := req.(*kmsg.OffsetCommitRequest)
			if r.InstanceID == nil || *r.InstanceID != "first" {
				return nil, nil, false
			}
			mu.Lock()
			defer mu.Unlock()
			for _, t := range r.Topics {
				for _, p := range t.Partitions {
					seq = append(seq, p.Partition)
				}
			}
			return nil, nil, false // observe only
		})
	}
	log := newEvents()
	logger := slog.New(onEvent{log, func(ev string) {
		if ev == consume.EventRevoked {
			mu.Lock()
			defer mu.Unlock()
			seq = append(seq, -1)
		}
	}})
	firstCfg := *e.cfg
	firstCfg.InstanceID = "first"

	g := gen.New(gen.Options{Seed: 5})
	var events []gen.Event
	for range 400 {
		events = append(events, g.NextNew())
	}
	k.Produce(orderRecords(topic, parts, events)...)
	first := e.start(&firstCfg, consume.Options{Logger: logger})
	waittest.For(t, 30*time.Second, "the first member to buffer records", func() bool { return testutil.ToFloat64(first.m.Buffered) > 0 })
	second := e.start(e.cfg, consume.Options{})
	waittest.For(t, 30*time.Second, "the second member to own partitions", func() bool { return len(second.c.Applied()) > 0 })
	waittest.For(t, 30*time.Second, "the first member's revocation", func() bool { return log.find(consume.EventRevoked) != nil })
	e.waitApplied(e.cfg.Group, topic)

	if n := second.c.SkippedOnResume(); n != 0 {
		t.Errorf("the second member skipped %d records on resume: Kafka's commit was behind the ledger at the hand-over", n)
	}
	if n := e.count("SELECT count(*) FROM order_lines"); n != 400 {
		t.Errorf("%d rows, want 400", n)
	}
	if k.Fake == nil {
		return
	}
	moved := second.c.Applied() // the partitions the first member handed over
	mu.Lock()
	defer mu.Unlock()
	at := slices.Index(seq, -1)
	if at < 0 {
		t.Fatalf("no revocation seen; commits %v", seq)
	}
	for _, p := range seq[at+1:] {
		if _, ok := moved[record.TP{Topic: topic, Partition: p}]; ok {
			t.Errorf("the first member committed partition %d after handing it over (commits, -1 the revocation: %v)", p, seq)
		}
	}
}

// onEvent passes records to a handler and the event of each to f.
type onEvent struct {
	slog.Handler
	f func(event string)
}

func (h onEvent) Handle(ctx context.Context, r slog.Record) error {
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "event" {
			h.f(a.Value.String())
		}
		return true
	})
	return h.Handler.Handle(ctx, r)
}

func (h onEvent) WithAttrs(as []slog.Attr) slog.Handler {
	return onEvent{h.Handler.WithAttrs(as), h.f}
}
