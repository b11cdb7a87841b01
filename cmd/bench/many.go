package main

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kgo"
)

// manyPartitions is scenario 7: as many records as scenario 1's first load,
// spread over 600 partitions (20 topics of 30) that two pipelines read,
// into two empty tables, by one consumer in one group.
func (e *env) manyPartitions(ctx context.Context, rep *report, progress func(string, ...any)) error {
	var topics []string
	for _, p := range e.many {
		topics = append(topics, p.Topics...)
	}
	progress("generating and producing %d records over %d topics of %d partitions", e.o.records, len(topics), manyPartitions)
	seg, err := e.produceSpread(ctx, topics, e.o.records, newSource(e.o.seed, e.o, false).fresh)
	if err != nil {
		return err
	}
	rep.produced = append(rep.produced, seg)
	progress("scenario 7: first load of %d records from %d partitions, 2 pipelines", e.o.records, len(topics)*manyPartitions)
	if err := e.settle(ctx); err != nil {
		return err
	}
	var before, after int64
	for _, p := range e.many {
		w, err := e.writes(ctx, p.Table)
		if err != nil {
			return err
		}
		before += w
	}
	phases, err := e.child(ctx, childSpec{Kind: kindConsume, Name: "7 many partitions", Pipelines: e.many, Group: e.groupMany,
		Connections: e.o.connections, CPUProfile: profile(e.o.cpuprofile, "s7"), MemProfile: profile(e.o.memprofile, "s7")})
	if err != nil {
		return fmt.Errorf("scenario 7: %w", err)
	}
	var rows int64
	for _, p := range e.many {
		w, err := e.writes(ctx, p.Table)
		if err != nil {
			return err
		}
		after += w
		var n int64
		if err := e.pool.QueryRow(ctx, "SELECT count(*) FROM "+pgx.Identifier{p.Schema, p.Table}.Sanitize()).Scan(&n); err != nil {
			return err
		}
		rows += n
	}
	if rows != int64(e.o.records) {
		return fmt.Errorf("scenario 7: the two tables hold %d rows, want %d", rows, e.o.records)
	}
	r := rep.add(fmt.Sprintf("7 %d partitions, 2 pipelines", len(topics)*manyPartitions), seg, phases[0], after-before)
	fmt.Fprintf(e.stderr, "          %.0f records/s, %.1fs, CPU %.1fs, peak RSS %.0f MiB, first batch after %.2fs\n",
		r.rate(), r.Wall, r.CPU, float64(r.PeakRSS)/(1<<20), r.FirstBatch)
	return nil
}

// produceSpread produces n records with next, record i to topics[i%len],
// each to the partition its key hashes to.
func (e *env) produceSpread(ctx context.Context, topics []string, n int, next func() (key, value []byte)) (segment, error) {
	seg := segment{topic: fmt.Sprintf("%d topics (%s, ...)", len(topics), topics[0]), records: int64(n)}
	before := map[string]int64{}
	for _, t := range topics {
		ends, err := e.endOffsets(ctx, t)
		if err != nil {
			return seg, err
		}
		for _, o := range ends {
			before[t] += o
		}
	}
	t0 := time.Now()
	var mu sync.Mutex
	var first error
	for i := range n {
		k, v := next()
		seg.bytes += int64(len(k) + len(v))
		e.producer.Produce(ctx, &kgo.Record{Topic: topics[i%len(topics)], Key: k, Value: v}, func(_ *kgo.Record, err error) {
			if err != nil {
				mu.Lock()
				first = cmpErr(first, err)
				mu.Unlock()
			}
		})
	}
	if err := e.producer.Flush(ctx); err != nil {
		return seg, fmt.Errorf("produce: %w", err)
	}
	if first != nil {
		return seg, fmt.Errorf("produce: %w", first)
	}
	seg.took = time.Since(t0)
	var got int64
	for _, t := range topics {
		ends, err := e.endOffsets(ctx, t)
		if err != nil {
			return seg, err
		}
		for _, o := range ends {
			got += o
		}
		got -= before[t]
	}
	if got != seg.records {
		return seg, fmt.Errorf("produce: %d records landed, want %d", got, seg.records)
	}
	return seg, nil
}
