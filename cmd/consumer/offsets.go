package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/idemsink/idemsink/internal/config"
	"github.com/idemsink/idemsink/internal/kafka"
	"github.com/idemsink/idemsink/internal/record"
	"github.com/idemsink/idemsink/internal/sink"
)

const offsetsHelp = `Show, per topic and partition in order: Kafka's committed offset, the ledger's
next offset (applied + 1), the log's start and end, the lag (records from where
the group resumes to the end), the member that owns the partition now, and when
the group last applied a batch of it. "-" is none.

examples:
  consumer offsets -config idemsink.yaml
  consumer offsets -config idemsink.yaml --json | jq '.[] | select(.lag > 0)'
`

func offsetsFlags(fs *flag.FlagSet) func(context.Context, *env) error {
	asJSON := fs.Bool("json", false, "print JSON instead of a table")
	return func(ctx context.Context, e *env) error {
		c, err := openCluster(ctx, e)
		if err != nil {
			return err
		}
		defer c.close()
		ps, _, err := c.positions(ctx, e.cfg.Topics())
		if err != nil {
			return err
		}
		if *asJSON {
			enc := json.NewEncoder(e.stdout)
			enc.SetIndent("", "  ")
			return enc.Encode(ps)
		}
		tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "TOPIC\tPARTITION\tKAFKA COMMITTED\tLEDGER NEXT\tLOG START\tLOG END\tLAG\tMEMBER\tLAST BATCH")
		for _, p := range ps {
			last := "-"
			if p.LastBatch != nil {
				last = p.LastBatch.Local().Format(time.DateTime)
			}
			fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%d\t%d\t%d\t%s\t%s\n", p.Topic, p.Partition, dash(p.Committed), dash(p.LedgerNext),
				p.Start, p.End, p.Lag, cmp.Or(p.Member, "-"), last)
		}
		return tw.Flush()
	}
}

func dash(n int64) string {
	if n < 0 {
		return "-"
	}
	return fmt.Sprint(n)
}

// cluster is what the admin commands work with: the database through the
// sink's functions, and Kafka through the one client recipe.
type cluster struct {
	cfg   *config.Config
	pool  *pgxpool.Pool
	sink  *sink.Sink
	adm   *kadm.Client
	close func()
}

func openCluster(ctx context.Context, e *env) (*cluster, error) {
	pool, err := connect(ctx, e.cfg)
	if err != nil {
		return nil, err
	}
	adm, closeAdm, err := kafka.NewAdmin(e.cfg, e.log)
	if err != nil {
		pool.Close()
		return nil, err
	}
	return &cluster{cfg: e.cfg, pool: pool, adm: adm, sink: sink.New(pool, e.cfg, sink.Options{Logger: e.log}),
		close: func() { closeAdm(); pool.Close() }}, nil
}

// position is where a partition stands, for the group, the ledger and the
// log. Offsets are -1 where there is none.
type position struct {
	Topic      string `json:"topic"`
	Partition  int32  `json:"partition"`
	Committed  int64  `json:"kafka_committed"`
	LedgerNext int64  `json:"ledger_next"`
	Generation int32  `json:"ledger_generation"`
	Start      int64  `json:"log_start"`
	End        int64  `json:"log_end"`
	// Lag counts the records from where the group resumes (the further of
	// Kafka's commit and the ledger) to the end of the log.
	Lag       int64      `json:"lag"`
	Member    string     `json:"member,omitempty"`
	LastBatch *time.Time `json:"last_batch,omitempty"`
}

func (p *position) tp() record.TP { return record.TP{Topic: p.Topic, Partition: p.Partition} }

// resume is where the group would start reading the partition: the further
// of Kafka's commit and the ledger, else the log start or end by
// start_offset.
func (p *position) resume(startOffset string) int64 {
	if r := max(p.Committed, p.LedgerNext); r >= 0 {
		return r
	}
	if startOffset == "latest" {
		return p.End
	}
	return p.Start
}

// positions returns the partitions of topics in order, and the group as
// the broker describes it.
func (c *cluster) positions(ctx context.Context, topics []string) ([]position, kadm.DescribedGroup, error) {
	var g kadm.DescribedGroup
	starts, err := listOffsets(ctx, "list log start offsets", func() (kadm.ListedOffsets, error) {
		return c.adm.ListStartOffsets(ctx, topics...)
	})
	if err != nil {
		return nil, g, err
	}
	// The end is the last stable offset: what a read_committed consumer,
	// as the daemon is, can read.
	ends, err := listOffsets(ctx, "list log end offsets", func() (kadm.ListedOffsets, error) {
		return c.adm.ListCommittedOffsets(ctx, topics...)
	})
	if err != nil {
		return nil, g, err
	}
	committed, err := c.adm.FetchOffsets(ctx, c.cfg.Group)
	if errors.Is(err, kerr.GroupIDNotFound) {
		err = nil // a group that never committed
	}
	if err != nil {
		return nil, g, fmt.Errorf("fetch committed offsets of group %s: %w", c.cfg.Group, err)
	}
	ledger, err := c.sink.Offsets(ctx, c.cfg.Group)
	if err != nil {
		return nil, g, err
	}
	applied := map[record.TP]sink.Offset{}
	for _, o := range ledger {
		applied[o.TP] = o
	}
	last, err := c.sink.LastBatches(ctx, c.cfg.Group)
	if err != nil {
		return nil, g, err
	}
	g, err = c.describe(ctx)
	if err != nil {
		return nil, g, err
	}
	owners := map[record.TP]string{}
	for _, m := range g.Members {
		if a, ok := m.Assigned.AsConsumer(); ok {
			for _, t := range a.Topics {
				for _, p := range t.Partitions {
					owners[record.TP{Topic: t.Topic, Partition: p}] = memberName(m)
				}
			}
		}
	}
	var out []position
	ends.Each(func(o kadm.ListedOffset) {
		p := position{Topic: o.Topic, Partition: o.Partition, Committed: -1, LedgerNext: -1, End: o.Offset}
		if s, ok := starts.Lookup(o.Topic, o.Partition); ok {
			p.Start = s.Offset
		}
		if k, ok := committed.Lookup(o.Topic, o.Partition); ok && k.At >= 0 {
			p.Committed = k.At
		}
		if l, ok := applied[p.tp()]; ok {
			p.Generation = l.Generation
			if l.Applied >= 0 {
				p.LedgerNext = l.Applied + 1
			}
		}
		p.Lag = max(p.End-p.resume(c.cfg.StartOffset), 0)
		p.Member = owners[p.tp()]
		if t, ok := last[p.tp()]; ok {
			p.LastBatch = &t
		}
		out = append(out, p)
	})
	slices.SortFunc(out, func(a, b position) int {
		return cmp.Or(strings.Compare(a.Topic, b.Topic), cmp.Compare(a.Partition, b.Partition))
	})
	return out, g, nil
}

func (c *cluster) describe(ctx context.Context) (kadm.DescribedGroup, error) {
	groups, err := c.adm.DescribeGroups(ctx, c.cfg.Group)
	if err != nil {
		return kadm.DescribedGroup{}, fmt.Errorf("describe group %s: %w", c.cfg.Group, err)
	}
	g := groups[c.cfg.Group]
	if g.Err != nil && !errors.Is(g.Err, kerr.GroupIDNotFound) {
		return g, fmt.Errorf("describe group %s: %w", c.cfg.Group, g.Err)
	}
	return g, nil
}

// memberName is how a member is shown: its static instance id if it has
// one, else its member id, with the host it runs on.
func memberName(m kadm.DescribedGroupMember) string {
	id := m.MemberID
	if m.InstanceID != nil {
		id = *m.InstanceID
	}
	return fmt.Sprintf("%s@%s", id, strings.TrimPrefix(m.ClientHost, "/"))
}

// refuseLive returns an error naming the group's members, if it has any:
// a reset under a running member would be undone by its next commit. A
// member that has not written the ledger for a session timeout may be one
// that crashed and that the broker keeps until its session times out.
func (c *cluster) refuseLive(ctx context.Context, what string) error {
	g, err := c.describe(ctx)
	if err != nil || len(g.Members) == 0 {
		return err
	}
	ledger, err := c.sink.Offsets(ctx, c.cfg.Group)
	if err != nil {
		return err
	}
	lastWrite := map[string]time.Time{}
	for _, o := range ledger {
		if o.UpdatedAt.After(lastWrite[o.Member]) {
			lastWrite[o.Member] = o.UpdatedAt
		}
	}
	var names []string
	for _, m := range g.Members {
		t, ok := lastWrite[m.MemberID]
		note := "wrote the ledger " + time.Since(t).Round(time.Second).String() + " ago"
		if !ok || time.Since(t) > c.cfg.SessionTimeout {
			note = fmt.Sprintf("no ledger write for over session_timeout (%s): it may be a crashed member the broker keeps until its session times out", c.cfg.SessionTimeout)
		}
		names = append(names, fmt.Sprintf("%s (client %s; %s)", memberName(m), m.ClientID, note))
	}
	return fmt.Errorf("group %s is %s with %d live member(s): %s; stop them (or wait out the session timeout) before %s",
		c.cfg.Group, g.State, len(g.Members), strings.Join(names, ", "), what)
}

// listOffsets runs list and asks again, for up to listPatience, while a
// partition answers with a retriable error (a leader moving, a topic just
// created): an operator's command should not fail on a broker's hiccup.
func listOffsets(ctx context.Context, what string, list func() (kadm.ListedOffsets, error)) (kadm.ListedOffsets, error) {
	deadline := time.Now().Add(listPatience)
	for {
		offs, err := list()
		if err == nil {
			err = offs.Error()
		}
		if err == nil {
			return offs, nil
		}
		if !kerr.IsRetriable(err) || time.Now().After(deadline) {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%s: %w", what, err)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// listPatience bounds how long listOffsets asks again.
const listPatience = 15 * time.Second
