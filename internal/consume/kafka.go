package consume

import (
	"context"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/idemsink/idemsink/internal/batch"
	"github.com/idemsink/idemsink/internal/record"
)

type (
	kmsgOffsetCommitRequest  = kmsg.OffsetCommitRequest
	kmsgOffsetCommitResponse = kmsg.OffsetCommitResponse
)

func errorForCode(code int16) error { return kerr.ErrorForCode(code) }

// commitKafka commits the next offset after the ledger's applied offset of
// each partition, only for partitions this member still owns and only
// forward. A failed commit loses nothing: the ledger holds the position
// and wins on reassignment.
func (c *Consumer) commitKafka(tps []record.TP) {
	if c.opts.NoKafkaCommit {
		return
	}
	offsets := map[string]map[int32]kgo.EpochOffset{}
	for _, tp := range tps {
		ps := c.parts[tp]
		if ps == nil {
			continue
		}
		next, ok := ps.toCommit()
		if !ok {
			continue
		}
		if offsets[tp.Topic] == nil {
			offsets[tp.Topic] = map[int32]kgo.EpochOffset{}
		}
		offsets[tp.Topic][tp.Partition] = kgo.EpochOffset{Epoch: -1, Offset: next}
	}
	if len(offsets) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(c.base, 10*time.Second)
	defer cancel()
	var commitErr error
	c.cl.CommitOffsetsSync(ctx, offsets, func(_ *kgo.Client, _ *kmsgOffsetCommitRequest, resp *kmsgOffsetCommitResponse, err error) {
		if err != nil {
			commitErr = err
			return
		}
		for _, t := range resp.Topics {
			for _, p := range t.Partitions {
				tp := record.TP{Topic: t.Topic, Partition: p.Partition}
				if kerrErr := errorForCode(p.ErrorCode); kerrErr != nil {
					commitErr = fmt.Errorf("%s: %w", tp, kerrErr)
					continue
				}
				if ps := c.parts[tp]; ps != nil {
					ps.commitDone(offsets[t.Topic][p.Partition].Offset)
				}
			}
		}
	})
	if commitErr != nil {
		c.m.KafkaCommitErrors.Inc()
		c.log.Warn("kafka offset commit failed; the ledger keeps the position", "event", EventCommitFailed, "err", commitErr)
	}
}

// pause stops fetching the partitions of a failing batch: nothing more of
// them is worth holding until it applies.
func (c *Consumer) pause(b *batch.Unit) {
	pause := map[string][]int32{}
	for _, r := range b.Ranges() {
		pause[r.Topic] = append(pause[r.Topic], r.Partition)
	}
	c.cl.PauseFetchPartitions(pause)
}

// resume fetches the owned, unfenced partitions among tps again.
func (c *Consumer) resume(tps []record.TP) {
	resume := map[string][]int32{}
	for _, tp := range tps {
		if ps := c.parts[tp]; ps != nil && !ps.fenced {
			resume[tp.Topic] = append(resume[tp.Topic], tp.Partition)
		}
	}
	if len(resume) > 0 {
		c.cl.ResumeFetchPartitions(resume)
	}
}
