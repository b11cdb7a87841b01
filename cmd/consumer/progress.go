package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"

	"github.com/idemsink/idemsink/internal/kafka"
)

// progressEvery is how often progress is logged when stderr is no terminal.
const progressEvery = 10 * time.Second

// progress reports long work: a bar when stderr is a terminal, else a log
// line every progressEvery with the records read, the rate and the time
// left.
type progress struct {
	bar   *progressbar.ProgressBar
	log   *slog.Logger
	what  string
	total int64
	n     int64
	start time.Time
	last  time.Time
}

// meter is the progress of a command's long reads, for internal/replay
// and internal/verify.
func (e *env) meter(what string, total int64) kafka.Meter {
	return newProgress(e.stderr, e.log, what, total)
}

func newProgress(stderr io.Writer, log *slog.Logger, what string, total int64) *progress {
	p := &progress{log: log, what: what, total: total, start: time.Now()}
	p.last = p.start
	if f, ok := stderr.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		p.bar = progressbar.NewOptions64(total, progressbar.OptionSetWriter(stderr), progressbar.OptionSetDescription(what),
			progressbar.OptionShowCount(), progressbar.OptionShowIts(), progressbar.OptionSetItsString("rec"),
			progressbar.OptionThrottle(200*time.Millisecond), progressbar.OptionClearOnFinish(), progressbar.OptionSetPredictTime(true))
	}
	return p
}

// Add counts n more records read.
func (p *progress) Add(n int) {
	p.n += int64(n)
	if p.bar != nil {
		_ = p.bar.Add(n) // drawing the bar can only fail to write to the terminal
		return
	}
	if now := time.Now(); now.Sub(p.last) >= progressEvery {
		p.last = now
		p.log.Info(p.what, p.attrs(now)...)
	}
}

func (p *progress) attrs(now time.Time) []any {
	rate := float64(p.n) / now.Sub(p.start).Seconds()
	attrs := []any{"records", p.n, "of", p.total, "rate", fmt.Sprintf("%.0f/s", rate)}
	if rate > 0 && p.total > p.n {
		attrs = append(attrs, "left", (time.Duration(float64(p.total-p.n)/rate) * time.Second).Round(time.Second))
	}
	return attrs
}

// Done ends the bar or logs the last line.
func (p *progress) Done() {
	if p.bar != nil {
		_ = p.bar.Finish()
		return
	}
	p.log.Info(p.what+": done", p.attrs(time.Now())...)
}
