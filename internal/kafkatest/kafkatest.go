// Package kafkatest gives tests a Kafka, chosen once per test binary, first
// match wins:
//
//  1. the broker named by KAFKA_BROKERS (the real-Kafka tier);
//  2. with IDEMSINK_TESTCONTAINERS=1, a single-node broker in a container
//     from IDEMSINK_KAFKA_IMAGE (default apache/kafka:4.1.1), started
//     through testcontainers-go and stopped by pgtest.Main, which the
//     package's TestMain must call;
//  3. an in-process kfake cluster per test.
//
// Tests that inject faults only kfake can ask for it explicitly with Fake.
package kafkatest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/idemsink/idemsink/internal/pgtest"
)

// Cluster is a Kafka for one test.
type Cluster struct {
	Brokers []string
	// Fake is the in-process cluster, nil against a real broker.
	Fake *kfake.Cluster
	t    testing.TB
	adm  *kadm.Client
	cl   *kgo.Client
}

// Real reports whether New returns a real broker.
func Real() bool {
	containers, _ := strconv.ParseBool(os.Getenv(pgtest.EnvContainers))
	return os.Getenv("KAFKA_BROKERS") != "" || containers
}

// New returns the real broker of KAFKA_BROKERS or of the container tier,
// else a kfake cluster.
func New(t testing.TB) *Cluster {
	t.Helper()
	if b := os.Getenv("KAFKA_BROKERS"); b != "" {
		return connect(t, strings.Split(b, ","), nil)
	}
	if pgtest.Containers(t) {
		return connect(t, containerBrokers(t), nil)
	}
	return Fake(t)
}

// Fake returns an in-process kfake cluster whatever KAFKA_BROKERS says: for
// tests that inject faults only kfake can.
func Fake(t testing.TB, opts ...kfake.Opt) *Cluster {
	t.Helper()
	fc, err := kfake.NewCluster(append([]kfake.Opt{kfake.NumBrokers(1)}, opts...)...)
	if err != nil {
		t.Fatalf("kfake: %v", err)
	}
	t.Cleanup(fc.Close)
	c := connect(t, fc.ListenAddrs(), fc)
	// kfake can leave a SIGKILLed member in a Stable group for good; the
	// reaper expires it as a broker would (sessions.go).
	t.Cleanup(startReaper(fc, c.cl))
	return c
}

func connect(t testing.TB, brokers []string, fc *kfake.Cluster) *Cluster {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ProducerLinger(0), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatalf("kafka client: %v", err)
	}
	t.Cleanup(cl.Close)
	return &Cluster{Brokers: brokers, Fake: fc, t: t, adm: kadm.NewClient(cl), cl: cl}
}

var unsafe = regexp.MustCompile(`[^a-zA-Z0-9._-]+`)

// Name returns a topic or group name unique to the test, so that tests can
// share a real broker.
func Name(t testing.TB, suffix string) string {
	n := unsafe.ReplaceAllString(t.Name(), "_")
	if len(n) > 100 {
		n = n[:100]
	}
	return fmt.Sprintf("%s.%s.%08x", n, suffix, rand.Uint32())
}

// Topic creates a topic with the given partitions and returns its name.
func (c *Cluster) Topic(suffix string, partitions int32) string {
	c.t.Helper()
	name := Name(c.t, suffix)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := c.adm.CreateTopic(ctx, partitions, 1, nil, name)
	if err == nil {
		err = resp.Err
	}
	if err != nil {
		c.t.Fatalf("create topic %s: %v", name, err)
	}
	return name
}

// Produce writes records synchronously; each record's Partition is used.
func (c *Cluster) Produce(recs ...*kgo.Record) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		c.t.Fatalf("produce: %v", err)
	}
}

// Ends returns the end offset (high watermark) of every partition of topic.
func (c *Cluster) Ends(topic string) map[int32]int64 {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// A partition whose leader is still moving answers with an error and
	// offset -1; a wait that took that as "empty" would end too early, so
	// ask again until every partition answers.
	for {
		ends, err := c.adm.ListEndOffsets(ctx, topic)
		if err != nil {
			c.t.Fatalf("list end offsets: %v", err)
		}
		out := map[int32]int64{}
		var perr error
		ends.Each(func(o kadm.ListedOffset) {
			switch {
			case o.Err != nil:
				perr = fmt.Errorf("partition %d: %w", o.Partition, o.Err)
			case o.Offset < 0:
				perr = fmt.Errorf("partition %d: no end offset yet", o.Partition)
			}
			out[o.Partition] = o.Offset
		})
		if perr == nil && len(out) > 0 {
			return out
		}
		select {
		case <-ctx.Done():
			c.t.Fatalf("list end offsets of %s: %v", topic, perr)
		case <-time.After(50 * time.Millisecond): // polling interval of a condition wait
		}
	}
}

// Committed returns the group's committed offsets for topic.
func (c *Cluster) Committed(group, topic string) map[int32]int64 {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	offs, err := c.adm.FetchOffsets(ctx, group)
	if err != nil {
		c.t.Fatalf("fetch offsets: %v", err)
	}
	out := map[int32]int64{}
	offs.Each(func(o kadm.OffsetResponse) {
		if o.Topic == topic {
			out[o.Partition] = o.At
		}
	})
	return out
}

// Admin returns an admin client on the cluster.
func (c *Cluster) Admin() *kadm.Client { return c.adm }
