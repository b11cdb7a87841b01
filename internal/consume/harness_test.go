package consume_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/idemsink/idemsink/internal/batch"
	"github.com/idemsink/idemsink/internal/config"
	"github.com/idemsink/idemsink/internal/consume"
	"github.com/idemsink/idemsink/internal/kafkatest"
	"github.com/idemsink/idemsink/internal/metrics"
	"github.com/idemsink/idemsink/internal/pgtest"
	"github.com/idemsink/idemsink/internal/record"
	"github.com/idemsink/idemsink/internal/sink"
	"github.com/idemsink/idemsink/internal/waittest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// env is one test's Kafka, database and configuration.
type env struct {
	t    *testing.T
	k    *kafkatest.Cluster
	pool *pgxpool.Pool
	cfg  *config.Config
}

func newEnv(t *testing.T, k *kafkatest.Cluster, pipelines ...config.Pipeline) *env {
	t.Helper()
	e := &env{t: t, k: k, pool: pgtest.Pool(t)}
	e.cfg = e.config(kafkatest.Name(t, "group"), pipelines...)
	if err := sink.New(e.pool, e.cfg, sink.Options{}).EnsureTables(context.Background(), e.cfg); err != nil {
		t.Fatalf("ensure tables: %v", err)
	}
	return e
}

// config returns a validated configuration for group and pipelines.
func (e *env) config(group string, pipelines ...config.Pipeline) *config.Config {
	cfg := &config.Config{
		Brokers: e.k.Brokers, Group: group, DatabaseURL: e.pool.Config().ConnString(),
		Pipelines:        pipelines,
		SessionTimeout:   6 * time.Second,
		RebalanceTimeout: 10 * time.Second,
		RetryBackoff:     20 * time.Millisecond,
		RetryBackoffMax:  200 * time.Millisecond,
		ShutdownTimeout:  10 * time.Second,
	}
	for i := range cfg.Pipelines {
		if cfg.Pipelines[i].Batch.Linger == 0 {
			cfg.Pipelines[i].Batch.Linger = 20 * time.Millisecond
		}
	}
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		e.t.Fatal(err)
	}
	return cfg
}

// member is a running consumer.
type member struct {
	c       *consume.Consumer
	m       *metrics.Metrics
	cancel  context.CancelFunc
	done    chan error
	results chan sink.Result
	stopped bool
}

// start runs a consumer for cfg until stop or the end of the test.
func (e *env) start(cfg *config.Config, opts consume.Options) *member {
	e.t.Helper()
	return e.startWith(cfg, opts, e.pool)
}

// startWith runs a consumer whose sink writes through pool.
func (e *env) startWith(cfg *config.Config, opts consume.Options, pool *pgxpool.Pool) *member {
	e.t.Helper()
	mb := &member{m: metrics.New(nil), done: make(chan error, 1), results: make(chan sink.Result, 10000)}
	opts.Config, opts.Metrics = cfg, mb.m
	opts.Sink = sink.New(pool, cfg, sink.Options{Metrics: mb.m, Fault: opts.Fault, Logger: opts.Logger})
	onBatch := opts.OnBatch
	opts.OnBatch = func(b *batch.Unit, r sink.Result) {
		if onBatch != nil {
			onBatch(b, r)
		}
		select {
		case mb.results <- r:
		default:
		}
	}
	mb.c = consume.New(opts)
	ctx, cancel := context.WithCancel(context.Background())
	mb.cancel = cancel
	go func() { mb.done <- mb.c.Run(ctx) }()
	e.t.Cleanup(func() { _ = mb.stop() })
	return mb
}

// stop cancels the consumer and waits for its shutdown.
func (mb *member) stop() error {
	if mb.stopped {
		return nil
	}
	mb.stopped = true
	mb.cancel()
	select {
	case err := <-mb.done:
		return err
	case <-time.After(60 * time.Second):
		return errors.New("consumer did not stop within 60s")
	}
}

// sum adds up the results of every batch applied so far.
func (mb *member) sum() sink.Result {
	var s sink.Result
	for {
		select {
		case r := <-mb.results:
			s.Add(r)
		default:
			return s
		}
	}
}

// waitApplied waits until the group's ledger has applied every partition of
// the topics to their end.
func (e *env) waitApplied(group string, topics ...string) {
	e.t.Helper()
	ends := map[record.TP]int64{}
	for _, topic := range topics {
		for p, end := range e.k.Ends(topic) {
			ends[record.TP{Topic: topic, Partition: p}] = end
		}
	}
	s := sink.New(e.pool, e.cfg, sink.Options{})
	waittest.For(e.t, 60*time.Second, fmt.Sprintf("group %s to apply %v", group, ends), func() bool {
		ok, err := s.CaughtUp(context.Background(), group, ends)
		if err != nil {
			e.t.Fatalf("caught up: %v", err)
		}
		return ok
	})
}

// count runs a count query.
func (e *env) count(query string, args ...any) int {
	e.t.Helper()
	var n int
	if err := e.pool.QueryRow(context.Background(), query, args...).Scan(&n); err != nil {
		e.t.Fatalf("%s: %v", query, err)
	}
	return n
}

// xmins returns each row's xmin by record_id: a changed xmin means the row
// was rewritten.
func (e *env) xmins(table string) map[string]string {
	e.t.Helper()
	rows, err := e.pool.Query(context.Background(), "SELECT record_id::text, xmin::text FROM "+table)
	if err != nil {
		e.t.Fatal(err)
	}
	out := map[string]string{}
	for rows.Next() {
		var id, x string
		if err := rows.Scan(&id, &x); err != nil {
			e.t.Fatal(err)
		}
		out[id] = x
	}
	if err := rows.Err(); err != nil {
		e.t.Fatal(err)
	}
	return out
}

func kafkaRecord(topic string, partition int32, v any) *kgo.Record {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return &kgo.Record{Topic: topic, Partition: partition, Value: b}
}
