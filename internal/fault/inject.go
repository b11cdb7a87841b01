//go:build faultinject

package fault

import (
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// Enabled reports whether this binary was built with the fault injector.
const Enabled = true

// Injector decides at each point whether to crash.
type Injector struct {
	prob map[string]float64
	kill func()
}

// Parse reads a specification; an empty one gives an injector that never
// fires. An unknown point or a probability outside [0,1] is an error.
func Parse(spec string) (*Injector, error) {
	in := &Injector{prob: map[string]float64{}, kill: func() {
		// SIGKILL, not os.Exit: no deferred function, no flush, no
		// goodbye to the group, exactly like a crash.
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {}
	}}
	for item := range strings.SplitSeq(spec, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		name, p, ok := strings.Cut(item, "=")
		if !ok {
			p = "1"
		}
		known := false
		for _, k := range Points {
			known = known || k == name
		}
		if !known {
			return nil, fmt.Errorf("%s: unknown fault point %q (known: %s)", Env, name, strings.Join(Points, ", "))
		}
		f, err := strconv.ParseFloat(p, 64)
		if err != nil || f < 0 || f > 1 {
			return nil, fmt.Errorf("%s: probability %q of %s is not in [0,1]", Env, p, name)
		}
		in.prob[name] = f
	}
	return in, nil
}

// Hit crashes the process with the point's probability.
func (in *Injector) Hit(point string) {
	if in == nil {
		return
	}
	if p := in.prob[point]; p > 0 && rand.Float64() < p {
		fmt.Fprintf(os.Stderr, "fault: crashing at %s\n", point)
		in.kill()
	}
}
