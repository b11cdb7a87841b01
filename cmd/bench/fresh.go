package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/idemsink/idemsink/internal/config"
)

// freshRates are scenario 6's steady rates, as shares of scenario 1's.
var freshRates = []float64{0.10, 0.50, 0.90}

// freshRow is one line of scenario 6's table: one config at one rate.
type freshRow struct {
	config   string
	linger   time.Duration
	share    float64
	target   float64 // records/s asked for
	records  int64
	produced float64 // records/s achieved by the producer
	drain    float64 // seconds from the last record produced to all applied
	// p50, p99 and max of (commit time of the row - Kafka timestamp), ms.
	p50, p99, max float64
	cpu           float64 // the consumer's CPU seconds over the rate, drain included
	load          string  // load average at the end of the rate
}

// freshness is scenario 6: for the default config and the low-latency one,
// a consumer follows its own topic while this process produces new keys at
// each steady rate; afterwards every row's commit time is read from its
// xmin (track_commit_timestamp) and set against its record's timestamp.
func (e *env) freshness(ctx context.Context, rep *report, progress func(string, ...any)) error {
	var on string
	if err := e.pool.QueryRow(ctx, "SHOW track_commit_timestamp").Scan(&on); err != nil {
		return fmt.Errorf("scenario 6: %w", err)
	}
	if on != "on" {
		return errors.New("scenario 6 needs track_commit_timestamp = on in the server (the throwaway server gets it)")
	}
	s1 := rep.find("1 first load")
	if s1 == nil {
		return errors.New("scenario 6 needs scenario 1's rate")
	}
	base := s1.rate()
	src := newSource(e.o.seed+2, e.o, false)
	for _, p := range []config.Pipeline{e.fresh, e.freshLL} {
		name := "default"
		if p.Name == e.freshLL.Name {
			name = "low latency"
		}
		progress("scenario 6: freshness, %s config (linger %s), rates %v of %.0f records/s, %s each", name, p.Batch.Linger, freshRates, base, e.o.freshFor)
		rows, ph, err := e.freshRun(ctx, p, name, base, src)
		if err != nil {
			return fmt.Errorf("scenario 6 (%s): %w", name, err)
		}
		rep.fresh = append(rep.fresh, rows...)
		rep.freshPeakRSS = append(rep.freshPeakRSS, ph.PeakRSS)
	}
	return nil
}

// stamps are the Kafka timestamps of the records produced, in ms, by
// partition and offset.
type stamps struct {
	mu sync.Mutex
	ts map[int32][]int64
}

func (s *stamps) set(p int32, off, ms int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.ts[p]
	if off >= int64(len(t)) {
		t = append(t, make([]int64, off+1-int64(len(t)))...)
	}
	t[off] = ms
	s.ts[p] = t
}

func (e *env) freshRun(ctx context.Context, p config.Pipeline, name string, base float64, src *source) ([]freshRow, phase, error) {
	var ph phase
	topic := p.Topics[0]
	if err := e.settle(ctx); err != nil {
		return nil, ph, err
	}
	fc, err := e.startFollower(ctx, childSpec{Kind: kindConsume, Name: "6 freshness " + name, Pipeline: p, Group: e.groupFresh,
		Connections: e.o.connections, Follow: true, CPUProfile: profile(e.o.cpuprofile, "s6-"+p.Name)})
	if err != nil {
		return nil, ph, err
	}
	defer fc.kill()

	st := &stamps{ts: map[int32][]int64{}}
	var rows []freshRow
	var bounds []map[int32]int64 // end offsets after each rate
	for _, share := range freshRates {
		r := freshRow{config: name, linger: p.Batch.Linger, share: share, target: share * base}
		cpu0 := fc.cpu()
		n, took, err := e.produceSteady(ctx, topic, r.target, e.o.freshFor, src, st)
		if err != nil {
			return nil, ph, err
		}
		r.records, r.produced = n, float64(n)/took.Seconds()
		t0 := time.Now()
		ends, err := e.endOffsets(ctx, topic)
		if err != nil {
			return nil, ph, err
		}
		if err := e.waitApplied(ctx, e.groupFresh, topic, ends, fc); err != nil {
			return nil, ph, err
		}
		r.drain = time.Since(t0).Seconds()
		r.cpu = fc.cpu() - cpu0
		r.load = loadAvg()
		bounds = append(bounds, ends)
		rows = append(rows, r)
		fmt.Fprintf(e.stderr, "          %.0f%%: %d records at %.0f records/s (asked %.0f), all applied %.2fs after the last, consumer CPU %.1fs, load %s\n",
			100*share, n, r.produced, r.target, r.drain, r.cpu, r.load)
	}
	if ph, err = fc.stop(); err != nil {
		return nil, ph, err
	}

	// Every row of this topic, with the commit time of the transaction
	// that wrote it (each key is new, so each row was written once).
	lat := make([][]float64, len(rows))
	q := fmt.Sprintf(`SELECT _src_partition, _src_offset, (extract(epoch FROM pg_xact_commit_timestamp(xmin)) * 1e6)::bigint
FROM %s WHERE _src_topic = $1`, pgx.Identifier{p.Schema, p.Table}.Sanitize())
	res, err := e.pool.Query(ctx, q, topic)
	if err != nil {
		return nil, ph, fmt.Errorf("read commit times: %w", err)
	}
	var part int32
	var off int64
	var commitUS *int64
	var seen int64
	_, err = pgx.ForEachRow(res, []any{&part, &off, &commitUS}, func() error {
		if commitUS == nil {
			return fmt.Errorf("no commit time for partition %d offset %d", part, off)
		}
		i := slices.IndexFunc(bounds, func(b map[int32]int64) bool { return off < b[part] })
		ts := st.ts[part]
		if i < 0 || off >= int64(len(ts)) || ts[off] == 0 {
			return fmt.Errorf("row of partition %d offset %d was not produced by this scenario", part, off)
		}
		lat[i] = append(lat[i], float64(*commitUS-ts[off]*1000)/1000)
		seen++
		return nil
	})
	if err != nil {
		return nil, ph, fmt.Errorf("read commit times: %w", err)
	}
	var want int64
	for i := range rows {
		want += rows[i].records
		l := lat[i]
		slices.Sort(l)
		if len(l) == 0 {
			continue
		}
		at := func(q float64) float64 { return l[max(0, min(int(q*float64(len(l))+0.999999)-1, len(l)-1))] }
		rows[i].p50, rows[i].p99, rows[i].max = at(0.50), at(0.99), l[len(l)-1]
	}
	if seen != want {
		return nil, ph, fmt.Errorf("%d rows in the table, want %d", seen, want)
	}
	return rows, ph, nil
}

// produceSteady produces new keys to topic at rate records/s for d,
// recording each record's timestamp by its offset. It returns how many
// it produced and how long producing them (and flushing) took.
func (e *env) produceSteady(ctx context.Context, topic string, rate float64, d time.Duration, src *source, st *stamps) (int64, time.Duration, error) {
	var mu sync.Mutex
	var first error
	promise := func(r *kgo.Record, err error) {
		if err != nil {
			mu.Lock()
			first = cmpErr(first, err)
			mu.Unlock()
			return
		}
		st.set(r.Partition, r.Offset, r.Timestamp.UnixMilli())
	}
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	start := time.Now()
	var n int64
	for {
		var now time.Time
		select {
		case now = <-tick.C:
		case <-ctx.Done():
			return n, 0, ctx.Err()
		}
		el := now.Sub(start)
		if el > d {
			el = d
		}
		for due := int64(rate*el.Seconds()) - n; due > 0; due-- {
			k, v := src.fresh()
			e.producer.Produce(ctx, &kgo.Record{Topic: topic, Key: k, Value: v, Timestamp: time.Now()}, promise)
			n++
		}
		if el == d {
			break
		}
	}
	if err := e.producer.Flush(ctx); err != nil {
		return n, 0, fmt.Errorf("produce to %s: %w", topic, err)
	}
	took := time.Since(start)
	mu.Lock()
	defer mu.Unlock()
	if first != nil {
		return n, 0, fmt.Errorf("produce to %s: %w", topic, first)
	}
	return n, took, nil
}

// waitApplied waits until the ledger of group has applied every partition
// of topic up to ends.
func (e *env) waitApplied(ctx context.Context, group, topic string, ends map[int32]int64, fc *follower) error {
	deadline := time.Now().Add(e.o.timeout)
	for {
		applied := map[int32]int64{}
		res, err := e.pool.Query(ctx, "SELECT partition, applied_offset FROM idemsink.offsets WHERE group_id = $1 AND topic = $2", group, topic)
		if err != nil {
			return fmt.Errorf("read the ledger: %w", err)
		}
		var p int32
		var a int64
		if _, err := pgx.ForEachRow(res, []any{&p, &a}, func() error { applied[p] = a; return nil }); err != nil {
			return fmt.Errorf("read the ledger: %w", err)
		}
		done := true
		for p, end := range ends {
			if end > 0 && applied[p] < end-1 {
				done = false
			}
		}
		switch {
		case done:
			return nil
		case fc.exited():
			return errors.New("the consumer exited while records were waiting")
		case time.Now().After(deadline):
			return fmt.Errorf("records not applied after %s", e.o.timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// follower is a consumer child in follow mode.
type follower struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *bufio.Reader
}

func (e *env) startFollower(ctx context.Context, spec childSpec) (*follower, error) {
	spec.Brokers, spec.DatabaseURL, spec.Verbose, spec.Timeout = e.brokers, e.dsn, e.o.verbose, e.o.timeout
	spec.ServerPID = e.serverPID()
	b, err := json.Marshal(spec)
	if err != nil {
		return nil, err
	}
	f := &follower{cmd: exec.CommandContext(ctx, e.exe)}
	f.cmd.Env = append(os.Environ(), childEnv+"="+string(b))
	f.cmd.Stderr = e.stderr
	if f.stdin, err = f.cmd.StdinPipe(); err != nil {
		return nil, err
	}
	stdout, err := f.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	f.out = bufio.NewReader(stdout)
	if err := f.cmd.Start(); err != nil {
		return nil, fmt.Errorf("child process: %w", err)
	}
	line, err := f.out.ReadString('\n')
	if err != nil || line != "ready\n" {
		f.kill()
		return nil, fmt.Errorf("child process did not get ready: %q, %v", line, err)
	}
	return f, nil
}

// cpu returns the child's CPU seconds so far, user and system.
func (f *follower) cpu() float64 {
	t, _ := procTicks(f.cmd.Process.Pid, false)
	return float64(t) / clockTicks
}

// exited reports whether the child has ended (a zombie counts).
func (f *follower) exited() bool {
	st, ok := procStat(f.cmd.Process.Pid)
	return !ok || len(st) == 0 || st[0] == "Z"
}

// stop closes the child's stdin, which ends its follow, and returns what
// it measured.
func (f *follower) stop() (phase, error) {
	var ph phase
	if err := f.stdin.Close(); err != nil {
		return ph, err
	}
	b, rerr := io.ReadAll(f.out)
	werr := f.cmd.Wait()
	f.cmd = nil
	if err := errors.Join(rerr, werr); err != nil {
		return ph, fmt.Errorf("child process: %w", err)
	}
	var phases []phase
	if err := json.Unmarshal(b, &phases); err != nil || len(phases) != 1 {
		return ph, fmt.Errorf("child process: unreadable result %q: %v", b, err)
	}
	return phases[0], nil
}

// kill ends a child that stop did not.
func (f *follower) kill() {
	if f.cmd != nil && f.cmd.Process != nil {
		_ = f.cmd.Process.Kill()
		_ = f.cmd.Wait()
		f.cmd = nil
	}
}
