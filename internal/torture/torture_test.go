package torture_test

import (
	"context"
	"fmt"
	"os"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/idemsink/idemsink/internal/consume"
	"github.com/idemsink/idemsink/internal/fault"
	"github.com/idemsink/idemsink/internal/gen"
	"github.com/idemsink/idemsink/internal/kafkatest"
	"github.com/idemsink/idemsink/internal/pgtest"
	"github.com/idemsink/idemsink/internal/waittest"
)

// TestTorture tries hard to break the promise that redelivery is harmless:
// crashes of the real binary at named points and at random moments,
// rebalance storms, broker faults, a database outage and a zombie member.
// Every scenario ends with the tables compared row for row with the oracle
// and every produced record accounted for. TORTURE_LONG=1 runs it longer.
func TestTorture(t *testing.T) {
	bin := &binary{dir: t.TempDir()}

	// The outage stops the PostgreSQL server every scenario shares, so it
	// runs alone, before the parallel scenarios start.
	t.Run("db-outage", func(t *testing.T) { dbOutage(t, bin) })
	t.Run("crash-loop", func(t *testing.T) { t.Parallel(); crashLoop(t, bin) })
	t.Run("zombie", func(t *testing.T) { t.Parallel(); zombie(t, bin) })
	t.Run("rebalance-storm", func(t *testing.T) { t.Parallel(); rebalanceStorm(t) })
	t.Run("broker-faults", func(t *testing.T) { t.Parallel(); brokerFaults(t) })
}

// crashLoop runs two daemons as child processes and kills them, with
// SIGKILL from the test at random moments and by their own fault points
// (after staging, after the upsert, after the PostgreSQL commit, during a
// rebalance, after one lane's commit while another lane's transaction is
// open), restarting each at once, while the log is produced.
func crashLoop(t *testing.T, bin *binary) {
	path := bin.get(t)
	k := kafkatest.New(t)
	e := newEnv(t, "crash-loop", k, 6)
	cfgPath, _ := e.childConfig(defaultKnobs)
	const faults = "after-stage=0.03,after-upsert=0.03,after-pg-commit=0.03,during-rebalance=0.3,between-lanes=0.03"
	minCycles := pick(20, 100)
	prodDone := make(chan error, 1)
	wait := e.prod.run(pick(3000, 20000), pick(30, 50), 250*time.Millisecond)
	go func() { prodDone <- wait() }()

	type exit struct {
		slot int
		c    *child
	}
	exits := make(chan exit, 4)
	slots := make([]*child, 2)
	causes := map[string]int{}
	seen := map[string]int{}
	lives, evicted := 0, 0
	cycles, produced := 0, false
	// behind is true once half the cycles are done and a point has not
	// been reached: from then on every new life is forced to crash at it,
	// and the schedule stops lives with SIGTERM, whose leave revokes the
	// partitions (the rebalance point). Revocations are rare in this loop
	// (a dead member's eviction expels the survivor too), so waiting for
	// chance alone failed about one run in four.
	behind := func() bool {
		if cycles < minCycles/2 {
			return false
		}
		for _, p := range fault.Points {
			if causes[p] == 0 {
				return true
			}
		}
		return false
	}
	start := func(i int) {
		lives++
		spec := faults
		// A point not reached yet is forced now and then, so that every
		// run crashes at each of them at least once. A forced life has no
		// other fault point: with batches applied in parallel, the 3%
		// points fire often enough to end a life before a rare point
		// (a revocation) comes round.
		for _, p := range fault.Points {
			if causes[p] == 0 && (behind() || e.rng.IntN(4) == 0) {
				spec = p + "=1"
				break
			}
		}
		c := e.startChild(path, fmt.Sprintf("life-%d", lives), cfgPath, "", spec)
		slots[i] = c
		go func() { <-c.done; exits <- exit{i, c} }()
	}
	ended := func(c *child) {
		cause := c.cause()
		causes[cause]++
		for _, w := range watched {
			seen[w] += c.out.count(w)
		}
		switch {
		case slices.Contains(fault.Points, cause), cause == "SIGKILL":
		case cause == "SIGTERM" && c.state.ExitCode() == 0:
		default:
			t.Errorf("%s ended unexpectedly (%s, %s):\n%s", c.name, cause, c.state, c.out.tail(40))
		}
	}
	evict := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		n, err := e.evictAll(ctx)
		if err != nil {
			t.Logf("evict members: %v", err)
		}
		evicted += n
	}
	start(0)
	start(1)
	termed := map[*child]time.Time{}
	allPoints := func() bool {
		for _, p := range fault.Points {
			if causes[p] == 0 {
				return false
			}
		}
		return true
	}
	for cycles < minCycles || !produced || (!allPoints() && cycles < 5*minCycles) {
		select {
		case err := <-prodDone:
			if err != nil {
				t.Fatal(err)
			}
			produced = true
		case x := <-exits:
			cycles++
			ended(x.c)
			evict()
			start(x.slot)
		case <-schedule(e.rng, 300*time.Millisecond, 2500*time.Millisecond):
			c := slots[e.rng.IntN(len(slots))]
			if at, ok := termed[c]; ok {
				if time.Since(at) > 30*time.Second {
					t.Errorf("%s did not stop within 30s of SIGTERM:\n%s", c.name, c.out.tail(40))
					c.signal(syscall.SIGKILL)
				}
				continue
			}
			if behind() || e.rng.Float64() < 0.15 {
				termed[c] = time.Now()
				c.signal(syscall.SIGTERM)
			} else {
				c.signal(syscall.SIGKILL)
			}
		}
	}
	for _, c := range slots {
		if !c.exited() {
			c.signal(syscall.SIGKILL)
		}
	}
	for range slots {
		x := <-exits
		cycles++
		ended(x.c)
	}
	for _, p := range fault.Points {
		if causes[p] == 0 {
			t.Errorf("no life crashed at %s in %d cycles", p, cycles)
		}
	}

	// A clean life brings the ledger and Kafka to the end of the log, then
	// shuts down on SIGTERM.
	evict()
	final := e.startChild(path, "final", cfgPath, "", "")
	final.waitEvent(t, time.Minute, consume.EventAssigned, 1)
	e.settle(2 * time.Minute)
	final.signal(syscall.SIGTERM)
	if !final.wait(30*time.Second) || final.state.ExitCode() != 0 {
		t.Errorf("the final daemon did not shut down cleanly (%s):\n%s", final.state, final.out.tail(40))
	}
	for _, w := range watched {
		seen[w] += final.out.count(w)
	}
	e.verify(fmt.Sprintf("cycles=%d causes=%s lives=%d evicted=%d fenced=%d resumed=%d", cycles,
		fmtCounts(causes, append(slices.Clone(fault.Points), "SIGKILL", "SIGTERM")), lives+1, evicted,
		seen[consume.EventFenced], seen[consume.EventResumed]))
}

// rebalanceStorm runs three in-process members of one group, joining and
// leaving every one to two seconds while the log is produced.
func rebalanceStorm(t *testing.T) {
	k := kafkatest.New(t)
	e := newEnv(t, "rebalance-storm", k, 6)
	cfg := e.config(defaultKnobs)
	e.ensureTables(cfg)
	logs := newCounter()
	wait := e.prod.run(pick(2500, 15000), pick(25, 50), 120*time.Millisecond)
	slots := make([]*member, 3)
	joins, leaves := 0, 0
	for i := range slots {
		slots[i] = e.startMember(cfg, logs)
		joins++
	}
	end := time.After(pick(12*time.Second, 60*time.Second)) // the storm's length
storm:
	for {
		select {
		case <-end:
			break storm
		case <-schedule(e.rng, time.Second, 2*time.Second):
			i := e.rng.IntN(len(slots))
			if slots[i] == nil {
				slots[i] = e.startMember(cfg, logs)
				joins++
				continue
			}
			if err := slots[i].stop(30 * time.Second); err != nil {
				t.Errorf("member %d: %v", i, err)
			}
			slots[i] = nil
			leaves++
		}
	}
	if err := wait(); err != nil {
		t.Fatal(err)
	}
	for i := range slots {
		if slots[i] == nil {
			slots[i] = e.startMember(cfg, logs)
			joins++
		}
	}
	e.settle(2 * time.Minute)
	for i, mb := range slots {
		if err := mb.stop(30 * time.Second); err != nil {
			t.Errorf("member %d: %v", i, err)
		}
	}
	e.verify(fmt.Sprintf("joins=%d leaves=%d assigned=%d revoked=%d partitions_lost=%d fenced=%d", joins, leaves,
		logs.count(consume.EventAssigned), logs.count(consume.EventRevoked), logs.count(consume.EventLost), logs.count(consume.EventFenced)))
}

// brokerFaults runs two in-process members on a three-broker kfake while
// the broker fails and fumbles requests: failed and ambiguous offset
// commits, fetch errors, coordinator and leader moves, join, sync,
// heartbeat and offset-fetch errors.
func brokerFaults(t *testing.T) {
	k := kafkatest.Fake(t, kfake.NumBrokers(3))
	e := newEnv(t, "broker-faults", k, 6)
	fc := k.Fake
	cfg := e.config(defaultKnobs)
	e.ensureTables(cfg)
	logs := newCounter()
	wait := e.prod.run(pick(2000, 12000), pick(25, 50), 120*time.Millisecond)
	members := []*member{e.startMember(cfg, logs), e.startMember(cfg, logs)}

	var handles []*kfake.FaultHandle
	kindOf := map[*kfake.FaultHandle]string{}
	moves := map[string]int{}
	inject := func(kind string, f kfake.Fault) {
		h := fc.Fault(f)
		handles = append(handles, h)
		kindOf[h] = kind
	}
	n := func() int { return 1 + e.rng.IntN(3) }
	kinds := []func(){
		func() {
			inject("commit-failed", kfake.Fault{Keys: []kmsg.Key{kmsg.OffsetCommit}, Err: kerr.UnknownServerError, Count: n()})
		},
		func() {
			inject("commit-ambiguous", kfake.Fault{Keys: []kmsg.Key{kmsg.OffsetCommit}, Err: kerr.RequestTimedOut, Count: n()})
		},
		func() {
			err := []*kerr.Error{kerr.NotLeaderForPartition, kerr.UnknownServerError, kerr.OffsetNotAvailable}[e.rng.IntN(3)]
			inject("fetch-error", kfake.Fault{Keys: []kmsg.Key{kmsg.Fetch}, Topic: e.topic, Err: err, Count: n()})
		},
		func() {
			fc.RehashCoordinators()
			moves["coordinator-move"]++
		},
		func() {
			p := e.rng.Int32N(e.parts)
			if err := fc.MoveTopicPartition(e.topic, p, e.rng.Int32N(3)); err != nil {
				t.Errorf("move partition %d: %v", p, err)
			}
			moves["leader-move"]++
		},
		func() {
			// A heartbeat that says "rebalance" makes the member rejoin,
			// and its join meets errors.
			inject("join-error", kfake.Fault{Keys: []kmsg.Key{kmsg.JoinGroup}, Group: e.group, Err: kerr.CoordinatorLoadInProgress, Count: n()})
			inject("heartbeat-error", kfake.Fault{Keys: []kmsg.Key{kmsg.Heartbeat}, Group: e.group, Err: kerr.RebalanceInProgress, Count: 1})
		},
		func() {
			inject("sync-error", kfake.Fault{Keys: []kmsg.Key{kmsg.SyncGroup}, Group: e.group, Err: kerr.CoordinatorNotAvailable, Count: 1})
			inject("heartbeat-error", kfake.Fault{Keys: []kmsg.Key{kmsg.Heartbeat}, Group: e.group, Err: kerr.RebalanceInProgress, Count: 1})
		},
		func() {
			err := []*kerr.Error{kerr.NotCoordinator, kerr.IllegalGeneration, kerr.UnknownServerError}[e.rng.IntN(3)]
			inject("heartbeat-error", kfake.Fault{Keys: []kmsg.Key{kmsg.Heartbeat}, Group: e.group, Err: err, Count: 1})
		},
		func() {
			inject("offset-fetch-error", kfake.Fault{Keys: []kmsg.Key{kmsg.OffsetFetch}, Group: e.group, Err: kerr.CoordinatorLoadInProgress, Count: n()})
			inject("heartbeat-error", kfake.Fault{Keys: []kmsg.Key{kmsg.Heartbeat}, Group: e.group, Err: kerr.IllegalGeneration, Count: 1})
		},
	}
	end := time.After(pick(10*time.Second, 60*time.Second)) // the faulty stretch
	var order []int
faulty:
	for {
		select {
		case <-end:
			break faulty
		case <-schedule(e.rng, 150*time.Millisecond, 450*time.Millisecond):
			// Every kind in turn, in a new order each round.
			if len(order) == 0 {
				order = e.rng.Perm(len(kinds))
			}
			kinds[order[0]]()
			order = order[1:]
		}
	}
	hits := map[string]int{}
	for _, h := range handles {
		hits[kindOf[h]] += h.Hits()
		h.Remove()
	}
	for k, v := range moves {
		hits[k] += v
	}
	total := 0
	for _, v := range hits {
		total += v
	}
	if err := wait(); err != nil {
		t.Fatal(err)
	}
	e.settle(2 * time.Minute)
	for i, mb := range members {
		if err := mb.stop(30 * time.Second); err != nil {
			t.Errorf("member %d: %v", i, err)
		}
	}
	names := []string{"commit-failed", "commit-ambiguous", "fetch-error", "coordinator-move", "leader-move",
		"join-error", "sync-error", "heartbeat-error", "offset-fetch-error"}
	e.verify(fmt.Sprintf("faults=%d %s commit_errors=%d partitions_lost=%d fenced=%d", total, fmtCounts(hits, names),
		logs.count(consume.EventCommitFailed), logs.count(consume.EventLost), logs.count(consume.EventFenced)))
	for _, kind := range []string{"commit-failed", "commit-ambiguous", "fetch-error", "join-error", "heartbeat-error"} {
		if hits[kind] == 0 {
			t.Errorf("no %s fault was ever hit: the scenario did not test it", kind)
		}
	}
}

// dbOutage stops PostgreSQL for several seconds under a running daemon
// (a child process): it must report not ready, retry with backoff, hold no
// more than its buffer, resume, and dead-letter nothing for the outage.
func dbOutage(t *testing.T, bin *binary) {
	if os.Getenv("TEST_DATABASE_URL") != "" {
		t.Skip("the outage stops the throwaway PostgreSQL server; TEST_DATABASE_URL names a server it cannot stop")
	}
	path := bin.get(t)
	// Local before the database: the test's database must live on the
	// server the outage stops.
	srv := pgtest.Local(t)
	k := kafkatest.New(t)
	e := newEnv(t, "db-outage", k, 6)
	kn := defaultKnobs
	kn.metrics, kn.maxBuffered, kn.backoff, kn.backoffMax = true, 300, 100*time.Millisecond, time.Second
	cfgPath, addr := e.childConfig(kn)
	c := e.startChild(path, "daemon", cfgPath, addr, "")
	wait := e.prod.run(pick(1500, 10000), pick(25, 50), 200*time.Millisecond)

	ready := func() bool {
		code, _, err := c.get("/readyz")
		return err == nil && code == 200
	}
	waittest.For(t, time.Minute, "the daemon to be ready", ready)
	waittest.For(t, time.Minute, "the daemon to apply a few hundred records", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		a, _, _, err := e.ledger(ctx)
		sum := int64(0)
		for _, o := range a {
			sum += o + 1
		}
		return err == nil && sum >= 200
	})

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := srv.Stop(ctx); err != nil {
		t.Fatalf("stop PostgreSQL: %v", err)
	}
	down := time.Now()
	outage := pick(5*time.Second, 15*time.Second)
	notReady, maxBuffered := time.Duration(-1), 0.0
	over := time.After(outage) // the outage's length
	tick := time.NewTicker(50 * time.Millisecond)
watch:
	for {
		select {
		case <-over:
			break watch
		case <-tick.C: // sampling the daemon during the outage
		}
		if c.exited() {
			t.Fatalf("the daemon exited during the outage (%s):\n%s", c.state, c.out.tail(40))
		}
		if code, _, err := c.get("/readyz"); err == nil && code == 503 && notReady < 0 {
			notReady = time.Since(down)
		}
		if b, err := c.gauge("idemsink_buffered_records"); err == nil {
			maxBuffered = max(maxBuffered, b)
		}
	}
	tick.Stop()
	if err := srv.Restart(ctx); err != nil {
		t.Fatalf("restart PostgreSQL: %v", err)
	}
	up := time.Now()
	waittest.For(t, time.Minute, "the daemon to be ready again", ready)
	readyAfter := time.Since(up)
	if notReady < 0 {
		t.Errorf("/readyz never reported not ready during a %s outage", outage)
	}
	if maxBuffered > float64(kn.maxBuffered) {
		t.Errorf("the daemon buffered %v records during the outage; its cap is %d", maxBuffered, kn.maxBuffered)
	}
	retries, err := c.gauge("idemsink_db_retries_total")
	if err != nil || retries == 0 {
		t.Errorf("idemsink_db_retries_total = %v (%v); the daemon must have retried", retries, err)
	}
	if err := wait(); err != nil {
		t.Fatal(err)
	}
	e.settle(2 * time.Minute)
	c.signal(syscall.SIGTERM)
	if !c.wait(30*time.Second) || c.state.ExitCode() != 0 {
		t.Errorf("the daemon did not shut down cleanly (%s):\n%s", c.state, c.out.tail(40))
	}
	e.verify(fmt.Sprintf("down=%s not_ready_after=%s ready_after_restart=%s retries=%v max_buffered=%v/%d",
		outage, notReady.Round(time.Millisecond), readyAfter.Round(time.Millisecond), retries, maxBuffered, kn.maxBuffered))
}

// zombie freezes a daemon (SIGSTOP) while it holds open batches, past its
// session timeout; another member takes its partitions and applies newer
// versions of the same keys; then the zombie resumes (SIGCONT). Its late
// batch must be refused: nothing written, no ledger offset moved back.
func zombie(t *testing.T, bin *binary) {
	path := bin.get(t)
	k := kafkatest.New(t)
	e := newEnv(t, "zombie", k, 6)
	zk := defaultKnobs
	zk.metrics, zk.linger, zk.maxRecords, zk.maxBuffered, zk.rebalance = true, 4*time.Second, 5000, 10000, 8*time.Second
	cfgPath, addr := e.childConfig(zk)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	// The first versions are in Kafka before the zombie-to-be starts, so
	// that its first fetches take them all and its batches open together.
	n := pick(300, 3000)
	if err := e.prod.produce(ctx, n, func(g *gen.Generator) gen.Event { return g.NextNew() }); err != nil {
		t.Fatal(err)
	}
	held := float64(len(e.prod.Log()))
	a := e.startChild(path, "zombie", cfgPath, addr, "")
	var buffered float64
	waittest.Describe(t, 30*time.Second, func() bool {
		b, err := a.gauge("idemsink_buffered_records")
		buffered = b
		return err == nil && b == held
	}, func() string {
		return fmt.Sprintf("the zombie-to-be to hold all %v records in open batches (last seen %v); its log:\n%s", held, buffered, a.out.tail(30))
	})
	a.signal(syscall.SIGSTOP)
	frozen := time.Now()
	_, gens, members, err := e.ledger(ctx)
	if err != nil || len(members) != int(e.parts) {
		t.Fatalf("the zombie's claims: %v %v", members, err)
	}
	zMember, zGen := members[0], gens[0]
	batches := func() int {
		var n int
		if err := e.pool.QueryRow(ctx, "SELECT count(*) FROM idemsink.batches WHERE member_id = $1", zMember).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	zBatches := batches()
	if zBatches != 0 {
		t.Logf("the zombie applied %d batches before it froze", zBatches)
	}

	// Another member takes over once the zombie's session has expired,
	// applies the first versions, then newer versions of the same keys.
	cfg := e.config(defaultKnobs)
	logs := newCounter()
	b := e.startMember(cfg, logs)
	e.waitApplied(time.Minute)
	if err := e.prod.produce(ctx, n, func(g *gen.Generator) gen.Event { return g.NextUpdate() }); err != nil {
		t.Fatal(err)
	}
	e.waitApplied(time.Minute)
	before, gensBefore, _, err := e.ledger(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for p, g := range gensBefore {
		if g <= zGen {
			t.Errorf("partition %d: the ledger's generation is %d, not above the zombie's %d", p, g, zGen)
		}
	}
	rows := xmins(t, e)

	a.signal(syscall.SIGCONT)
	stopped := time.Since(frozen)
	waittest.For(t, time.Minute, "the zombie to find out", func() bool {
		return a.out.count(consume.EventFenced)+a.out.count(consume.EventLost) > 0
	})
	// The group settles with both members before anything else is produced.
	waittest.For(t, time.Minute, "the zombie to rejoin", func() bool { return a.out.count(consume.EventAssigned) >= 2 })
	after, _, _, err := e.ledger(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for p, o := range before {
		if after[p] < o {
			t.Errorf("partition %d: the ledger's applied offset went back from %d to %d when the zombie resumed", p, o, after[p])
		}
	}
	if got := batches(); got != zBatches {
		t.Errorf("the zombie's old member %s recorded %d batches after it resumed", zMember, got-zBatches)
	}
	for id, x := range xmins(t, e) {
		if rows[id] != x {
			t.Errorf("row %s was rewritten when the zombie resumed", id)
			break
		}
	}
	refused := "lost"
	if a.out.count(consume.EventFenced) > 0 {
		refused = "fenced"
	}

	// Both members work on.
	if err := e.prod.produce(ctx, n/2, func(g *gen.Generator) gen.Event { return g.Next() }); err != nil {
		t.Fatal(err)
	}
	e.settle(2 * time.Minute)
	if err := b.stop(30 * time.Second); err != nil {
		t.Error(err)
	}
	a.signal(syscall.SIGTERM)
	if !a.wait(30*time.Second) || a.state.ExitCode() != 0 {
		t.Errorf("the zombie did not shut down cleanly (%s):\n%s", a.state, a.out.tail(40))
	}
	e.verify(fmt.Sprintf("frozen=%s late_batch=%s zombie_fenced=%d zombie_lost=%d", stopped.Round(100*time.Millisecond), refused,
		a.out.count(consume.EventFenced), a.out.count(consume.EventLost)))
	if t.Failed() {
		t.Logf("zombie log:\n%s", a.out.tail(60))
	}
}

// xmins returns each row's xmin by record id: a changed xmin means the row
// was written again.
func xmins(t *testing.T, e *env) map[string]string {
	t.Helper()
	rows, err := e.pool.Query(context.Background(), "SELECT record_id::text, xmin::text FROM order_lines")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var id, x string
		if err := rows.Scan(&id, &x); err != nil {
			t.Fatal(err)
		}
		out[id] = x
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}
