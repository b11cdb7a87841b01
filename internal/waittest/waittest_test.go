package waittest

import (
	"sync/atomic"
	"testing"
	"time"
)

func TestUntil(t *testing.T) {
	var n atomic.Int32
	if !Until(5*time.Second, func() bool { return n.Add(1) >= 3 }) {
		t.Fatal("a condition that comes true was reported as timed out")
	}
	if Until(50*time.Millisecond, func() bool { return false }) {
		t.Fatal("a condition that never holds was reported as met")
	}
}

func TestQuiet(t *testing.T) {
	var n atomic.Int32
	// Changes three times, then stays.
	Quiet(t, 5*time.Second, 5, "the count to settle", func() int {
		if v := n.Load(); v < 3 {
			n.Add(1)
		}
		return int(n.Load())
	})
	if n.Load() != 3 {
		t.Fatalf("count %d, want 3", n.Load())
	}
}
