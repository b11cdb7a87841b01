package consume

import (
	"testing"
	"time"

	"github.com/idemsink/idemsink/internal/retry"
)

// Each case runs steps on a fresh partition and checks where it stands.
func TestPartitionState(t *testing.T) {
	t0 := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	const base, limit = 100 * time.Millisecond, time.Second
	type want struct{ seen, applied, committed int64 }
	for _, c := range []struct {
		name  string
		steps func(t *testing.T, p *partition)
		want  want
	}{
		{"new", func(*testing.T, *partition) {}, want{-1, -1, -1}},
		{"takes records above the ledger, skips redeliveries", func(t *testing.T, p *partition) {
			p.resume(4, -1)
			for off, fresh := range map[int64]bool{3: false, 4: false, 5: true, 9: true} {
				if got := p.take(off); got != fresh {
					t.Errorf("take(%d) = %v, want %v", off, got, fresh)
				}
			}
		}, want{9, 4, -1}},
		{"resume: the ledger ahead of Kafka wins", func(t *testing.T, p *partition) {
			if from, skipped := p.resume(9, 5); from != 10 || skipped != 5 {
				t.Errorf("resume(9, 5) = %d, %d; want 10, 5", from, skipped)
			}
		}, want{9, 9, 5}},
		{"resume: no Kafka commit, ledger at 2", func(t *testing.T, p *partition) {
			if from, skipped := p.resume(2, -1); from != 3 || skipped != 3 {
				t.Errorf("resume(2, -1) = %d, %d; want 3, 3", from, skipped)
			}
		}, want{2, 2, -1}},
		{"resume: Kafka at the ledger keeps Kafka's position", func(t *testing.T, p *partition) {
			if from, _ := p.resume(9, 10); from != -1 {
				t.Errorf("resume(9, 10) = %d; want -1", from)
			}
		}, want{9, 9, 10}},
		{"resume: nothing anywhere", func(t *testing.T, p *partition) {
			if from, _ := p.resume(-1, -1); from != -1 {
				t.Errorf("resume(-1, -1) = %d; want -1", from)
			}
		}, want{-1, -1, -1}},
		{"the Kafka commit follows the ledger, forward only", func(t *testing.T, p *partition) {
			if _, ok := p.toCommit(); ok {
				t.Error("nothing applied: want nothing to commit")
			}
			p.take(7)
			p.advance(7)
			next, ok := p.toCommit()
			if !ok || next != 8 {
				t.Errorf("toCommit = %d, %v; want 8", next, ok)
			}
			p.commitDone(8)
			p.advance(5) // an older watermark never moves it back
			if _, ok := p.toCommit(); ok {
				t.Error("committed at the ledger: want nothing to commit")
			}
		}, want{7, 7, 8}},
		{"a fence drops back to the ledger and ignores records until the resync", func(t *testing.T, p *partition) {
			p.resume(3, 4)
			p.take(10)
			p.fence(5, true, t0, retry.Backoff{Base: base, Limit: limit})
			if p.take(11) {
				t.Error("take after a fence: want false until the resync")
			}
			if _, _, ok := p.resync(t0.Add(base - 1)); ok {
				t.Error("resync before the wait is over")
			}
			if from, was, ok := p.resync(t0.Add(base)); !ok || from != 6 || was != fenced {
				t.Errorf("resync = %d, %v, %v; want 6, fenced", from, was, ok)
			}
			if !p.take(6) {
				t.Error("take(6) after the resync: want true")
			}
		}, want{6, 5, 4}},
		{"a registry outage holds the partition back at its record; what was taken before applies", func(t *testing.T, p *partition) {
			p.resume(3, 4)
			for off := int64(4); off <= 6; off++ {
				p.take(off)
			}
			p.holdBack(6, t0, retry.Backoff{Base: base, Limit: limit})
			if p.take(7) {
				t.Error("take after a hold-back: want false until the resync")
			}
			if p.seen != 5 {
				t.Errorf("seen after holding back at 6: %d, want 5 (watermarks stop before the record)", p.seen)
			}
			if _, _, ok := p.resync(t0.Add(base - 1)); ok {
				t.Error("resync before the wait is over")
			}
			p.advance(5) // the batch holding 4 and 5 applies meanwhile
			if from, was, ok := p.resync(t0.Add(base)); !ok || from != 6 || was != heldBack {
				t.Errorf("resync = %d, %v, %v; want 6, the held-back record", from, was, ok)
			}
			if !p.take(6) {
				t.Error("take(6) after the resync: want true")
			}
		}, want{6, 5, 4}},
		{"a hold-back before anything applied reads from the record, not the ledger", func(t *testing.T, p *partition) {
			p.resume(3, 4)
			p.take(4)
			p.take(5)
			p.holdBack(5, t0, retry.Backoff{Base: base, Limit: limit})
			if from, _, ok := p.resync(t0.Add(base)); !ok || from != 5 {
				t.Errorf("resync = %d, %v; want 5", from, ok)
			}
		}, want{4, 3, 4}},
		{"a fence without the ledger's offset keeps the applied one", func(t *testing.T, p *partition) {
			p.resume(3, -1)
			p.take(8)
			p.fence(0, false, t0, retry.Backoff{Base: base, Limit: limit})
		}, want{3, 3, -1}},
		{"the wait doubles with fences in a row, up to the limit, and resets on success", func(t *testing.T, p *partition) {
			for i, wait := range []time.Duration{base, 2 * base, 4 * base, 8 * base, limit, limit} {
				p.fence(-1, true, t0, retry.Backoff{Base: base, Limit: limit})
				if got := p.resyncAt.Sub(t0); got != wait {
					t.Errorf("fence %d: wait %v, want %v", i+1, got, wait)
				}
				p.resync(p.resyncAt)
			}
			p.advance(0)
			p.fence(0, true, t0, retry.Backoff{Base: base, Limit: limit})
			if got := p.resyncAt.Sub(t0); got != base {
				t.Errorf("after an applied batch: wait %v, want %v", got, base)
			}
			p.resync(p.resyncAt)
		}, want{0, 0, -1}},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := newPartition()
			c.steps(t, p)
			if got := (want{p.seen, p.applied, p.committed}); got != c.want {
				t.Errorf("seen, applied, committed = %+v, want %+v", got, c.want)
			}
		})
	}
}

func TestPartitionLag(t *testing.T) {
	for _, c := range []struct {
		end, applied, want int64
	}{
		{-1, 5, -1}, // no fetch yet
		{0, -1, 0},  // empty log
		{10, -1, 10},
		{10, 9, 0},
		{10, 4, 5},
		{10, 12, 0}, // a stale high watermark never gives a negative lag
	} {
		p := newPartition()
		p.end, p.applied = c.end, c.applied
		if got := p.lag(); got != c.want {
			t.Errorf("end %d, applied %d: lag %d, want %d", c.end, c.applied, got, c.want)
		}
	}
}

// A hold-back for the Schema Registry lasts until the held-back record, or
// one after it, decodes: not at the resync, and not at a record before it
// read again after a fence.
func TestPartitionRegistryHold(t *testing.T) {
	t0 := time.Unix(0, 0)
	p := newPartition()
	p.resume(3, 4)
	p.take(4)
	p.holdBack(5, t0, retry.Backoff{Base: time.Second, Limit: time.Second})
	if p.registryHold != 5 {
		t.Fatalf("registryHold %d after holding back at 5", p.registryHold)
	}
	p.resync(t0.Add(time.Second))
	p.decoded(4)
	if p.registryHold != 5 {
		t.Errorf("hold over after decoding 4, before the held-back record")
	}
	p.decoded(5)
	if p.registryHold != -1 {
		t.Errorf("registryHold %d after decoding the held-back record, want -1", p.registryHold)
	}
}
