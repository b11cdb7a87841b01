//go:build faultinject

package fault

import (
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		spec, wantErr string
	}{
		{spec: ""},
		{spec: "after-stage=0.5, after-upsert"},
		{spec: "after-lunch=1", wantErr: `unknown fault point "after-lunch"`},
		{spec: "after-stage=2", wantErr: `probability "2" of after-stage is not in [0,1]`},
		{spec: "after-stage=x", wantErr: `probability "x" of after-stage is not in [0,1]`},
	} {
		_, err := Parse(tc.spec)
		if tc.wantErr == "" && err != nil {
			t.Errorf("Parse(%q): %v", tc.spec, err)
		}
		if tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
			t.Errorf("Parse(%q): %v, want error containing %q", tc.spec, err, tc.wantErr)
		}
	}
}

func TestHit(t *testing.T) {
	in, err := Parse("after-stage=1,after-upsert=0")
	if err != nil {
		t.Fatal(err)
	}
	var hits []string
	in.kill = func() { hits = append(hits, "killed") }
	in.Hit("after-upsert")
	in.Hit("after-pg-commit")
	if len(hits) != 0 {
		t.Fatalf("points with probability 0 fired: %v", hits)
	}
	in.Hit("after-stage")
	if len(hits) != 1 {
		t.Fatalf("a point with probability 1 fired %d times, want 1", len(hits))
	}
	var none *Injector
	none.Hit("after-stage") // a nil injector is valid and never fires
}
