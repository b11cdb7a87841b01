package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"

	"github.com/idemsink/idemsink/internal/kafka"
)

const (
	// progressEvery is how often progress is logged when stderr is no
	// terminal.
	progressEvery = 10 * time.Second
	// stallAfter is how long a wait on the database is ordinary work (an
	// apply takes that long); beyond it the wait is a stall: the progress
	// line says so, and the rate leaves it out.
	stallAfter = 5 * time.Second
	// tickEvery is how often a stall is noticed and the bar redrawn.
	tickEvery = time.Second
)

// progress reports long work: a bar when stderr is a terminal, else a log
// line every progressEvery with the records read, the rate and the time
// left. While the work waits on the database for longer than stallAfter,
// it says so and for how long, and the rate (and so the time left) counts
// only the time spent working.
type progress struct {
	bar  *progressbar.ProgressBar
	log  *slog.Logger
	what string
	now  func() time.Time
	stop chan struct{} // closed by done: ends the ticker

	mu        sync.Mutex // guards the fields below: add and wait run on the worker, tick on the ticker
	total     int64
	n         int64
	start     time.Time
	last      time.Time     // the last log line
	stalled   time.Duration // of the waits that ended, the part beyond stallAfter
	waitSince time.Time     // zero unless waiting
	waitOn    string
}

// meter is the progress of a command's long reads, for internal/replay
// and internal/verify.
func (e *env) meter(what string, total int64) kafka.Meter {
	return newProgress(e.stderr, e.log, what, total)
}

func newProgress(stderr io.Writer, log *slog.Logger, what string, total int64) *progress {
	p := newProgressClock(log, what, total, time.Now)
	if f, ok := stderr.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		// The bar's own time left would count a stall; ours is in its
		// description.
		p.bar = progressbar.NewOptions64(total, progressbar.OptionSetWriter(stderr), progressbar.OptionSetDescription(what),
			progressbar.OptionShowCount(), progressbar.OptionSetItsString("rec"),
			progressbar.OptionThrottle(200*time.Millisecond), progressbar.OptionClearOnFinish())
	}
	go func() {
		t := time.NewTicker(tickEvery)
		defer t.Stop()
		for {
			select {
			case <-p.stop:
				return
			case <-t.C:
				p.tick()
			}
		}
	}()
	return p
}

// newProgressClock is a progress on the clock now, logging only, with no
// ticker: the tests call tick.
func newProgressClock(log *slog.Logger, what string, total int64, now func() time.Time) *progress {
	p := &progress{log: log, what: what, total: total, now: now, start: now(), stop: make(chan struct{})}
	p.last = p.start
	return p
}

// Add counts n more records read.
func (p *progress) Add(n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.n += int64(n)
	if p.bar != nil {
		_ = p.bar.Add(n) // drawing the bar can only fail to write to the terminal
		return
	}
	if now := p.now(); now.Sub(p.last) >= progressEvery {
		p.last = now
		p.log.Info(p.what, p.attrs(now)...)
	}
}

// Wait marks the start of a wait on what (the database); the function it
// returns marks its end.
func (p *progress) Wait(what string) (end func()) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.waitSince, p.waitOn = p.now(), what
	return func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		p.stalled += max(p.now().Sub(p.waitSince)-stallAfter, 0)
		p.waitSince = time.Time{}
	}
}

// tick logs a line (or redraws the bar) when one is due, so that a stall
// shows while nothing is read.
func (p *progress) tick() {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.now()
	if p.bar != nil {
		p.bar.Describe(p.describe(now))
		return
	}
	if now.Sub(p.last) >= progressEvery {
		p.last = now
		msg := p.what
		if p.stall(now) > 0 {
			msg += ": waiting on " + p.waitOn
		}
		p.log.Info(msg, p.attrs(now)...)
	}
}

// stall is how long the current wait has lasted, once it is a stall.
// Call it with p.mu held.
func (p *progress) stall(now time.Time) time.Duration {
	if p.waitSince.IsZero() || now.Sub(p.waitSince) <= stallAfter {
		return 0
	}
	return now.Sub(p.waitSince)
}

// rate is records per second of time spent working: the time since the
// start less the stalls. Call it with p.mu held.
func (p *progress) rate(now time.Time) float64 {
	stalled := p.stalled
	if s := p.stall(now); s > 0 {
		stalled += s - stallAfter
	}
	working := now.Sub(p.start) - stalled
	if working <= 0 {
		return 0
	}
	return float64(p.n) / working.Seconds()
}

// left is the time the rest should take at rate; 0 if unknown or none.
func (p *progress) left(rate float64) time.Duration {
	if rate <= 0 || p.total <= p.n {
		return 0
	}
	return (time.Duration(float64(p.total-p.n)/rate) * time.Second).Round(time.Second)
}

// attrs are the log line's attributes. Call it with p.mu held.
func (p *progress) attrs(now time.Time) []any {
	rate := p.rate(now)
	attrs := []any{"records", p.n, "of", p.total, "rate", fmt.Sprintf("%.0f/s", rate)}
	if s := p.stall(now); s > 0 {
		attrs = append(attrs, "waiting", s.Round(time.Second))
	}
	if left := p.left(rate); left > 0 {
		attrs = append(attrs, "left", left)
	}
	return attrs
}

// describe is the bar's description. Call it with p.mu held.
func (p *progress) describe(now time.Time) string {
	if s := p.stall(now); s > 0 {
		return fmt.Sprintf("%s (waiting on %s for %s)", p.what, p.waitOn, s.Round(time.Second))
	}
	if left := p.left(p.rate(now)); left > 0 {
		return fmt.Sprintf("%s (%s left)", p.what, left)
	}
	return p.what
}

// Done stops the ticker and ends the bar or logs the last line.
func (p *progress) Done() {
	close(p.stop)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.bar != nil {
		_ = p.bar.Finish()
		return
	}
	p.log.Info(p.what+": done", p.attrs(p.now())...)
}
