package kafkatest

import (
	"context"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Why kfake needs help expiring sessions
//
// kfake (v0.0.0-20260918054303, the newest the module proxy has) arms a
// classic group member's session timer when it hands the member a
// response (group.reply calls updateHeartbeat only if clientReq.reply
// succeeds). A member that joins fresh has its timer stopped
// (addMemberAndRebalance -> stopPending) and waits in JoinGroup until the
// rebalance completes. If it is SIGKILLed while waiting, clientReq.reply
// selects between the connection's buffered response channel and its
// closed done channel: Go picks one at random, so half the time the reply
// "fails" and the dead member is left with no session timer at all. Once
// the leader syncs, the group is Stable and the dead member keeps its
// partitions until some other member's join forces a rebalance: minutes,
// or forever. A real broker schedules the session expiry of every member
// when the join completes, delivered or not, which is why the same kill
// schedule passes there.
//
// reaper restores Kafka's rule from the outside: it watches the requests
// by which a member shows it is alive (kfake's control hooks see every
// request), and when a Stable group holds a member not heard from for its
// session timeout, it sends the LeaveGroup the coordinator should have
// acted out itself. A Stable group has no member legitimately waiting in
// a join or sync, so a live member is never reaped: it heartbeats every
// few seconds.

// member identifies a classic group member.
type member struct{ group, id string }

// heard is when a member last made a request that keeps its session, and
// the session timeout it joined with.
type heard struct {
	at      time.Time
	timeout time.Duration
}

type reaper struct {
	mu    sync.Mutex
	heard map[member]heard
	adm   *kadm.Client
	cl    *kgo.Client
	now   func() time.Time
}

// reapEvery is how often the reaper looks for expired members; an expired
// member goes within its session timeout plus this.
const reapEvery = 200 * time.Millisecond

// startReaper watches fc's group requests and expires dead members until
// the returned stop is called.
func startReaper(fc *kfake.Cluster, cl *kgo.Client) (stop func()) {
	r := &reaper{heard: map[member]heard{}, adm: kadm.NewClient(cl), cl: cl, now: time.Now}
	for _, key := range []kmsg.Key{kmsg.JoinGroup, kmsg.SyncGroup, kmsg.Heartbeat, kmsg.OffsetCommit, kmsg.LeaveGroup} {
		fc.ControlKey(int16(key), func(req kmsg.Request) (kmsg.Response, error, bool) {
			r.observe(req)
			return nil, nil, false // observe only: kfake handles the request
		})
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(reapEvery)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				r.reap(ctx)
			}
		}
	}()
	return func() { cancel(); <-done }
}

// observe runs on kfake's request loop; it only records.
func (r *reaper) observe(req kmsg.Request) {
	r.mu.Lock()
	defer r.mu.Unlock()
	touch := func(group, id string) {
		if id == "" {
			return // a first join: kfake's pending timer covers it
		}
		m := member{group, id}
		h, ok := r.heard[m]
		if !ok {
			h.timeout = 45 * time.Second // Kafka's default, until its join is seen
		}
		h.at = r.now()
		r.heard[m] = h
	}
	switch q := req.(type) {
	case *kmsg.JoinGroupRequest:
		touch(q.Group, q.MemberID)
		if q.MemberID != "" {
			h := r.heard[member{q.Group, q.MemberID}]
			h.timeout = time.Duration(q.SessionTimeoutMillis) * time.Millisecond
			r.heard[member{q.Group, q.MemberID}] = h
		}
	case *kmsg.SyncGroupRequest:
		touch(q.Group, q.MemberID)
	case *kmsg.HeartbeatRequest:
		touch(q.Group, q.MemberID)
	case *kmsg.OffsetCommitRequest:
		touch(q.Group, q.MemberID)
	case *kmsg.LeaveGroupRequest:
		delete(r.heard, member{q.Group, q.MemberID})
		for _, lm := range q.Members {
			delete(r.heard, member{q.Group, lm.MemberID})
		}
	}
}

// expired returns, per group, the members not heard from for their
// session timeout.
func (r *reaper) expired() map[string][]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string][]string{}
	now := r.now()
	for m, h := range r.heard {
		if now.Sub(h.at) >= h.timeout {
			out[m.group] = append(out[m.group], m.id)
		}
	}
	return out
}

func (r *reaper) reap(ctx context.Context) {
	for group, ids := range r.expired() {
		described, err := r.adm.DescribeGroups(ctx, group)
		if err != nil {
			continue // the next tick asks again
		}
		g, ok := described[group]
		if !ok || g.Err != nil {
			continue
		}
		if g.State != "Stable" {
			// Members may be waiting in a join or sync, with no
			// heartbeats due; kfake's rebalance and sync timers remove
			// those that never come.
			if g.State == "Empty" || g.State == "Dead" {
				r.forget(group, ids)
			}
			continue
		}
		in := map[string]bool{}
		for _, m := range g.Members {
			in[m.MemberID] = true
		}
		var leave []kmsg.LeaveGroupRequestMember
		var gone []string
		for _, id := range ids {
			if in[id] {
				leave = append(leave, kmsg.LeaveGroupRequestMember{MemberID: id})
			} else {
				gone = append(gone, id)
			}
		}
		r.forget(group, gone)
		if len(leave) == 0 {
			continue
		}
		req := kmsg.NewPtrLeaveGroupRequest()
		req.Group = group
		req.Members = leave
		if _, err := req.RequestWith(ctx, r.cl); err == nil {
			r.forget(group, ids)
		}
	}
}

func (r *reaper) forget(group string, ids []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, id := range ids {
		delete(r.heard, member{group, id})
	}
}
