package consume_test

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/idemsink/idemsink/internal/consume"
	"github.com/idemsink/idemsink/internal/kafkatest"
	"github.com/idemsink/idemsink/internal/waittest"
)

// Records produced by kcat, a client nobody here wrote (librdkafka), are
// consumed like any other.
func TestOutsideProducerKcat(t *testing.T) {
	t.Parallel()
	kcat, err := exec.LookPath("kcat")
	if err != nil {
		t.Fatal("kcat is needed as an outside producer: apt-get install -y kcat")
	}
	k := kafkatest.New(t)
	topic := k.Topic("kcat", 3)
	e := newEnv(t, k, simplePipeline("p", topic, "items", true))
	var in strings.Builder
	for i := range 60 {
		fmt.Fprintf(&in, "key-%d|{\"id\":%d,\"status\":\"s%d\",\"qty\":%d,\"ts\":\"2026-03-0%dT12:00:00+01:00\",\"v\":%d}\n", i%20, i%20, i, i, 1+i%3, i)
	}
	cmd := exec.CommandContext(context.Background(), kcat, "-P", "-b", strings.Join(k.Brokers, ","), "-t", topic, "-K", "|", "-X", "api.version.request=true")
	cmd.Stdin = strings.NewReader(in.String())
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("kcat: %v: %s", err, out)
	}
	waittest.For(t, 30*time.Second, "kcat's records to arrive", func() bool {
		n := int64(0)
		for _, end := range k.Ends(topic) {
			n += end
		}
		return n == 60
	})
	mb := e.start(e.cfg, consume.Options{})
	e.waitApplied(e.cfg.Group, topic)
	if err := mb.stop(); err != nil {
		t.Fatal(err)
	}
	if n := e.count("SELECT count(*) FROM items"); n != 20 {
		t.Errorf("%d rows, want 20 keys", n)
	}
	// Each key's newest version is the last of its 3 records.
	if n := e.count("SELECT count(*) FROM items WHERE v = id + 40 AND status = 's' || v"); n != 20 {
		t.Errorf("%d rows hold their newest version, want 20", n)
	}
}

// The broker refuses an offset commit from a member whose generation is
// over: a member that lost its partitions cannot move their offsets.
func TestStaleGenerationCommitRefused(t *testing.T) {
	t.Parallel()
	k := kafkatest.New(t)
	topic := k.Topic("gen", 2)
	group := kafkatest.Name(t, "group")
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
