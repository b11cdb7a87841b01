package kafkatest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/idemsink/idemsink/internal/waittest"
)

// This checks the broker (kfake, or the real one under KAFKA_BROKERS), not
// idemsink: the consumer relies on it as the backstop of contract 8
// (docs/design.md) when a member loses its partitions without knowing.

// The broker refuses an offset commit from a member whose generation is
// over: a member that lost its partitions cannot move their offsets.
func TestStaleGenerationCommitRefused(t *testing.T) {
	t.Parallel()
	k := New(t)
	topic := k.Topic("gen", 2)
	group := Name(t, "group")
	join := func() *kgo.Client {
		cl, err := kgo.NewClient(kgo.SeedBrokers(k.Brokers...), kgo.ConsumerGroup(group), kgo.ConsumeTopics(topic),
			kgo.Balancers(kgo.CooperativeStickyBalancer()), kgo.DisableAutoCommit())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(cl.Close)
		return cl
	}
	polling := func(cl *kgo.Client) context.CancelFunc {
		ctx, cancel := context.WithCancel(context.Background())
		go func() {
			for ctx.Err() == nil {
				cl.PollFetches(ctx)
			}
		}()
		return cancel
	}
	first := join()
	stop1 := polling(first)
	defer stop1()
	waittest.For(t, 30*time.Second, "the first member to join", func() bool { _, g := first.GroupMetadata(); return g > 0 })
	member, gen := first.GroupMetadata()

	second := join()
	stop2 := polling(second)
	defer stop2()
	waittest.For(t, 60*time.Second, "a rebalance to a new generation", func() bool { _, g := first.GroupMetadata(); return g > gen })

	req := kmsg.NewPtrOffsetCommitRequest()
	req.Group, req.Generation, req.MemberID = group, gen, member
	rt := kmsg.NewOffsetCommitRequestTopic()
	rt.Topic = topic
	details, err := k.Admin().ListTopics(context.Background(), topic)
	if err != nil {
		t.Fatal(err)
	}
	rt.TopicID = details[topic].ID // newer request versions name topics by id
	rp := kmsg.NewOffsetCommitRequestTopicPartition()
	rp.Partition, rp.Offset = 0, 42
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(context.Background(), first)
	if err != nil {
		t.Fatal(err)
	}
	code := resp.Topics[0].Partitions[0].ErrorCode
	if code == 0 {
		t.Fatal("the broker accepted a commit from a finished generation")
	}
	if e := kerr.ErrorForCode(code); !errors.Is(e, kerr.IllegalGeneration) && !errors.Is(e, kerr.UnknownMemberID) && !errors.Is(e, kerr.StaleMemberEpoch) {
		t.Errorf("commit refused with %v; want ILLEGAL_GENERATION", e)
	}
	if c := k.Committed(group, topic); c[0] == 42 {
		t.Error("the refused commit moved the offset")
	}
}
