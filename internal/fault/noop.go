//go:build !faultinject

package fault

import (
	"fmt"
	"os"
)

// Enabled reports whether this binary was built with the fault injector.
const Enabled = false

// Injector never fires in a build without the faultinject tag.
type Injector struct{}

// Parse ignores the specification: a release binary has no fault points.
// A non-empty one is reported on stderr, so that a torture run on a binary
// built without the tag is noticed instead of passing without a crash.
func Parse(spec string) (*Injector, error) {
	if spec != "" {
		fmt.Fprintf(os.Stderr, "fault: %s ignored: built without -tags faultinject\n", Env)
	}
	return &Injector{}, nil
}

// Hit does nothing.
func (*Injector) Hit(string) {}
