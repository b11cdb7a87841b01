package main

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/idemsink/idemsink/internal/kafkatest"
	"github.com/idemsink/idemsink/internal/record"
	"github.com/idemsink/idemsink/internal/waittest"
)

// syncBuffer is a log destination safe for the logging goroutine and the
// test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// A member a batch or more behind logs what is left, and once it moves,
// the rate and the time left; caught up, it is quiet.
func TestLogDrain(t *testing.T) {
	f := newFixture(t, kafkatest.New(t), 2, "")
	f.produceDay(1, 10)
	var mu sync.Mutex
	applied := map[record.TP]int64{{Topic: f.topic, Partition: 0}: -1, {Topic: f.topic, Partition: 1}: -1}
	var buf syncBuffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- logDrain(ctx, f.cfg, log, func() map[record.TP]int64 {
			mu.Lock()
			defer mu.Unlock()
			out := map[record.TP]int64{}
			for tp, a := range applied {
				out[tp] = a
			}
			return out
		}, 20*time.Millisecond)
	}()
	waittest.For(t, 10*time.Second, "a backlog line", func() bool { return strings.Contains(buf.String(), "records_left=20 partitions=2") })
	mu.Lock()
	applied[record.TP{Topic: f.topic, Partition: 0}] = 9
	mu.Unlock()
	waittest.For(t, 10*time.Second, "a line with the rate", func() bool {
		return strings.Contains(buf.String(), "records_left=10 partitions=2 rate=") && strings.Contains(buf.String(), "time_left=")
	})
	mu.Lock()
	applied[record.TP{Topic: f.topic, Partition: 1}] = 8 // one record left: less than a batch
	mu.Unlock()
	// Quiet: no new line for ten polls (five of the logger's intervals).
	waittest.Quiet(t, 10*time.Second, 10, "no more backlog lines", func() int { return strings.Count(buf.String(), "\n") })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
