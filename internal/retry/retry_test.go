package retry

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestBackoff(t *testing.T) {
	b := Backoff{100 * time.Millisecond, time.Second}
	for attempt, want := range map[int]time.Duration{0: 100 * time.Millisecond, 1: 100 * time.Millisecond, 2: 200 * time.Millisecond,
		4: 800 * time.Millisecond, 5: time.Second, 100: time.Second} {
		if got := b.After(attempt); got != want {
			t.Errorf("After(%d) = %v, want %v", attempt, got, want)
		}
	}
}

func TestDo(t *testing.T) {
	calls := 0
	err := Do(context.Background(), time.Second, Backoff{time.Millisecond, time.Millisecond}, func(context.Context) error {
		if calls++; calls < 3 {
			return errors.New("not yet")
		}
		return nil
	}, nil)
	if err != nil || calls != 3 {
		t.Fatalf("Do: %v after %d calls, want nil after 3", err, calls)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	want := errors.New("down")
	if err := Do(ctx, time.Second, Backoff{time.Hour, time.Hour}, func(context.Context) error { return want }, nil); !errors.Is(err, want) {
		t.Fatalf("Do with a canceled context: %v, want the last error", err)
	}
}

// An error wrapped by Stop ends Do at once, unwrapped, without a wait.
func TestDoStop(t *testing.T) {
	calls, fails := 0, 0
	want := errors.New("bad input")
	err := Do(context.Background(), time.Second, Backoff{time.Hour, time.Hour}, func(context.Context) error {
		calls++
		return Stop(want)
	}, func(int, error, time.Duration) { fails++ })
	if err != want || calls != 1 || fails != 0 {
		t.Fatalf("Do with Stop: %v after %d calls and %d failures heard; want %v after 1 and 0", err, calls, fails, want)
	}
}
