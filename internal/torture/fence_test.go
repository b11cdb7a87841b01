package torture_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/idemsink/idemsink/internal/consume"
	"github.com/idemsink/idemsink/internal/gen"
	"github.com/idemsink/idemsink/internal/kafkatest"
	"github.com/idemsink/idemsink/internal/record"
	"github.com/idemsink/idemsink/internal/sink"
	"github.com/idemsink/idemsink/internal/waittest"
)

// TestFencedRecordsAreNotSkipped is the crash loop's loss on real Kafka,
// made deterministic on one partition and one member.
//
// A member's batch is fenced (a newer generation claimed the partition in
// the ledger, as a member that took over while this one was cut off from
// the group would, before it died) and dropped. The member then rejoins the
// group under a newer generation and keeps the partition: the Kafka client
// calls neither OnPartitionsLost nor OnPartitionsRevoked for it, and goes on
// fetching after the dropped records. Its next batch is applied under the
// new generation, so it is not fenced, and its watermark (the highest
// offset seen) moves the ledger past the dropped records: they are never
// applied. In the crash loop the same happens through a revocation after
// an offset commit failed with UNKNOWN_MEMBER_ID: the revoke callback
// flushes the old session's batches under the new generation.
func TestFencedRecordsAreNotSkipped(t *testing.T) {
	t.Parallel()
	k := kafkatest.Fake(t)
	e := newEnv(t, "fenced-then-rejoined", k, 1)
	// One target date and no bad input: every 10 records make one batch.
	e.prod.g, e.prod.badRate = gen.New(gen.Options{Seed: e.seed, Days: 1}), 0
	kn := defaultKnobs
	kn.maxRecords, kn.linger = 10, time.Hour // a batch flushes at exactly 10 records
	cfg := e.config(kn)
	e.ensureTables(cfg)
	logs := newCounter()
	x := e.startMember(cfg, logs)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	var gen0 int32
	waittest.For(t, 30*time.Second, "the member to claim the partition", func() bool {
		_, gens, _, err := e.ledger(ctx)
		gen0 = gens[0]
		return err == nil && len(gens) == 1
	})
	// Another writer claims the partition with the next generation.
	tp := record.TP{Topic: e.topic, Partition: 0}
	if _, err := sink.New(e.pool, cfg, sink.Options{}).Claim(ctx, e.group, gen0+1, "a-member-that-died", []record.TP{tp}); err != nil {
		t.Fatal(err)
	}
	// The member's next batch (offsets 0-9) is fenced and dropped.
	fresh := func(g *gen.Generator) gen.Event { return g.NextNew() }
	if err := e.prod.produce(ctx, 10, fresh); err != nil {
		t.Fatal(err)
	}
	waittest.Describe(t, 30*time.Second, func() bool { return logs.count(consume.EventFenced) >= 1 }, func() string {
		return fmt.Sprintf("the batch to be fenced (warnings: %v)", logs.warns)
	})

	// A rebalance, as after a failed commit or heartbeat: the member rejoins
	// with a newer generation and keeps its partition.
	k.Fake.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Heartbeat}, Group: e.group, Err: kerr.RebalanceInProgress, Count: 1})
	waittest.For(t, 30*time.Second, "the group to rebalance past the other writer's generation", func() bool {
		g := k.Fake.GroupInfo(e.group)
		return g != nil && g.Epoch > gen0 && g.State == "Stable" && g.NumAssigned() == 1
	})

	// The member's next batch (offsets 10-19) is applied.
	if err := e.prod.produce(ctx, 10, fresh); err != nil {
		t.Fatal(err)
	}
	e.settle(30 * time.Second)
	if err := x.stop(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	e.verify("")
}
