package replay

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/idemsink/idemsink/internal/config"
	"github.com/idemsink/idemsink/internal/decode"
	"github.com/idemsink/idemsink/internal/kafka"
	"github.com/idemsink/idemsink/internal/record"
	"github.com/idemsink/idemsink/internal/sink"
)

// Report says what the replay of one pipeline's dates did.
type Report struct {
	Pipeline string
	// Read counts the records read; Outside those of other dates, passed over.
	Read, Outside int64
	Batches       int
	Result        sink.Result
}

// Dates re-applies the records of each pipeline whose target date is in r:
// it reads each partition of spans from the first record of r.From (found
// by SearchDate) to its end, and applies those records beside the live
// group, under a temporary ledger group whose rows it deletes at the end.
// It returns a report per pipeline replayed, those before a failure too.
func Dates(ctx context.Context, o Options, pipelines []*config.Pipeline, r record.Dates, spans []kafka.Span) ([]Report, error) {
	// The temporary group keys this replay's ledger rows; the live group's
	// rows have another key, so the replay can neither fence nor move them.
	var nonce [4]byte
	_, _ = rand.Read(nonce[:]) // crypto/rand.Read never fails
	host, _ := os.Hostname()
	tmp := fmt.Sprintf("%s.replay.%s.%s", o.Config.Group, time.Now().UTC().Format("20060102T150405"), hex.EncodeToString(nonce[:]))
	var topics []string
	for _, p := range pipelines {
		topics = append(topics, p.Topics...)
	}
	defer func() {
		if _, err := o.Sink.ResetLedger(context.WithoutCancel(ctx), tmp, topics); err != nil {
			o.log().Warn("replay: could not delete the temporary ledger rows", "group", tmp, "err", err)
		}
	}()
	commit := sink.Commit{Group: tmp, Generation: 1, Member: "replay@" + host}
	var reps []Report
	for _, p := range pipelines {
		rep, err := dates(ctx, &o, commit, p, r, spans)
		if err != nil {
			return reps, fmt.Errorf("replay pipeline %s: %w", p.Name, err)
		}
		reps = append(reps, rep)
	}
	return reps, nil
}

// dates replays one pipeline.
func dates(ctx context.Context, o *Options, commit sink.Commit, p *config.Pipeline, r record.Dates, spans []kafka.Span) (Report, error) {
	rep := Report{Pipeline: p.Name}
	dec := decode.NewDecoder(p)
	from, to := map[record.TP]int64{}, map[record.TP]int64{}
	var total int64
	for _, s := range spans {
		if !slices.Contains(p.Topics, s.TP.Topic) {
			continue
		}
		start, err := SearchDate(ctx, o.Config, o.log(), dec, s.TP, s.Start, s.End, r.From)
		if err != nil {
			return rep, fmt.Errorf("search %s for %s: %w", s.TP, r.From, err)
		}
		from[s.TP], to[s.TP] = start, s.End
		total += s.End - start
	}
	bt := newBatcher(o, p, commit)
	prog := o.meter("replay: read "+p.Name, total)
	bt.meter = prog
	defer prog.Done() // after the last flushes: a stall there shows too
	err := kafka.ReadRange(ctx, o.Config, o.log(), from, to, func(kr *kgo.Record) error {
		prog.Add(1)
		rep.Read++
		pos := kafka.Position(kr)
		row, d, err := dec.Decode(kr.Key, kr.Value, pos)
		switch {
		case decode.Unavailable(err):
			return fmt.Errorf("decode %s at %d: %w", pos.TP, pos.Offset, err) // an outage: run the replay again later
		case err != nil:
			// Bad input is dead-lettered again, as the daemon does it; the
			// dead-letter table keeps one row per position, so nothing is
			// doubled.
			return bt.addDead(ctx, kafka.DeadLetter(kr, err))
		case row.Delete:
			// A delete names a key, not a date: it is applied wherever it
			// lies in what is read, under the version guard (a delete
			// applied before writes nothing).
			return bt.add(ctx, row, record.Date{})
		case row.Ignore || !r.Has(d):
			rep.Outside++
			return nil
		}
		return bt.add(ctx, row, d)
	})
	if err == nil {
		err = bt.flush(ctx)
	}
	rep.Batches, rep.Result = bt.batches, bt.total
	return rep, err
}
