package main

import (
	"math/rand/v2"

	"github.com/idemsink/idemsink/internal/gen"
)

// source extends the gen package's order-line generator with what the
// benchmark needs beyond it: a bounded key space, and duplicates that
// repeat the latest event of a key byte for byte.
type source struct {
	g    *gen.Generator
	rng  *rand.Rand
	o    options
	seed uint64
	// keep says whether to remember each key's latest event; the backlogs
	// have no duplicates and need not hold millions of values.
	keep   bool
	keys   int64    // keys generated so far, numbered from 0
	latest [][]byte // by key number, when keep
	kinds  [4]int64 // events by gen.Kind
}

// generatorKeys bounds one gen.Generator: it remembers every version of
// every key, so a backlog of millions is made by several in turn, each
// with its own range of order ids.
const generatorKeys = 1_000_000

func newSource(seed uint64, o options, keep bool) *source {
	s := &source{rng: rand.New(rand.NewPCG(seed, 0x5eed)), o: o, seed: seed, keep: keep}
	s.g = s.generator()
	return s
}

func (s *source) generator() *gen.Generator {
	// Key numbers map to (order_id, line_no) as gen numbers them:
	// order_id = n/4 + 1, line_no = n%4 + 1.
	return gen.New(gen.Options{Seed: s.seed + uint64(s.keys), FirstOrder: s.keys, Days: s.o.days, LateRate: s.o.late, WideRate: s.o.wide})
}

func keyNumber(k gen.Key) int64 { return (k.OrderID-1)*4 + int64(k.LineNo-1) }

// fresh returns an event for a new key.
func (s *source) fresh() (key, value []byte) {
	if !s.keep && s.keys > 0 && s.keys%generatorKeys == 0 {
		s.g = s.generator()
	}
	return s.emit(s.g.NextNew())
}

// mix returns an update, a duplicate or a new key, by the configured
// shares; new keys become updates once the key space is full.
func (s *source) mix() (key, value []byte) {
	r := s.rng.Float64()
	switch {
	case s.keys > 0 && r < s.o.update:
		return s.emit(s.g.NextUpdate())
	case s.keys > 0 && s.keep && r < s.o.update+s.o.dup:
		n := s.rng.Int64N(s.keys)
		s.kinds[gen.Duplicate]++
		return gen.KafkaKey(gen.Key{OrderID: n/4 + 1, LineNo: int32(n%4) + 1}), s.latest[n]
	case s.o.keys > 0 && s.keys >= int64(s.o.keys):
		return s.emit(s.g.NextUpdate())
	}
	return s.fresh()
}

func (s *source) emit(ev gen.Event) (key, value []byte) {
	s.kinds[ev.Kind]++
	n := keyNumber(ev.Key())
	if ev.Kind == gen.Fresh {
		s.keys++
	}
	if s.keep {
		if n >= int64(len(s.latest)) {
			s.latest = append(s.latest, make([][]byte, n+1-int64(len(s.latest)))...)
		}
		s.latest[n] = ev.Value
	}
	return gen.KafkaKey(ev.Key()), ev.Value
}
