// Package waittest waits on conditions in tests: a condition polled on a
// ticker until it holds or a deadline passes, never a bare sleep. Every
// test package uses it instead of a loop of its own.
package waittest

import (
	"testing"
	"time"
)

// Interval is how often a condition is polled.
const Interval = 10 * time.Millisecond

// For polls cond until it holds, failing the test at the deadline.
func For(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	Describe(t, d, cond, func() string { return what })
}

// Describe is For with a description made at the deadline, so that the
// failure can tell the last state seen.
func Describe(t testing.TB, d time.Duration, cond func() bool, what func() string) {
	t.Helper()
	if !Until(d, cond) {
		t.Fatalf("timed out after %s waiting for %s", d, what())
	}
}

// Until polls cond until it holds (true) or the deadline passes (false).
// It suits waits whose timeout is an outcome, and goroutines, which must
// not call t.Fatal.
func Until(d time.Duration, cond func() bool) bool {
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	tick := time.NewTicker(Interval)
	defer tick.Stop()
	for !cond() {
		select {
		case <-deadline.C:
			return cond()
		case <-tick.C:
		}
	}
	return true
}

// Quiet waits until count has stayed the same for n polls in a row, and
// fails the test if it keeps changing until the deadline: a wait for
// something to stop happening (log lines, retries).
func Quiet(t testing.TB, d time.Duration, n int, what string, count func() int) {
	t.Helper()
	last, same := count(), 0
	For(t, d, what, func() bool {
		c := count()
		if c == last {
			same++
		} else {
			last, same = c, 0
		}
		return same >= n
	})
}
