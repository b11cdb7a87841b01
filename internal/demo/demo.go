// Package demo runs idemsink end to end on an embedded default: an
// in-process Kafka (kfake), a throwaway PostgreSQL from the binaries on
// PATH, and generated order events with duplicates, updates and late and
// stale records. It prints the seed article's table of runs.
package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/idemsink/idemsink/internal/batch"
	"github.com/idemsink/idemsink/internal/config"
	"github.com/idemsink/idemsink/internal/consume"
	"github.com/idemsink/idemsink/internal/gen"
	"github.com/idemsink/idemsink/internal/pglocal"
	"github.com/idemsink/idemsink/internal/record"
	"github.com/idemsink/idemsink/internal/sink"
)

const (
	topic = "orders"
	table = "order_lines"
	group = "idemsink-demo"
)

// Run runs the demo and writes its report to w.
func Run(ctx context.Context, w io.Writer, log *slog.Logger) (err error) {
	fmt.Fprintln(w, "idemsink demo: in-process Kafka, throwaway PostgreSQL, generated order events")
	pg, err := pglocal.Start(ctx, pglocal.Options{Logger: log})
	if err != nil {
		return fmt.Errorf("start PostgreSQL: %w", err)
	}
	defer func() { err = errors.Join(err, pg.Close()) }()
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(3, topic))
	if err != nil {
		return fmt.Errorf("start in-process Kafka: %w", err)
	}
	defer cluster.Close()

	cfg := &config.Config{
		Brokers: cluster.ListenAddrs(), Group: group, DatabaseURL: pg.DSN("postgres"),
		Pipelines: []config.Pipeline{gen.Pipeline("orders", topic, table)},
	}
	cfg.Pipelines[0].Batch = config.Batch{MaxRecords: 200, Linger: 50 * time.Millisecond}
	cfg.Pipelines[0].Deletes = "apply"
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return err
	}
	pool, err := pgxpool.New(ctx, cfg.DatabaseURL)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer pool.Close()
	if _, err := sink.Migrate(ctx, pool); err != nil {
		return err
	}
	sk := sink.New(pool, cfg, sink.Options{Logger: log})
	if err := sk.EnsureTables(ctx, cfg); err != nil {
		return err
	}
	producer, err := kgo.NewClient(kgo.SeedBrokers(cfg.Brokers...), kgo.DefaultProduceTopic(topic))
	if err != nil {
		return fmt.Errorf("producer: %w", err)
	}
	defer producer.Close()
	adm := kadm.NewClient(producer)

	d := &demo{cfg: cfg, pool: pool, sink: sk, producer: producer, adm: adm, log: log}
	g := gen.New(gen.Options{Seed: 7, Days: 3, LateRate: 0.1})

	var first []gen.Event
	for range 500 {
		first = append(first, g.NextNew())
	}
	rows := []row{}
	if err := d.produce(ctx, first); err != nil {
		return err
	}
	r, err := d.consume(ctx, "1st", "500 records", true)
	if err != nil {
		return err
	}
	rows = append(rows, r)

	// The same 500 again: a re-run after the first run stopped without
	// committing to Kafka. The ledger knows they are applied.
	r, err = d.consume(ctx, "2nd (re-run)", "the same 500", true)
	if err != nil {
		return err
	}
	rows = append(rows, r)

	// A backfill: Kafka offsets and ledger reset, every record re-applied.
	if _, err := sk.ResetLedger(ctx, group, cfg.Topics()); err != nil {
		return err
	}
	r, err = d.consume(ctx, "3rd (replay)", "the same 500, ledger reset", false)
	if err != nil {
		return err
	}
	rows = append(rows, r)

	// New data: 20 new lines, updates of existing ones, exact duplicates
	// and stale replays of older versions.
	var next []gen.Event
	for range 20 {
		next = append(next, g.NextNew())
	}
	for range 12 {
		next = append(next, g.NextUpdate())
	}
	byKey := map[gen.Key]gen.Event{}
	for _, e := range first {
		byKey[e.Key()] = e
	}
	next = append(next, next[20:25]...) // exact duplicates of updates
	for _, e := range next[25:30] {
		next = append(next, byKey[e.Key()]) // a stale replay: version 1 of an updated line
	}
	if err := d.produce(ctx, next); err != nil {
		return err
	}
	r, err = d.consume(ctx, "4th (new data)", fmt.Sprintf("%d: 20 new, 12 upd, 5 dup, 5 old", len(next)), false)
	if err != nil {
		return err
	}
	rows = append(rows, r)

	// Deletes: tombstones for five keys, each carrying a version newer
	// than the row's (a versioned pipeline orders a delete by it), and one
	// late tombstone older than its row, which must leave the row alone.
	want := g.Latest()
	var tombs []*kgo.Record
	var late gen.Key
	for k, l := range want {
		if len(tombs) == 6 {
			break
		}
		version := l.Version + 1
		if len(tombs) == 5 {
			version, late = l.Version-1, k
		} else {
			delete(want, k)
		}
		tombs = append(tombs, &kgo.Record{Key: fmt.Appendf(nil, `{"order_id":%d,"line_no":%d,"version":%d}`, k.OrderID, k.LineNo, version)})
	}
	if err := d.producer.ProduceSync(ctx, tombs...).FirstErr(); err != nil {
		return fmt.Errorf("produce tombstones: %w", err)
	}
	r, err = d.consume(ctx, "5th (deletes)", "5 tombstones, 1 late", false)
	if err != nil {
		return err
	}
	rows = append(rows, r)

	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "Run\tInput\tNew\tUpdated\tUnchanged\tStale\tDeleted\tIn-batch dup\tSkipped\tDead\tWritten\tTotal\t")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t\n", r.name, r.input, r.Inserted, r.Updated, r.Unchanged,
			r.Stale, r.Deleted, r.Superseded, r.Skipped, r.DeadLettered, r.written, r.total)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "New/Updated/Unchanged/Stale: rows by what the upsert did (Stale: older than the stored version, not written).")
	fmt.Fprintln(w, "In-batch dup: records replaced by a newer one in the same batch. Skipped: records the ledger had already applied.")
	fmt.Fprintln(w, "Deleted: rows removed by a tombstone newer than the row; a late tombstone removes nothing.")
	fmt.Fprintln(w, "Written: rows whose tuple changed (new xmin); an unchanged row is not rewritten. Total: rows in the table.")

	if err := d.check(ctx, want); err != nil {
		return err
	}
	if _, ok := want[late]; !ok {
		return fmt.Errorf("check: the late tombstone's key %v is not among the live keys", late)
	}
	fmt.Fprintf(w, "Check: %s holds exactly the newest version of each of the %d live keys.\n", table, len(want))
	return nil
}

type row struct {
	name, input    string
	sink.Result    // totals over the run's batches
	written, total int
}

type demo struct {
	cfg      *config.Config
	pool     *pgxpool.Pool
	sink     *sink.Sink
	producer *kgo.Client
	adm      *kadm.Client
	log      *slog.Logger
}

func (d *demo) produce(ctx context.Context, events []gen.Event) error {
	recs := make([]*kgo.Record, len(events))
	for i, e := range events {
		recs[i] = &kgo.Record{Key: gen.KafkaKey(e.Key()), Value: e.Value}
	}
	if err := d.producer.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		return fmt.Errorf("produce: %w", err)
	}
	return nil
}

// consume runs one consumer until the ledger has applied everything, then
// stops it. Without commitKafka it leaves Kafka's offsets where they were,
// as a crash between the two commits would.
func (d *demo) consume(ctx context.Context, name, input string, noKafkaCommit bool) (row, error) {
	r := row{name: name, input: input}
	if _, err := d.pool.Exec(ctx, `DROP TABLE IF EXISTS demo_snapshot;
CREATE TABLE demo_snapshot AS SELECT record_id, xmin::text AS x FROM `+table); err != nil {
		return r, fmt.Errorf("snapshot: %w", err)
	}
	c := consume.New(consume.Options{
		Config: d.cfg, Sink: d.sink, Logger: d.log, NoKafkaCommit: noKafkaCommit,
		OnBatch: func(_ *batch.Unit, res sink.Result) { r.Add(res) },
	})
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- c.Run(cctx) }()
	err := d.waitApplied(ctx, c, done)
	cancel()
	if rerr := <-done; err == nil {
		err = rerr
	}
	if err != nil {
		return r, err
	}
	r.Skipped += int(c.SkippedOnResume())
	err = d.pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM `+table+`),
  (SELECT count(*) FROM `+table+` t LEFT JOIN demo_snapshot s USING (record_id) WHERE s.record_id IS NULL OR s.x <> t.xmin::text)`).Scan(&r.total, &r.written)
	return r, err
}

// waitApplied waits until the consumer owns every partition and has
// applied it to the end.
func (d *demo) waitApplied(ctx context.Context, c *consume.Consumer, done <-chan error) error {
	ends, err := d.adm.ListEndOffsets(ctx, topic)
	if err != nil {
		return fmt.Errorf("list end offsets: %w", err)
	}
	want := map[record.TP]int64{}
	ends.Each(func(o kadm.ListedOffset) { want[record.TP{Topic: o.Topic, Partition: o.Partition}] = o.Offset })
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(60 * time.Second)
	for {
		if c.CaughtUp(want) {
			return nil
		}
		select {
		case err := <-done:
			return fmt.Errorf("consumer stopped early: %w", err)
		case <-deadline:
			return errors.New("consumer did not catch up within 60s")
		case <-tick.C:
		}
	}
}

// check compares the table with the generator's own record of the newest
// version per key.
func (d *demo) check(ctx context.Context, want map[gen.Key]gen.Line) error {
	rows, err := d.pool.Query(ctx, "SELECT order_id, line_no, version, quantity, status FROM "+table)
	if err != nil {
		return err
	}
	got := 0
	for rows.Next() {
		var k gen.Key
		var v int64
		var q int32
		var s string
		if err := rows.Scan(&k.OrderID, &k.LineNo, &v, &q, &s); err != nil {
			return err
		}
		l, ok := want[k]
		if !ok || l.Version != v || l.Quantity != q || l.Status != s {
			return fmt.Errorf("check: row %v is version %d, want %+v", k, v, l)
		}
		got++
	}
	if err := rows.Err(); err != nil {
		return err
	}
	if got != len(want) {
		return fmt.Errorf("check: %d rows, want %d", got, len(want))
	}
	return nil
}
