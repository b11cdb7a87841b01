package main

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

// Away from a terminal, progress is a log line with the count, the total
// and the rate, not a bar drawn into the log.
func TestProgressLogsAwayFromATerminal(t *testing.T) {
	var stderr, logs bytes.Buffer
	p := newProgress(&stderr, slog.New(slog.NewTextHandler(&logs, nil)), "replay: read orders", 40)
	if p.bar != nil {
		t.Fatal("a bar on a buffer")
	}
	for range 40 {
		p.Add(1)
	}
	p.Done()
	if stderr.Len() != 0 || !strings.Contains(logs.String(), `msg="replay: read orders: done" records=40 of=40 rate=`) {
		t.Errorf("stderr %q, log %q", stderr.String(), logs.String())
	}
}
