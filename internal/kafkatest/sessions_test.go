package kafkatest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/idemsink/idemsink/internal/pgtest"
	"github.com/idemsink/idemsink/internal/waittest"
)

const (
	envMember   = "KAFKATEST_MEMBER" // brokers,group,topic: run as the member to kill
	testSession = 2 * time.Second
)

func memberOpts(brokers []string, group, topic, clientID string) []kgo.Opt {
	return []kgo.Opt{
		kgo.SeedBrokers(brokers...), kgo.ClientID(clientID),
		kgo.ConsumerGroup(group), kgo.ConsumeTopics(topic),
		// Eager range assignment gives a joining member partitions in
		// the same generation, so a member killed while joining holds
		// them once the group is Stable.
		kgo.Balancers(kgo.RangeBalancer()),
		kgo.SessionTimeout(testSession), kgo.HeartbeatInterval(200 * time.Millisecond),
		kgo.RebalanceTimeout(5 * time.Second),
	}
}

// TestMain runs the test binary as the group member the regression test
// SIGKILLs when the environment says so (a helper process, not a test),
// and the tests otherwise.
func TestMain(m *testing.M) {
	if spec := os.Getenv(envMember); spec != "" {
		runMember(spec)
	}
	// pgtest.Main stops what the harness starts once per binary (a broker
	// container in the containers tier) after the tests.
	pgtest.Main(m)
}

// runMember joins the group and polls until it is killed.
func runMember(spec string) {
	parts := strings.Split(spec, ",")
	cl, err := kgo.NewClient(memberOpts(parts[:1], parts[1], parts[2], "doomed")...)
	if err != nil {
		fmt.Fprintln(os.Stderr, "member:", err)
		os.Exit(2)
	}
	for {
		cl.PollFetches(context.Background())
	}
}

// TestKilledMemberExpires is the harness's regression test: a member
// SIGKILLed while it joins (and so holds partitions once the group is
// Stable) is expired, and the survivor owns every partition again within
// the session timeout (plus the time to notice and rebalance). Without
// the reaper, kfake leaves the dead member in the group about every other
// round, and the survivor never gets its partitions back.
func TestKilledMemberExpires(t *testing.T) {
	k := Fake(t, kfake.GroupMinSessionTimeout(100*time.Millisecond))
	topic := k.Topic("reap", 4)
	group := Name(t, "group")

	var mu sync.Mutex
	owned := map[int32]bool{}
	revokes := 0 // eager rebalances the survivor took part in
	survivor, err := kgo.NewClient(append(memberOpts(k.Brokers, group, topic, "survivor"),
		kgo.OnPartitionsAssigned(func(_ context.Context, _ *kgo.Client, a map[string][]int32) {
			mu.Lock()
			defer mu.Unlock()
			for _, p := range a[topic] {
				owned[p] = true
			}
		}),
		kgo.OnPartitionsRevoked(func(_ context.Context, _ *kgo.Client, r map[string][]int32) {
			mu.Lock()
			defer mu.Unlock()
			revokes++
			for _, p := range r[topic] {
				delete(owned, p)
			}
		}),
		kgo.OnPartitionsLost(func(_ context.Context, _ *kgo.Client, r map[string][]int32) {
			mu.Lock()
			defer mu.Unlock()
			for _, p := range r[topic] {
				delete(owned, p)
			}
		}))...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	polling := make(chan struct{})
	go func() {
		defer close(polling)
		for ctx.Err() == nil {
			survivor.PollFetches(ctx)
		}
	}()
	t.Cleanup(func() { cancel(); <-polling; survivor.Close() })
	// ownsAll waits until the survivor has been through a rebalance since
	// the given count and owns every partition, alone in the group.
	ownsAll := func(since int, within time.Duration) bool {
		return waittest.Until(within, func() bool {
			mu.Lock()
			n, r := len(owned), revokes
			mu.Unlock()
			if n != 4 || r <= since {
				return false
			}
			g, err := k.Admin().DescribeGroups(ctx, group)
			return err == nil && g[group].State == "Stable" && len(g[group].Members) == 1
		})
	}
	if !ownsAll(-1, 10*time.Second) {
		t.Fatal("the survivor never owned the topic")
	}

	// The doomed member's second JoinGroup (the one with its member id)
	// announces it is waiting for the rebalance; the survivor's rejoin is
	// held until the doomed one is dead, so that kfake answers a dead
	// connection, the case it mishandles.
	var joined atomic.Pointer[chan struct{}]
	var dead atomic.Pointer[chan struct{}]
	k.Fake.ControlKey(int16(kmsg.JoinGroup), func(req kmsg.Request) (kmsg.Response, error, bool) {
		j := req.(*kmsg.JoinGroupRequest)
		switch {
		case strings.HasPrefix(j.MemberID, "doomed-"):
			if ch := joined.Swap(nil); ch != nil {
				close(*ch)
			}
		case strings.HasPrefix(j.MemberID, "survivor-"):
			if ch := dead.Load(); ch != nil {
				<-*ch
			}
		}
		return nil, nil, false
	})
	for round := range 4 {
		j, d := make(chan struct{}), make(chan struct{})
		mu.Lock()
		before := revokes
		mu.Unlock()
		joined.Store(&j)
		dead.Store(&d)
		child := exec.Command(os.Args[0])
		child.Env = append(os.Environ(), envMember+"="+strings.Join([]string{k.Brokers[0], group, topic}, ","))
		if err := child.Start(); err != nil {
			t.Fatal(err)
		}
		select {
		case <-j:
		case <-time.After(20 * time.Second):
			_ = child.Process.Kill()
			t.Fatalf("round %d: the member to kill never joined", round)
		}
		_ = child.Process.Kill()
		_ = child.Wait()
		killed := time.Now()
		dead.Store(nil)
		close(d)
		// Expiry comes one session timeout after the member was last
		// heard from; then a rebalance. A dead member left in the group
		// keeps its partitions for good.
		if !ownsAll(before, testSession+3*time.Second) {
			mu.Lock()
			n := len(owned)
			mu.Unlock()
			t.Fatalf("round %d: the survivor owns %d of 4 partitions %s after the kill", round, n, time.Since(killed).Round(time.Millisecond))
		}
		t.Logf("round %d: the survivor owns every partition %s after the kill", round, time.Since(killed).Round(time.Millisecond))
	}
}
