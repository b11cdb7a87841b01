package replay

import (
	"context"
	"fmt"

	"github.com/idemsink/idemsink/internal/batch"
	"github.com/idemsink/idemsink/internal/config"
	"github.com/idemsink/idemsink/internal/decode"
	"github.com/idemsink/idemsink/internal/record"
	"github.com/idemsink/idemsink/internal/sink"
)

// DeadLetterGroup is the ledger group dead-letter replays apply under. It
// is not the daemon's: its applied offsets must not move, and it must not
// skip a dead letter because the daemon has moved past its offset.
func DeadLetterGroup(group string) string { return group + "/dlq-replay" }

// DeadLetterReport says what a replay of one pipeline's dead letters did.
type DeadLetterReport struct {
	Pipeline string
	// Replayed counts dead letters that applied (or were superseded by a
	// newer version), Failing those that failed again, Partial the
	// oversize ones, kept only in part, which cannot be replayed.
	Replayed, Failing, Partial int
	Batches                    int
	Applied                    sink.Result
}

// page is how many dead letters are read at a time.
const page = 1000

// DeadLetters decodes the pending dead letters that match f again with the
// current configuration and applies those that now fit; applied ones are
// marked replayed, the rest keep their row with the latest reason. It
// returns a report per pipeline, those before a failure too.
func DeadLetters(ctx context.Context, o Options, f sink.DeadLetterFilter) ([]DeadLetterReport, error) {
	if err := o.do(ctx, "creating the target tables", func(ctx context.Context) error { return o.Sink.EnsureTables(ctx, o.Config) }); err != nil {
		return nil, err
	}
	var reps []DeadLetterReport
	f.All = false
	for i := range o.Config.Pipelines {
		p := &o.Config.Pipelines[i]
		if f.Pipeline != "" && f.Pipeline != p.Name {
			continue
		}
		pf := f
		pf.Pipeline = p.Name
		dr := &deadReplay{o: &o, p: p, dec: decode.NewDecoder(p), rep: DeadLetterReport{Pipeline: p.Name}, rows: map[record.Date][]record.Row{}}
		dr.bt = newBatcher(&o, p, sink.Commit{Group: DeadLetterGroup(o.Config.Group), Member: "consumer dlq replay"})
		dr.bt.applied = dr.settle
		err := dr.run(ctx, pf)
		dr.rep.Batches, dr.rep.Applied = dr.bt.batches, dr.bt.total
		reps = append(reps, dr.rep)
		if err != nil {
			return reps, err
		}
	}
	return reps, nil
}

// deadReplay replays one pipeline's dead letters.
type deadReplay struct {
	o   *Options
	p   *config.Pipeline
	dec *decode.Decoder
	bt  *batcher
	rep DeadLetterReport
	// rows holds, per target date, every row added to the open batch of
	// that date, superseded ones too: each is a dead letter to settle.
	rows map[record.Date][]record.Row
}

func (dr *deadReplay) run(ctx context.Context, f sink.DeadLetterFilter) error {
	from := sink.StartOfDeadLetters
	for {
		var dls []sink.StoredDeadLetter
		if err := dr.o.do(ctx, "reading dead letters", func(ctx context.Context) error {
			var err error
			dls, err = dr.o.Sink.ListDeadLetters(ctx, f, from, page)
			return err
		}); err != nil {
			return err
		}
		if len(dls) == 0 {
			return nil
		}
		if err := dr.page(ctx, dls); err != nil {
			return err
		}
		from = dls[len(dls)-1].Pos
		if len(dls) < page {
			return nil
		}
	}
}

// page decodes one page of dead letters, applies the rows through the
// batcher and records the outcome of each dead letter.
func (dr *deadReplay) page(ctx context.Context, dls []sink.StoredDeadLetter) error {
	var failing []record.Position
	var reasons []string
	for _, d := range dls {
		if record.ClassOf(d.Reason) == record.ClassOversize {
			dr.rep.Partial++ // only its first bytes were kept
			continue
		}
		row, date, err := dr.dec.Decode(d.Key, d.Value, d.Pos)
		if decode.Unavailable(err) {
			return fmt.Errorf("replay %s: %w", dr.p.Name, err) // an outage, not a new reason: run again later
		}
		if err != nil {
			failing, reasons = append(failing, d.Pos), append(reasons, err.Error())
			continue
		}
		dr.rows[date] = append(dr.rows[date], row)
		if err := dr.bt.add(ctx, row, date); err != nil {
			return fmt.Errorf("replay %s: %w", dr.p.Name, err)
		}
	}
	if err := dr.bt.flush(ctx); err != nil {
		return fmt.Errorf("replay %s: %w", dr.p.Name, err)
	}
	dr.rep.Failing += len(failing)
	return dr.o.do(ctx, "recording dead letters that failed again", func(ctx context.Context) error {
		return dr.o.Sink.MarkAttempted(ctx, dr.p.Name, failing, reasons)
	})
}

// settle records, once b has applied, which of its dead letters landed.
func (dr *deadReplay) settle(ctx context.Context, b *batch.Batch) error {
	rows := dr.rows[b.Date]
	delete(dr.rows, b.Date)
	ids := make([]record.ID, len(rows))
	for i, r := range rows {
		ids[i] = r.ID
	}
	var landed map[record.ID]record.Row
	if err := dr.o.do(ctx, "reading the replayed rows", func(ctx context.Context) error {
		var err error
		landed, err = dr.o.Sink.Landed(ctx, dr.p, ids)
		return err
	}); err != nil {
		return err
	}
	var replayed, failing []record.Position
	for _, r := range rows {
		// A delete (applied under the version guard) or an ignored
		// tombstone is dealt with once its batch applies.
		if cur, ok := landed[r.ID]; r.Delete || r.Ignore || ok && !r.Newer(&cur) {
			replayed = append(replayed, r.Pos)
			continue
		}
		// Refused by PostgreSQL again: Apply has recorded the new reason
		// in the dead letter's row.
		failing = append(failing, r.Pos)
	}
	dr.rep.Replayed += len(replayed)
	dr.rep.Failing += len(failing)
	if err := dr.o.do(ctx, "recording replayed dead letters", func(ctx context.Context) error {
		return dr.o.Sink.MarkReplayed(ctx, dr.p.Name, replayed)
	}); err != nil {
		return err
	}
	return dr.o.do(ctx, "recording dead letters that failed again", func(ctx context.Context) error {
		return dr.o.Sink.MarkAttempted(ctx, dr.p.Name, failing, make([]string, len(failing)))
	})
}
