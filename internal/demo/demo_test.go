package demo_test

import (
	"bytes"
	"context"
	"regexp"
	"strings"
	"testing"

	"github.com/idemsink/idemsink/internal/demo"
	"github.com/idemsink/idemsink/internal/pglocal"
)

// The demo prints the seed article's table with the figures the pipeline
// guarantees, and its own check of the final table passes.
func TestDemo(t *testing.T) {
	if err := pglocal.Available(); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := demo.Run(context.Background(), &out, nil); err != nil {
		t.Fatalf("demo: %v\n%s", err, out.String())
	}
	spaces := regexp.MustCompile(`\s+`)
	text := spaces.ReplaceAllString(out.String(), " ")
	for _, want := range []string{
		// Run, input, new, updated, unchanged, stale, deleted, in-batch dup, skipped, dead, written, total
		"1st 500 records 500 0 0 0 0 0 0 0 500 500",
		"2nd (re-run) the same 500 0 0 0 0 0 0 500 0 0 500",
		"3rd (replay) the same 500, ledger reset 0 0 500 0 0 0 0 0 0 500",
		"5th (deletes) 5 tombstones, 1 late 0 0 0 0 5 0 0 0 0 515",
		"holds exactly the newest version of each of the 515 live keys",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("demo output lacks %q:\n%s", want, out.String())
		}
	}
	if !regexp.MustCompile(`4th \(new data\) 42: 20 new, 12 upd, 5 dup, 5 old 20 \d+ \d+ \d+ 0 \d+ 0 0 \d+ 520`).MatchString(text) {
		t.Errorf("4th run line unexpected:\n%s", out.String())
	}
}
