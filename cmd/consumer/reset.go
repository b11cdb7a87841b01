package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/idemsink/idemsink/internal/config"
	"github.com/idemsink/idemsink/internal/decode"
	"github.com/idemsink/idemsink/internal/record"
	"github.com/idemsink/idemsink/internal/replay"
)

const resetHelp = `Move the group's offsets for a backfill, in Kafka and in the ledger. Exactly
one of the --to-*/--shift-by/--by-duration flags says where to. A dry run by
default: it prints the plan (current -> new, records to read again per
partition, total) and changes nothing. --execute applies it, refusing while
the group has live members. The ledger rows stay locked until Kafka has taken
the new offsets, so a member that starts meanwhile resumes from both or from
neither: it never skips the range, and never starts past it.

--to-date finds, per partition, the first record whose target date (the
pipeline's date field, in its time zone) is that date or later, by bisection
over the offsets, reading one record per step. It assumes dates grow with
offsets; records produced far out of date order can move the boundary.

examples:
  consumer offsets reset -config idemsink.yaml --to-date 2026-11-02
  consumer offsets reset -config idemsink.yaml --to-date 2026-11-02 --execute
  consumer offsets reset -config idemsink.yaml --to-datetime 2026-11-02T06:00:00+01:00 --topic orders:0,1
  consumer offsets reset -config idemsink.yaml --by-duration 6h --execute
  consumer offsets reset -config idemsink.yaml --shift-by -1000 --topic orders --topic refunds:3
`

// topicFlag collects --topic T[:P,P] values; nil partitions mean all.
type topicFlag map[string][]int32

func (f topicFlag) String() string { return "" }

func (f topicFlag) Set(v string) error {
	t, ps, hasParts := strings.Cut(v, ":")
	if t == "" {
		return errors.New("want TOPIC or TOPIC:P,P")
	}
	if !hasParts {
		f[t] = nil
		return nil
	}
	for _, s := range strings.Split(ps, ",") {
		p, err := strconv.ParseInt(s, 10, 32)
		if err != nil || p < 0 {
			return fmt.Errorf("partition %q is not a number", s)
		}
		f[t] = append(f[t], int32(p))
	}
	return nil
}

// target says where a reset moves a partition.
type target struct {
	mode     string
	offset   int64 // --to-offset, --shift-by
	at       time.Time
	date     record.Date
	topics   topicFlag
	execute  bool
	asJSON   bool
	modeFlag []string // every mode flag that was given
}

var resetModes = []string{"to-earliest", "to-latest", "to-offset", "shift-by", "to-datetime", "by-duration", "to-date"}

func resetFlags(fs *flag.FlagSet) func(context.Context, *env) error {
	fs.Bool("to-earliest", false, "reset to the start of the log")
	fs.Bool("to-latest", false, "reset to the end of the log (skips what is not read yet)")
	toOffset := fs.Int64("to-offset", 0, "reset to this `offset` (clamped to the log)")
	shiftBy := fs.Int64("shift-by", 0, "move by `n` records from where the group resumes (negative: back)")
	toDatetime := fs.String("to-datetime", "", "reset to the first record with a Kafka timestamp at or after `T` (RFC 3339)")
	byDuration := fs.Duration("by-duration", 0, "reset to the first record with a Kafka timestamp at most `D` old")
	toDate := fs.String("to-date", "", "reset to the first record whose target date is `YYYY-MM-DD` or later")
	t := target{topics: topicFlag{}}
	fs.Var(t.topics, "topic", "only `TOPIC[:P,P]` (repeatable; default: every configured topic)")
	fs.BoolVar(&t.execute, "execute", false, "apply the plan (default: a dry run)")
	fs.BoolVar(&t.asJSON, "json", false, "print the plan as JSON")
	return func(ctx context.Context, e *env) error {
		fs.Visit(func(f *flag.Flag) {
			if slices.Contains(resetModes, f.Name) {
				if v := f.Value.String(); v != "true" {
					t.modeFlag = append(t.modeFlag, "--"+f.Name+" "+v)
				} else {
					t.modeFlag = append(t.modeFlag, "--"+f.Name)
				}
				t.mode = f.Name
			}
		})
		if len(t.modeFlag) != 1 {
			return fmt.Errorf("offsets reset: give exactly one of --%s (got %d)", strings.Join(resetModes, ", --"), len(t.modeFlag))
		}
		switch t.mode {
		case "to-offset":
			t.offset = *toOffset
			if t.offset < 0 {
				return fmt.Errorf("offsets reset: --to-offset %d is negative", t.offset)
			}
		case "shift-by":
			t.offset = *shiftBy
		case "to-datetime":
			at, err := time.Parse(time.RFC3339Nano, *toDatetime)
			if err != nil {
				return fmt.Errorf("offsets reset: --to-datetime %q is not RFC 3339 (2026-11-02T06:00:00Z)", *toDatetime)
			}
			t.at = at
		case "by-duration":
			if *byDuration <= 0 {
				return fmt.Errorf("offsets reset: --by-duration %s is not positive", *byDuration)
			}
			t.at = time.Now().Add(-*byDuration)
		case "to-date":
			d, err := record.ParseDate(*toDate)
			if err != nil {
				return fmt.Errorf("offsets reset: --to-date %q is not YYYY-MM-DD", *toDate)
			}
			t.date = d
		}
		return reset(ctx, e, t)
	}
}

// move is one partition's line of a reset plan.
type move struct {
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	Current   int64  `json:"current"`
	New       int64  `json:"new"`
	// ReRead is how many records the group reads again; negative, how many
	// it skips.
	ReRead int64 `json:"reread"`
}

func reset(ctx context.Context, e *env, t target) error {
	c, err := openCluster(ctx, e)
	if err != nil {
		return err
	}
	defer c.close()
	moves, err := c.plan(ctx, e, t)
	if err != nil {
		return err
	}
	var total, skipped int64
	for _, m := range moves {
		if m.ReRead > 0 {
			total += m.ReRead
		} else {
			skipped -= m.ReRead
		}
	}
	live := c.refuseLive(ctx, "an offsets reset --execute")
	if t.execute {
		if live != nil {
			return live
		}
		if err := c.apply(ctx, moves); err != nil {
			return err
		}
	}
	if t.asJSON {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(struct {
			Group    string `json:"group"`
			Executed bool   `json:"executed"`
			Moves    []move `json:"partitions"`
			ReRead   int64  `json:"reread"`
			Skipped  int64  `json:"skipped"`
		}{e.cfg.Group, t.execute, moves, total, skipped})
	}
	state := "dry run: nothing changed; add --execute to apply"
	if t.execute {
		state = "executed: Kafka and the ledger moved"
	}
	fmt.Fprintf(e.stdout, "group %s: offsets reset %s (%s)\n", e.cfg.Group, t.modeFlag[0], state)
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TOPIC\tPARTITION\tCURRENT\tNEW\tRE-READ")
	for _, m := range moves {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\n", m.Topic, m.Partition, m.Current, m.New, m.ReRead)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "total: %d record(s) to read again, %d skipped\n", total, skipped)
	if !t.execute && live != nil {
		fmt.Fprintf(e.stdout, "note: --execute would refuse now: %v\n", live)
	}
	return nil
}

// plan computes the new offset of every chosen partition.
func (c *cluster) plan(ctx context.Context, e *env, t target) ([]move, error) {
	topics := e.cfg.Topics()
	for topic := range t.topics {
		if !slices.Contains(topics, topic) {
			return nil, fmt.Errorf("offsets reset: topic %q is not read by any pipeline", topic)
		}
	}
	if len(t.topics) > 0 {
		topics = topics[:0:0]
		for topic := range t.topics {
			topics = append(topics, topic)
		}
	}
	ps, _, err := c.positions(ctx, topics)
	if err != nil {
		return nil, err
	}
	var found kadm.ListedOffsets
	if !t.at.IsZero() {
		if found, err = listOffsets(ctx, "list offsets at "+t.at.Format(time.RFC3339), func() (kadm.ListedOffsets, error) {
			return c.adm.ListOffsetsAfterMilli(ctx, t.at.UnixMilli(), topics...)
		}); err != nil {
			return nil, err
		}
	}
	have := map[record.TP]bool{}
	var moves []move
	for _, p := range ps {
		have[p.tp()] = true
		if parts := t.topics[p.Topic]; parts != nil && !slices.Contains(parts, p.Partition) {
			continue
		}
		cur := p.resume(e.cfg.StartOffset)
		next := cur
		switch t.mode {
		case "to-earliest":
			next = p.Start
		case "to-latest":
			next = p.End
		case "to-offset":
			next = t.offset
		case "shift-by":
			next = cur + t.offset
		case "to-datetime", "by-duration":
			next = p.End
			if o, ok := found.Lookup(p.Topic, p.Partition); ok && o.Offset >= 0 {
				next = o.Offset
			}
		case "to-date":
			dec := decoderFor(e.cfg, p.Topic)
			if next, err = replay.SearchDate(ctx, e.cfg, e.log, dec, p.tp(), p.Start, p.End, t.date); err != nil {
				return nil, fmt.Errorf("search %s for %s: %w", p.tp(), t.date, err)
			}
		}
		next = min(max(next, p.Start), p.End)
		moves = append(moves, move{Topic: p.Topic, Partition: p.Partition, Current: cur, New: next, ReRead: cur - next})
	}
	for topic, parts := range t.topics {
		for _, p := range parts {
			if !have[record.TP{Topic: topic, Partition: p}] {
				return nil, fmt.Errorf("offsets reset: topic %s has no partition %d", topic, p)
			}
		}
	}
	return moves, nil
}

// apply moves the ledger and Kafka together: the ledger's rows are written
// and kept locked while Kafka commits, and the ledger keeps its change only
// if Kafka took it. Kafka refuses a commit from outside the group while the
// group has members, so a member that joined after the check undoes
// nothing: the commit fails and the ledger rolls back.
func (c *cluster) apply(ctx context.Context, moves []move) error {
	next := map[record.TP]int64{}
	var offs kadm.Offsets
	for _, m := range moves {
		next[record.TP{Topic: m.Topic, Partition: m.Partition}] = m.New
		offs.AddOffset(m.Topic, m.Partition, m.New, -1)
	}
	return c.sink.SetOffsets(ctx, c.cfg.Group, next, func(ctx context.Context) error {
		resp, err := c.adm.CommitOffsets(ctx, c.cfg.Group, offs)
		if err == nil {
			err = resp.Error()
		}
		if err != nil {
			return fmt.Errorf("commit the new offsets to Kafka (the ledger is left as it was): %w", err)
		}
		return nil
	})
}

// decoderFor returns the decoder of the pipeline that reads topic.
func decoderFor(cfg *config.Config, topic string) *decode.Decoder {
	for i := range cfg.Pipelines {
		if slices.Contains(cfg.Pipelines[i].Topics, topic) {
			return decode.NewDecoder(&cfg.Pipelines[i])
		}
	}
	return nil
}
