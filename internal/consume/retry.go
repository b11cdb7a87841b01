package consume

import (
	"context"
	"time"
)

// backoff is the wait before a retry: base, doubling with each attempt in
// a row, up to limit.
type backoff struct{ base, limit time.Duration }

// after returns the wait before retry number attempt (1 for the first).
func (b backoff) after(attempt int) time.Duration {
	return min(b.base<<min(max(attempt-1, 0), 20), b.limit)
}

// retry calls fn until it succeeds, giving each attempt its own timeout
// and waiting b.after(n) between attempts; the wait ends early when ctx
// does, and then retry returns the last error. onFail, if set, hears of
// each failure before the wait. Every database operation the consumer runs
// in a loop of its own (a claim on assignment) goes through here; batch
// applies are retried by the apply queue (see protocol.go), never in a loop
// that blocks a rebalance.
func retry(ctx context.Context, timeout time.Duration, b backoff, fn func(context.Context) error, onFail func(attempt int, err error, wait time.Duration)) error {
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, timeout)
		err := fn(actx)
		cancel()
		if err == nil {
			return nil
		}
		wait := b.after(attempt)
		if onFail != nil {
			onFail(attempt, err, wait)
		}
		if !sleep(ctx, wait) {
			return err
		}
	}
}

// sleep waits for d, or until ctx ends; it reports whether it waited the
// whole time.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
