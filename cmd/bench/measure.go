package main

import (
	"bufio"
	"context"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// sample is a point in time of this process and the database server.
type sample struct {
	at        time.Time
	cpu       float64
	serverCPU float64
}

func take(serverPID int) sample {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru) // cannot fail for RUSAGE_SELF
	cpu := time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
	return sample{at: time.Now(), cpu: cpu, serverCPU: serverCPU(serverPID)}
}

type span struct{ Wall, CPU, ServerCPU float64 }

func (s sample) since(s0 sample) span {
	sp := span{Wall: s.at.Sub(s0.at).Seconds(), CPU: s.cpu - s0.cpu, ServerCPU: -1}
	if s.serverCPU >= 0 && s0.serverCPU >= 0 {
		sp.ServerCPU = s.serverCPU - s0.serverCPU
	}
	return sp
}

// peakRSS returns this process's peak resident set (VmHWM), in bytes.
func peakRSS() int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return -1
	}
	defer f.Close() //nolint:errcheck // read-only
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				return -1
			}
			return kb << 10
		}
	}
	return -1
}

// txLatency is a pgx tracer that times each transaction from BEGIN to the
// end of COMMIT: one batch applied, ledger included.
type txLatency struct {
	mu    sync.Mutex
	begun map[*pgx.Conn]time.Time
	lat   []time.Duration
}

func newTxLatency() *txLatency { return &txLatency{begun: map[*pgx.Conn]time.Time{}} }

type commitKey struct{}

func (t *txLatency) TraceQueryStart(ctx context.Context, conn *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	switch {
	case strings.HasPrefix(d.SQL, "begin"):
		t.mu.Lock()
		t.begun[conn] = time.Now()
		t.mu.Unlock()
	case d.SQL == "commit":
		return context.WithValue(ctx, commitKey{}, true)
	}
	return ctx
}

func (t *txLatency) TraceQueryEnd(ctx context.Context, conn *pgx.Conn, d pgx.TraceQueryEndData) {
	if ctx.Value(commitKey{}) == nil || d.Err != nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if b, ok := t.begun[conn]; ok {
		t.lat = append(t.lat, time.Since(b))
		delete(t.begun, conn)
	}
}

func (t *txLatency) add(d time.Duration) {
	t.mu.Lock()
	t.lat = append(t.lat, d)
	t.mu.Unlock()
}

// percentiles returns the nearest-rank p50 and p99, in milliseconds.
func (t *txLatency) percentiles() (p50, p99 float64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.lat) == 0 {
		return 0, 0
	}
	s := slices.Clone(t.lat)
	slices.Sort(s)
	at := func(q float64) float64 {
		i := int(q*float64(len(s))+0.999999) - 1
		return float64(s[max(0, min(i, len(s)-1))].Microseconds()) / 1000
	}
	return at(0.50), at(0.99)
}

// total returns the sum of the transactions' times, in seconds.
func (t *txLatency) total() float64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	var sum time.Duration
	for _, d := range t.lat {
		sum += d
	}
	return sum.Seconds()
}
