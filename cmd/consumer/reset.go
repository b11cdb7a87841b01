package main

import (
	"cmp"
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
default (--dry-run says so explicitly): it prints the plan (current -> new,
records to read again and records skipped, per partition and in total) and
changes nothing. --execute applies it, refusing while the group has live
members, and refusing a plan that skips records never applied unless
--allow-skip says that is intended. The ledger rows stay locked until Kafka
has taken the new offsets, so a member that starts meanwhile resumes from both
or from neither: it never skips the range, and never starts past it.

"Current" is where the group resumes: the later of Kafka's committed offset
and the ledger's. Records from there on were never applied; a plan that moves
a partition past them skips them, and says so.

The flags are kafka-consumer-groups --reset-offsets' own, with these
differences:
  --shift-by      counts from where the group resumes (the later of Kafka's
                  commit and the ledger), not from Kafka's commit alone.
  --to-datetime   takes Kafka's yyyy-MM-ddTHH:mm:ss.SSS, read as UTC without
                  a zone, or with Z, +hh:mm or +hh; and RFC 3339. A fraction
                  is of a second (.5 is 500 ms; Kafka's tool reads it as 5 ms).
                  +hhmm is refused: Kafka's tool reads +0530 as +05:00.
  --by-duration   takes ISO 8601 as Kafka does (java.time.Duration: PT100H,
                  P4DT4H, PT0.5S; days are 24 h; no years, months or weeks)
                  and Go's 100h or 90m. It must be positive: Kafka's tool takes
                  a negative one as a time in the future.
  --all-topics    every topic the configuration reads (Kafka's tool: every
                  topic the group has committed offsets for). Neither it nor
                  --topic is the same.
  --to-latest     implies --allow-skip; Kafka's tool has no such check.
  --to-offset     beyond the log is clamped to its start or end, reported per
                  partition, as Kafka's tool does.

--to-date finds, per partition, the first record whose target date (the
pipeline's date field, in its time zone) is that date or later, by bisection
over the offsets, reading one record per step. It assumes dates grow with
offsets; records produced far out of date order can move the boundary.

examples:
  consumer offsets reset -config idemsink.yaml --to-date 2026-11-02
  consumer offsets reset -config idemsink.yaml --to-date 2026-11-02 --execute
  consumer offsets reset -config idemsink.yaml --to-datetime 2026-11-02T06:00:00.000 --all-topics --dry-run
  consumer offsets reset -config idemsink.yaml --to-datetime 2026-11-02T06:00:00+01:00 --topic orders:0,1
  consumer offsets reset -config idemsink.yaml --by-duration P1DT6H --execute
  consumer offsets reset -config idemsink.yaml --shift-by -1000 --topic orders --topic refunds:3
  consumer offsets reset -config idemsink.yaml --to-latest --execute
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
			return fmt.Errorf("partition %q is not a partition number (0 or more)", s)
		}
		f[t] = append(f[t], int32(p))
	}
	return nil
}

// target says where a reset moves a partition.
type target struct {
	mode      string
	offset    int64 // --to-offset, --shift-by
	at        time.Time
	date      record.Date
	topics    topicFlag
	execute   bool
	allowSkip bool
	asJSON    bool
	modeFlag  []string // every mode flag that was given
}

var resetModes = []string{"to-earliest", "to-latest", "to-current", "to-offset", "shift-by", "to-datetime", "by-duration", "to-date"}

func resetFlags(fs *flag.FlagSet) func(context.Context, *env) error {
	fs.Bool("to-earliest", false, "reset to the start of the log")
	fs.Bool("to-latest", false, "reset to the end of the log: skips what is not applied yet (implies --allow-skip)")
	fs.Bool("to-current", false, "reset to where the group resumes: puts Kafka and the ledger both there")
	toOffset := fs.Int64("to-offset", 0, "reset to this `offset` (clamped to the log, and said so)")
	shiftBy := fs.Int64("shift-by", 0, "move by `n` records from where the group resumes, the later of Kafka's commit and the ledger (negative: back)")
	toDatetime := fs.String("to-datetime", "", "reset to the first record with a Kafka timestamp at or after `T`: Kafka's yyyy-MM-ddTHH:mm:ss.SSS (UTC) or RFC 3339")
	byDuration := fs.String("by-duration", "", "reset to the first record with a Kafka timestamp at most `D` old: ISO 8601 (PT100H, P4DT4H) or Go (100h)")
	toDate := fs.String("to-date", "", "reset to the first record whose target date is `YYYY-MM-DD` or later")
	t := target{topics: topicFlag{}}
	fs.Var(t.topics, "topic", "only `TOPIC[:P,P]` (repeatable; default: every configured topic)")
	allTopics := fs.Bool("all-topics", false, "every configured topic (the default; Kafka's tool needs it or --topic)")
	dryRun := fs.Bool("dry-run", false, "print the plan and change nothing (the default)")
	fs.BoolVar(&t.execute, "execute", false, "apply the plan (default: a dry run)")
	fs.BoolVar(&t.allowSkip, "allow-skip", false, "with --execute: apply a plan that skips records never applied")
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
		if *dryRun && t.execute {
			return errors.New("offsets reset: --dry-run and --execute conflict: give one")
		}
		if *allTopics && len(t.topics) > 0 {
			return errors.New("offsets reset: --all-topics and --topic conflict: give one")
		}
		switch t.mode {
		case "to-latest":
			t.allowSkip = true
		case "to-offset":
			t.offset = *toOffset
			if t.offset < 0 {
				return fmt.Errorf("offsets reset: --to-offset %d is negative", t.offset)
			}
		case "shift-by":
			t.offset = *shiftBy
		case "to-datetime":
			at, err := parseDatetime(*toDatetime)
			if err != nil {
				return fmt.Errorf("offsets reset: --to-datetime %w", err)
			}
			t.at = at
		case "by-duration":
			d, err := parseDuration(*byDuration)
			if err != nil {
				return fmt.Errorf("offsets reset: --by-duration %w", err)
			}
			if d <= 0 {
				return fmt.Errorf("offsets reset: --by-duration %s is not positive (a time in the future: use --to-latest)", *byDuration)
			}
			t.at = time.Now().Add(-d)
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
	// Current is where the group resumes: the later of Kafka's commit
	// and the ledger.
	Current int64 `json:"current"`
	New     int64 `json:"new"`
	// ReRead is how many records the group reads again (0 or more).
	ReRead int64 `json:"reread"`
	// Skip is how many records from Current (or the log start, if
	// retention deleted what lay before it) up to New were never applied
	// and would not be read.
	Skip int64 `json:"skip"`
	// Clamped is "log start" or "log end" when the offset asked for lay
	// outside the log, Asked that offset.
	Clamped string `json:"clamped,omitempty"`
	Asked   int64  `json:"asked,omitempty"`
}

// note is the partition's remark in the plan: a skip, a clamp, or none.
func (m move) note() string {
	var notes []string
	if m.Skip > 0 {
		notes = append(notes, fmt.Sprintf("skips %d record(s) never applied", m.Skip))
	}
	if m.Clamped != "" {
		notes = append(notes, fmt.Sprintf("clamped to the %s %d (asked %d)", m.Clamped, m.New, m.Asked))
	}
	return strings.Join(notes, "; ")
}

// resetPlan is what `offsets reset` prints, in text or JSON.
type resetPlan struct {
	Group    string   `json:"group"`
	Mode     string   `json:"mode"`
	Executed bool     `json:"executed"`
	Moves    []move   `json:"partitions"`
	ReRead   int64    `json:"reread"`
	Skipped  int64    `json:"skipped"`
	Clamped  int      `json:"clamped"`
	Notes    []string `json:"notes"`
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
	p := resetPlan{Group: e.cfg.Group, Mode: t.modeFlag[0], Moves: moves, Notes: []string{}}
	for _, m := range moves {
		p.ReRead += m.ReRead
		p.Skipped += m.Skip
		if m.Clamped != "" {
			p.Clamped++
		}
	}
	var refuse error
	if p.Skipped > 0 && !t.allowSkip {
		refuse = fmt.Errorf("the plan skips %d record(s) never applied (past where the group resumes); add --allow-skip if that is intended", p.Skipped)
	}
	live := c.refuseLive(ctx, "an offsets reset --execute")
	refuse = cmp.Or(refuse, live)
	switch {
	case t.execute && refuse != nil:
		p.Notes = append(p.Notes, "refused: nothing changed: "+refuse.Error())
	case t.execute:
		if err := c.apply(ctx, moves); err != nil {
			return err
		}
		p.Executed = true
	default:
		p.Notes = append(p.Notes, "dry run: nothing changed; add --execute to apply")
		if p.Skipped > 0 && !t.allowSkip {
			p.Notes = append(p.Notes, "--execute would refuse: "+refuse.Error())
		}
		if live != nil {
			p.Notes = append(p.Notes, "--execute would refuse now: "+live.Error())
		}
	}
	if p.Clamped > 0 {
		p.Notes = append(p.Notes, fmt.Sprintf("%d partition(s) clamped to the log", p.Clamped))
	}
	if err := printPlan(e, p, t.asJSON); err != nil {
		return err
	}
	if t.execute && refuse != nil {
		return fmt.Errorf("offsets reset: %w", refuse)
	}
	return nil
}

func printPlan(e *env, p resetPlan, asJSON bool) error {
	if asJSON {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(p)
	}
	state := "dry run: nothing changed; add --execute to apply"
	switch {
	case p.Executed:
		state = "executed: Kafka and the ledger moved"
	case len(p.Notes) > 0 && strings.HasPrefix(p.Notes[0], "refused"):
		state = "refused: nothing changed"
	}
	fmt.Fprintf(e.stdout, "group %s: offsets reset %s (%s)\n", p.Group, p.Mode, state)
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TOPIC\tPARTITION\tCURRENT\tNEW\tRE-READ\tSKIP\tNOTE")
	for _, m := range p.Moves {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%s\n", m.Topic, m.Partition, m.Current, m.New, m.ReRead, m.Skip, cmp.Or(m.note(), "-"))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if p.Skipped > 0 {
		fmt.Fprintf(e.stdout, "total: %d record(s) to read again; skips %d record(s) never applied\n", p.ReRead, p.Skipped)
	} else {
		fmt.Fprintf(e.stdout, "total: %d record(s) to read again, 0 skipped\n", p.ReRead)
	}
	for _, n := range p.Notes {
		if !strings.HasPrefix(n, "dry run:") && !strings.HasPrefix(n, "refused: ") {
			fmt.Fprintln(e.stdout, "note:", n)
		}
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
		case "to-current":
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
		moves = append(moves, newMove(p, cur, next))
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

// newMove is p's line of the plan: from cur to next, clamped to the log.
func newMove(p position, cur, next int64) move {
	m := move{Topic: p.Topic, Partition: p.Partition, Current: cur, New: min(max(next, p.Start), p.End)}
	if m.New != next {
		m.Clamped, m.Asked = "log end", next
		if next < p.Start {
			m.Clamped = "log start"
		}
	}
	m.ReRead = max(cur-m.New, 0)
	m.Skip = max(m.New-max(cur, p.Start), 0)
	return m
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
