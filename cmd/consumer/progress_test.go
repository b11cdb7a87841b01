package main

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"
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

// On an injected clock: while the database stalls, the line says so and
// for how long; the rate, and so the time left, leave the stall out.
func TestProgressStall(t *testing.T) {
	type step struct {
		at   time.Duration // since the start
		read int           // records read at that moment
		wait string        // "start" or "end" a wait on the database
	}
	for _, tc := range []struct {
		name  string
		steps []step
		at    time.Duration // when tick runs
		want  string        // the log line it prints
	}{
		{name: "steady", steps: []step{{at: 10 * time.Second, read: 100}}, at: 20 * time.Second,
			want: `msg="replay: read orders" records=100 of=1000 rate=5/s left=3m0s`},
		{name: "a short wait is work", steps: []step{{at: 10 * time.Second, read: 100}, {at: 10 * time.Second, wait: "start"}},
			at: 14 * time.Second, want: `msg="replay: read orders" records=100 of=1000 rate=7/s left=2m6s`},
		{name: "stalled now", steps: []step{{at: 10 * time.Second, read: 100}, {at: 10 * time.Second, wait: "start"}},
			at: time.Hour, want: `msg="replay: read orders: waiting on the database" records=100 of=1000 rate=7/s waiting=59m50s left=2m15s`},
		{name: "after a stall", steps: []step{{at: 10 * time.Second, read: 100}, {at: 10 * time.Second, wait: "start"},
			{at: time.Hour, wait: "end"}, {at: time.Hour + 5*time.Second, read: 100}}, at: time.Hour + 20*time.Second,
			want: `msg="replay: read orders" records=200 of=1000 rate=6/s left=2m20s`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t0 := time.Date(2026, 11, 2, 0, 0, 0, 0, time.UTC)
			now := t0
			var logs bytes.Buffer
			log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
				if a.Key == slog.TimeKey || a.Key == slog.LevelKey {
					return slog.Attr{}
				}
				return a
			}}))
			p := newProgressClock(log, "replay: read orders", 1000, func() time.Time { return now })
			var end func()
			for _, s := range tc.steps {
				now = t0.Add(s.at)
				p.last = now // only tick's line is checked: add logs none
				switch s.wait {
				case "start":
					end = p.Wait("the database")
				case "end":
					end()
				}
				p.Add(s.read)
			}
			now = t0.Add(tc.at)
			p.last = time.Time{} // a line is due
			p.tick()
			if got := strings.TrimSpace(logs.String()); got != tc.want {
				t.Errorf("tick logged\n%s\nwant\n%s", got, tc.want)
			}
		})
	}
}
