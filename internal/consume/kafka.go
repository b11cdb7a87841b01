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

// commitKafka commits to Kafka, for every owned partition, the next offset
// after the ledger's applied offset, only forward. A failed commit loses
// nothing: the ledger holds the position and wins on reassignment.
//
// It takes c.owning, then c.mu only to read and record positions: the
// commit, a network call of up to 10 s, runs without c.mu, so the poll
// loop's state stays free meanwhile. Holding c.owning keeps the rebalance
// callbacks (revoked, lost) and shutdown, which change what is owned, out
// until the commit is done: Kafka never receives a commit for a partition
// this member has handed over. It must not be called with c.mu held.
func (c *Consumer) commitKafka() {
	c.owning.Lock()
	defer c.owning.Unlock()
	c.mu.Lock()
	offsets := c.toCommit(c.owned())
	c.mu.Unlock()
	c.sendCommit(offsets)
}

// toCommit (c.mu held) returns the offsets to commit for the owned
// partitions among tps whose ledger position is ahead of Kafka's commit:
// the commit never passes the ledger.
func (c *Consumer) toCommit(tps []record.TP) map[string]map[int32]kgo.EpochOffset {
	if c.opts.NoKafkaCommit {
		return nil
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
	return offsets
}

// sendCommit (c.owning held, c.mu not) commits offsets (from toCommit) and
// records what Kafka took: it waits on the network, then takes c.mu to
// record the result.
func (c *Consumer) sendCommit(offsets map[string]map[int32]kgo.EpochOffset) {
	if len(offsets) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(c.base, 10*time.Second)
	defer cancel()
	var commitErr error
	var done []record.TP
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
				done = append(done, tp)
			}
		}
	})
	c.mu.Lock()
	for _, tp := range done {
		if ps := c.parts[tp]; ps != nil {
			ps.commitDone(offsets[tp.Topic][tp.Partition].Offset)
		}
	}
	c.mu.Unlock()
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

// resume (c.mu held) fetches the owned partitions among tps again, those
// neither fenced nor held back.
func (c *Consumer) resume(tps []record.TP) {
	resume := map[string][]int32{}
	for _, tp := range tps {
		if ps := c.parts[tp]; ps != nil && ps.state == reading {
			resume[tp.Topic] = append(resume[tp.Topic], tp.Partition)
		}
	}
	if len(resume) > 0 {
		c.cl.ResumeFetchPartitions(resume)
	}
}
