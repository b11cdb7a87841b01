package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/idemsink/idemsink/internal/batch"
	"github.com/idemsink/idemsink/internal/config"
	"github.com/idemsink/idemsink/internal/consume"
	"github.com/idemsink/idemsink/internal/kafkatest"
	"github.com/idemsink/idemsink/internal/pgtest"
	"github.com/idemsink/idemsink/internal/record"
	"github.com/idemsink/idemsink/internal/sink"
	"github.com/idemsink/idemsink/internal/waittest"
	"github.com/idemsink/idemsink/migrations"
)

// fixture is a configured pipeline on a test's Kafka and database: table
// orders (id, note, ts, v) from one topic, keyed by id, dated by ts in UTC,
// versioned by v.
type fixture struct {
	t       *testing.T
	k       *kafkatest.Cluster
	topic   string
	parts   int32
	group   string
	cfgPath string
	env     map[string]string
	cfg     *config.Config
	pool    *pgxpool.Pool
}

func newFixture(t *testing.T, k *kafkatest.Cluster, parts int32, extra string) *fixture {
	t.Helper()
	f := &fixture{t: t, k: k, topic: k.Topic("orders", parts), parts: parts, group: kafkatest.Name(t, "group")}
	f.cfgPath = filepath.Join(t.TempDir(), "idemsink.yaml")
	yaml := `group: ` + f.group + `
session_timeout: 6s
rebalance_timeout: 10s
retry_backoff: 20ms
` + extra + `pipelines:
  - name: orders
    topics: [` + f.topic + `]
    table: orders
    key: [id]
    columns:
      - {name: id, type: bigint}
      - {name: note, type: text, nullable: true}
      - {name: ts, type: timestamptz}
      - {name: v, type: bigint}
    date: {field: ts, time_zone: UTC}
    version: {field: v}
    batch: {max_records: 4, linger: 20ms}
`
	if err := os.WriteFile(f.cfgPath, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	f.env = map[string]string{"IDEMSINK_DATABASE_URL": pgtest.URL(t), "IDEMSINK_BROKERS": strings.Join(k.Brokers, ",")}
	cfg, err := config.Load(f.cfgPath, f.getenv)
	if err != nil {
		t.Fatal(err)
	}
	f.cfg = cfg
	pool, err := pgxpool.New(context.Background(), f.env["IDEMSINK_DATABASE_URL"])
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	f.pool = pool
	out, err := f.run("migrate")
	if err != nil {
		t.Fatalf("migrate: %v", err)
	}
	// The newest migration's number is the number of migration files.
	newest, err := fs.Glob(migrations.FS(), "*.sql")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, fmt.Sprintf("ledger schema at version %d; 1 target table(s) ready", len(newest))) {
		t.Errorf("migrate printed %q", out)
	}
	return f
}

func (f *fixture) getenv(k string) string { return f.env[k] }

// run runs a command with the fixture's configuration and returns its
// standard output; standard error goes to the test log.
func (f *fixture) run(args ...string) (string, error) {
	f.t.Helper()
	var out, errOut bytes.Buffer
	n := 1 // command words before the flags
	if len(args) > 1 && args[1] == "reset" {
		n = 2
	}
	args = append(append(slices.Clone(args[:n]), "-config", f.cfgPath), args[n:]...)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	err := run(ctx, args, f.getenv, &out, &errOut)
	if errOut.Len() > 0 {
		f.t.Logf("%s stderr:\n%s", strings.Join(args, " "), errOut.String())
	}
	return out.String(), err
}

// day is 2026-11-0d at midnight UTC.
func day(d int) time.Time { return time.Date(2026, 11, d, 0, 0, 0, 0, time.UTC) }

// id is the key of the i-th record of day d in partition p.
func id(d, p, i int) int64 { return int64(d*10000 + p*100 + i) }

// produceDay writes n records of day d to every partition, with Kafka
// timestamps equal to their event time, hours apart.
func (f *fixture) produceDay(d, n int) {
	f.t.Helper()
	var recs []*kgo.Record
	for p := range int(f.parts) {
		for i := range n {
			recs = append(recs, f.record(id(d, p, i), p, day(d).Add(time.Duration(i+1)*time.Hour), 1, "first"))
		}
	}
	f.k.Produce(recs...)
}

func (f *fixture) record(key int64, p int, ts time.Time, v int, note string) *kgo.Record {
	return &kgo.Record{Topic: f.topic, Partition: int32(p), Timestamp: ts,
		Value: fmt.Appendf(nil, `{"id": %d, "note": %q, "ts": %q, "v": %d}`, key, note, ts.Format(time.RFC3339), v)}
}

// member is a running daemon of the fixture's group.
type member struct {
	c      *consume.Consumer
	cancel func()
	done   chan error
	mu     sync.Mutex
	ranges map[record.TP][]batch.Range
}

// start runs a group member until the test ends or stop.
func (f *fixture) start() *member {
	f.t.Helper()
	m := &member{done: make(chan error, 1), ranges: map[record.TP][]batch.Range{}}
	m.c = consume.New(consume.Options{Config: f.cfg, Sink: sink.New(f.pool, f.cfg, sink.Options{}),
		OnBatch: func(b *batch.Unit, _ sink.Result) {
			m.mu.Lock()
			defer m.mu.Unlock()
			for _, r := range b.Ranges() {
				tp := record.TP{Topic: r.Topic, Partition: r.Partition}
				m.ranges[tp] = append(m.ranges[tp], r)
			}
		}})
	ctx, cancel := context.WithCancel(context.Background())
	m.cancel = cancel
	go func() { m.done <- m.c.Run(ctx) }()
	f.t.Cleanup(func() { _ = m.stop() })
	return m
}

func (m *member) stop() error {
	if m.cancel == nil {
		return nil
	}
	m.cancel()
	m.cancel = nil
	select {
	case err := <-m.done:
		return err
	case <-time.After(60 * time.Second):
		return errors.New("member did not stop within 60s")
	}
}

// read returns, per partition, the offsets the member's batches took.
func (m *member) read() map[int32][]int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[int32][]int64{}
	for tp, rs := range m.ranges {
		for _, r := range rs {
			out[tp.Partition] = append(out[tp.Partition], r.First, r.Last, int64(r.Count))
		}
	}
	return out
}

// drain runs a member until the ledger has applied every partition to its
// end, then stops it, and returns what it read.
func (f *fixture) drain() map[int32][]int64 {
	f.t.Helper()
	m := f.start()
	f.waitApplied()
	if err := m.stop(); err != nil {
		f.t.Fatalf("member: %v", err)
	}
	return m.read()
}

func (f *fixture) waitApplied() {
	f.t.Helper()
	ends := map[record.TP]int64{}
	for p, end := range f.k.Ends(f.topic) {
		ends[record.TP{Topic: f.topic, Partition: p}] = end
	}
	s := sink.New(f.pool, f.cfg, sink.Options{})
	waittest.For(f.t, 60*time.Second, "the group to apply every record", func() bool {
		ok, err := s.CaughtUp(context.Background(), f.group, ends)
		if err != nil {
			f.t.Fatalf("caught up: %v", err)
		}
		return ok
	})
}

// ledger returns the group's ledger: applied offset by partition.
func (f *fixture) ledger() map[int32]int64 {
	f.t.Helper()
	offs, err := sink.New(f.pool, f.cfg, sink.Options{}).Offsets(context.Background(), f.group)
	if err != nil {
		f.t.Fatal(err)
	}
	out := map[int32]int64{}
	for _, o := range offs {
		out[o.TP.Partition] = o.Applied
	}
	return out
}

func (f *fixture) exec(sql string, args ...any) int64 {
	f.t.Helper()
	tag, err := f.pool.Exec(context.Background(), sql, args...)
	if err != nil {
		f.t.Fatalf("%s: %v", sql, err)
	}
	return tag.RowsAffected()
}

// xmins returns each row's xmin by id: a changed xmin is a rewritten row.
func (f *fixture) xmins() map[int64]string {
	f.t.Helper()
	rows, err := f.pool.Query(context.Background(), "SELECT id, xmin::text FROM orders")
	if err != nil {
		f.t.Fatal(err)
	}
	out := map[int64]string{}
	var k int64
	var x string
	for rows.Next() {
		if err := rows.Scan(&k, &x); err != nil {
			f.t.Fatal(err)
		}
		out[k] = x
	}
	return out
}
