package main

import (
	"context"
	"log/slog"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/idemsink/idemsink/internal/config"
	"github.com/idemsink/idemsink/internal/kafka"
	"github.com/idemsink/idemsink/internal/record"
)

// drainEvery is how often a running member reports a backlog.
const drainEvery = 30 * time.Second

// logDrain logs, every interval while the member's partitions are at
// least a batch behind the end of the log, the records left, the rate they
// drain at and the time left: after an offsets reset, that is the
// progress of the backfill. It returns when ctx ends.
func logDrain(ctx context.Context, cfg *config.Config, log *slog.Logger, applied func() map[record.TP]int64, every time.Duration) error {
	adm, closeAdm, err := kafka.NewAdmin(cfg, log)
	if err != nil {
		return err
	}
	defer closeAdm()
	minBatch := cfg.MaxBufferedRecords
	for _, p := range cfg.Pipelines {
		minBatch = min(minBatch, p.Batch.MaxRecords)
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	prev := int64(-1)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		owned := applied()
		if len(owned) == 0 {
			prev = -1
			continue
		}
		ends, err := adm.ListCommittedOffsets(ctx, cfg.Topics()...)
		if err != nil {
			log.Debug("drain progress: list end offsets", "err", err)
			continue
		}
		var left int64
		ends.Each(func(o kadm.ListedOffset) {
			if a, ok := owned[record.TP{Topic: o.Topic, Partition: o.Partition}]; ok && o.Offset > a+1 {
				left += o.Offset - a - 1
			}
		})
		if left < int64(minBatch) {
			prev = -1
			continue
		}
		attrs := []any{"records_left", left, "partitions", len(owned)}
		if prev > left {
			rate := float64(prev-left) / every.Seconds()
			attrs = append(attrs, "rate", int64(rate), "time_left", (time.Duration(float64(left)/rate) * time.Second).Round(time.Second))
		}
		log.Info("catching up", attrs...)
		prev = left
	}
}
