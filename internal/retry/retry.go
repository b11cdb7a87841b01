// Package retry is the one backoff and retry helper: the consumer's loops,
// its fence and registry hold-backs, the registry client and the replay
// command all wait the same way between attempts.
package retry

import (
	"context"
	"errors"
	"time"
)

// Backoff is the wait before a retry: Base, doubling with each failure in
// a row, up to Limit.
type Backoff struct{ Base, Limit time.Duration }

// After returns the wait after failure number n in a row (1 for the first).
func (b Backoff) After(n int) time.Duration {
	return min(b.Base<<min(max(n-1, 0), 20), b.Limit)
}

// Do calls fn until it succeeds or returns an error wrapped by Stop, giving each attempt its own timeout
// and waiting b.After(n) between attempts; the wait ends early when ctx
// does, and then Do returns the last error. onFail, if set, hears of
// each failure before the wait. Every database operation the consumer runs
// in a loop of its own (a claim on assignment) goes through here; batch
// applies are retried by the apply queue (see protocol.go), never in a loop
// that blocks a rebalance.
func Do(ctx context.Context, timeout time.Duration, b Backoff, fn func(context.Context) error, onFail func(attempt int, err error, wait time.Duration)) error {
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, timeout)
		err := fn(actx)
		cancel()
		if err == nil {
			return nil
		}
		var stop *stopError
		if errors.As(err, &stop) {
			return stop.err
		}
		wait := b.After(attempt)
		if onFail != nil {
			onFail(attempt, err, wait)
		}
		if !Sleep(ctx, wait) {
			return err
		}
	}
}

// Sleep waits for d, or until ctx ends; it reports whether it waited the
// whole time.
func Sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// Stop wraps an error that no retry can cure (bad input, the last attempt
// allowed): Do returns err at once, unwrapped.
func Stop(err error) error { return &stopError{err} }

type stopError struct{ err error }

func (e *stopError) Error() string { return e.err.Error() }
func (e *stopError) Unwrap() error { return e.err }
