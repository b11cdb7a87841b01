package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"
)

const usage = `usage: bench [flags]

Measures idemsink on generated order-line events: first load, redelivery
with and without the ledger, a mixed stream and a large backlog, each beside
the ceiling (bare binary COPY + INSERT ... ON CONFLICT on the same server).

PostgreSQL: a throwaway server from the local binaries (pglocal), unless
-database or TEST_DATABASE_URL names one; the bench then drops and recreates
its own tables there (public.bench_*).
Kafka: an in-process kfake cluster, unless KAFKA_BROKERS (host:port,...) is set;
topics get a per-run suffix.

Scenarios: 1 first load, 2 replay with the ledger reset, 3 replay after a
Kafka offset reset, 4 a mixed stream, 5 a large backlog (see BENCHMARKS.md);
6 freshness: after scenario 1 (which then always runs) and the same first
load at -fresh-linger, new records produced at a steady 10%, 50% and 90% of
scenario 1's rate for -fresh-for each, with the default linger and with
-fresh-linger, reporting per rate p50/p99/max of (commit time of the record's
row in PostgreSQL - the record's Kafka timestamp); needs
track_commit_timestamp (set on the throwaway server); 7 many partitions:
-records records over 600 partitions (20 topics x 30) read by 2 pipelines,
beside scenario 1's 6 partitions (which then always runs).

Each scenario's consumer runs in a child process of this binary, so that its
CPU time and peak RSS are its own, not the broker's or the generator's.

flags:
`

// options are the command-line settings.
type options struct {
	records     int
	keys        int
	update      float64
	dup         float64
	late        float64
	days        int
	wide        float64
	partitions  int
	connections int
	durable     bool
	backlog     int
	scenarios   []int
	quick       bool
	database    string
	brokers     []string
	cpuprofile  string
	memprofile  string
	seed        uint64
	verbose     bool
	timeout     time.Duration
	freshFor    time.Duration
	freshLinger time.Duration
}

func parseFlags(args []string, getenv func(string) string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, usage)
		fs.PrintDefaults()
	}
	fs.IntVar(&o.records, "records", 1_000_000, "records of the first load (scenarios 1-3) and of the mixed stream (scenario 4)")
	fs.IntVar(&o.keys, "keys", 0, "key space of the mixed stream: once this many keys exist, new-key events become updates (0: unbounded)")
	fs.Float64Var(&o.update, "update", 0.10, "scenario 4: share of events that are a newer version of an existing key")
	fs.Float64Var(&o.dup, "dup", 0.05, "scenario 4: share of events that repeat the latest event of an existing key")
	fs.Float64Var(&o.late, "late", 0.02, "share of new-key events whose timestamp lies days behind (an earlier target date)")
	fs.IntVar(&o.days, "days", 3, "target dates the event timestamps spread over")
	fs.Float64Var(&o.wide, "wide", 0, "share of new keys dated anywhere in the two years before the first day (with -scenarios 4 and a high -update: CDC of a table dated by its order date)")
	fs.IntVar(&o.partitions, "partitions", 6, "partitions per topic")
	fs.IntVar(&o.connections, "connections", 0, "the consumer's apply_connections (0: the default)")
	fs.BoolVar(&o.durable, "durable", false, "start the throwaway PostgreSQL with production durability: fsync, synchronous_commit and full_page_writes on")
	fs.IntVar(&o.backlog, "backlog", 5_000_000, "scenario 5: records in the backlog; the comparison run uses a tenth of it")
	sc := fs.String("scenarios", "1,2,3,4,5", "scenarios to run, 1-7 (2, 3, 4, 6 and 7 build on 1, which always runs with them)")
	fs.DurationVar(&o.freshFor, "fresh-for", 20*time.Second, "scenario 6: how long each steady rate is produced")
	fs.DurationVar(&o.freshLinger, "fresh-linger", 50*time.Millisecond, "scenario 6: batch.linger of the low-latency config")
	fs.BoolVar(&o.quick, "quick", false, "small CI-friendly run: 50,000 records, a 200,000-record backlog")
	fs.StringVar(&o.database, "database", "", "PostgreSQL URL (default: TEST_DATABASE_URL, else a throwaway local server)")
	fs.StringVar(&o.cpuprofile, "cpuprofile", "", "write a CPU profile of each scenario's consumer to FILE.s<N> (FILE.ceiling for the ceiling)")
	fs.StringVar(&o.memprofile, "memprofile", "", "write an allocation profile of each scenario's consumer to FILE.s<N>")
	fs.Uint64Var(&o.seed, "seed", 1, "generator seed")
	fs.BoolVar(&o.verbose, "v", false, "log progress and the consumer's warnings")
	fs.DurationVar(&o.timeout, "timeout", 30*time.Minute, "give up on a scenario after this long")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if o.quick {
		if !set["records"] {
			o.records = 50_000
		}
		if !set["backlog"] {
			o.backlog = 200_000
		}
	}
	for _, s := range strings.Split(*sc, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 || n > 7 {
			return o, fmt.Errorf("-scenarios: %q is not a scenario number 1-7", s)
		}
		if !slices.Contains(o.scenarios, n) {
			o.scenarios = append(o.scenarios, n)
		}
	}
	slices.Sort(o.scenarios)
	if o.database == "" {
		o.database = getenv("TEST_DATABASE_URL")
	}
	if b := getenv("KAFKA_BROKERS"); b != "" {
		o.brokers = strings.Split(b, ",")
	}
	switch {
	case o.records < 1 || o.backlog < 10:
		return o, errors.New("-records and -backlog must be positive (backlog at least 10)")
	case o.update < 0 || o.dup < 0 || o.late < 0 || o.wide < 0 || o.update+o.dup > 1 || o.late > 1 || o.wide > 1:
		return o, errors.New("-update, -dup, -late and -wide are shares between 0 and 1, and update+dup at most 1")
	case o.days < 1 || o.partitions < 1:
		return o, errors.New("-days and -partitions must be positive")
	case o.freshFor <= 0 || o.freshLinger <= 0:
		return o, errors.New("-fresh-for and -fresh-linger must be positive")
	}
	return o, nil
}

func (o options) has(n int) bool { return slices.Contains(o.scenarios, n) }

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if spec := getenv(childEnv); spec != "" {
		return runChild(ctx, spec, stdout, stderr)
	}
	o, err := parseFlags(args, getenv, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	level := slog.LevelWarn
	if o.verbose {
		level = slog.LevelInfo
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	return bench(ctx, o, log, stdout, stderr)
}

// bench sets up PostgreSQL and Kafka, runs the selected scenarios and the
// ceiling, and prints the table.
func bench(ctx context.Context, o options, log *slog.Logger, stdout, stderr io.Writer) (err error) {
	e, err := setup(ctx, o, log, stderr)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, e.close()) }()
	rep := &report{o: o, env: e, started: time.Now(), loadStart: loadAvg()}
	progress := func(format string, args ...any) {
		fmt.Fprintf(stderr, "%s  %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
	}

	needLoad := o.has(1) || o.has(2) || o.has(3) || o.has(4) || o.has(6) || o.has(7)
	if needLoad {
		progress("generating and producing %d records (first load)", o.records)
		e.src = newSource(o.seed, o, true)
		seg, err := e.produce(ctx, e.load.Topics[0], o.records, e.src.fresh)
		if err != nil {
			return err
		}
		e.loadSeg = seg
		rep.produced = append(rep.produced, seg)

		progress("ceiling: bare COPY + INSERT ... ON CONFLICT of the same rows, on one connection, then two")
		phases, err := e.ceilingOf(ctx, kindCeiling, "ceiling", seg, profile(o.cpuprofile, "ceiling"))
		if err != nil {
			return err
		}
		written, err := e.writes(ctx, e.ceiling.Table)
		if err != nil {
			return err
		}
		var want int64
		for _, ph := range phases {
			want += ph.Written
		}
		if written != want {
			log.Warn("ceiling: pg_stat_user_tables disagrees with the command tags", "pg_stat", written, "tags", want)
		}
		rep.ceiling = rep.add("ceiling: load", seg, phases[0], phases[0].Written)
		rep.ceilingAgain = rep.add("ceiling: same rows again", seg, phases[1], phases[1].Written)
		rep.ceiling2 = rep.add("ceiling, 2 conns: load", seg, phases[2], phases[2].Written)
		rep.ceiling2Again = rep.add("ceiling, 2 conns: same rows again", seg, phases[3], phases[3].Written)
		fmt.Fprintf(stderr, "          %.0f records/s (load), %.0f records/s (same rows again); on 2 connections %.0f, %.0f\n",
			rep.ceiling.rate(), rep.ceilingAgain.rate(), rep.ceiling2.rate(), rep.ceiling2Again.rate())

		progress("scenario 1: first load of %d records into an empty table", o.records)
		if _, err := e.scenario(ctx, rep, 1, "1 first load", seg, e.load, e.groupLoad, false); err != nil {
			return err
		}
		if err := e.checkRows(ctx, e.load, e.src.keys); err != nil {
			return err
		}
	}
	if o.has(6) {
		// Before scenario 4 adds to the topic: the same records as 1.
		progress("scenario 6: first load again with batch.linger %s (the low-latency config's cost)", o.freshLinger)
		name := fmt.Sprintf("1 first load, linger %s", o.freshLinger)
		if _, err := e.scenario(ctx, rep, 6, name, e.loadSeg, e.loadLL, e.groupLL, false); err != nil {
			return err
		}
		if err := e.checkRows(ctx, e.loadLL, e.src.keys); err != nil {
			return err
		}
	}
	if o.has(7) {
		// Right after scenario 1, so that the two see the same machine.
		if err := e.manyPartitions(ctx, rep, progress); err != nil {
			return err
		}
	}
	if o.has(2) {
		progress("scenario 2: redelivery with Kafka offsets and ledger reset (new group)")
		if _, err := e.scenario(ctx, rep, 2, "2 replay, ledger reset", e.loadSeg, e.load, e.groupReplay, false); err != nil {
			return err
		}
	}
	if o.has(3) {
		progress("scenario 3: redelivery after a Kafka offset reset only")
		if err := e.resetKafkaOffsets(ctx, e.groupLoad, e.load.Topics[0]); err != nil {
			return err
		}
		if _, err := e.scenario(ctx, rep, 3, "3 replay, Kafka reset", e.loadSeg, e.load, e.groupLoad, false); err != nil {
			return err
		}
	}
	if o.has(4) {
		progress("generating and producing %d mixed records (%.0f%% updates, %.0f%% duplicates, %.0f%% late)",
			o.records, 100*o.update, 100*o.dup, 100*o.late)
		before := e.src.kinds
		seg, err := e.produce(ctx, e.load.Topics[0], o.records, e.src.mix)
		if err != nil {
			return err
		}
		rep.produced = append(rep.produced, seg)
		for i := range rep.kinds {
			rep.kinds[i] = e.src.kinds[i] - before[i]
		}
		progress("ceiling: the mixed stream by bare COPY + INSERT ... ON CONFLICT, one connection, over the first load's rows")
		phases, err := e.ceilingOf(ctx, kindCeilingMix, "ceiling mix", seg, profile(o.cpuprofile, "ceiling.mix"))
		if err != nil {
			return err
		}
		rep.ceilingMix = rep.add("ceiling: mix", seg, phases[0], phases[0].Written)
		progress("scenario 4: the mixed stream")
		if _, err := e.scenario(ctx, rep, 4, "4 mix", seg, e.load, e.groupLoad, false); err != nil {
			return err
		}
		if err := e.checkRows(ctx, e.load, e.src.keys); err != nil {
			return err
		}
	}
	if o.has(5) {
		small := o.backlog / 10
		progress("generating and producing backlogs of %d and %d records", small, o.backlog)
		segSmall, err := e.produce(ctx, e.small.Topics[0], small, newSource(o.seed+1, o, false).fresh)
		if err != nil {
			return err
		}
		segBig, err := e.produce(ctx, e.big.Topics[0], o.backlog, newSource(o.seed+1, o, false).fresh)
		if err != nil {
			return err
		}
		rep.produced = append(rep.produced, segSmall, segBig)
		progress("scenario 5: backlog of %d records, default limits", small)
		if _, err := e.scenario(ctx, rep, 5, fmt.Sprintf("5 backlog %s", count(small)), segSmall, e.small, e.groupSmall, false); err != nil {
			return err
		}
		progress("scenario 5: backlog of %d records, default limits", o.backlog)
		if _, err := e.scenario(ctx, rep, 5, fmt.Sprintf("5 backlog %s", count(o.backlog)), segBig, e.big, e.groupBig, false); err != nil {
			return err
		}
		if err := e.checkRows(ctx, e.big, int64(o.backlog)); err != nil {
			return err
		}
	}
	if o.has(6) {
		if err := e.freshness(ctx, rep, progress); err != nil {
			return err
		}
	}
	rep.finished, rep.loadEnd = time.Now(), loadAvg()
	return rep.print(stdout)
}

// durableSettings override pglocal's test settings with production ones.
var durableSettings = []string{"fsync = on", "synchronous_commit = on", "full_page_writes = on"}

// count formats a record count compactly: 500k, 5M.
func count(n int) string {
	switch {
	case n >= 1_000_000 && n%1_000_000 == 0:
		return fmt.Sprintf("%dM", n/1_000_000)
	case n >= 1000 && n%1000 == 0:
		return fmt.Sprintf("%dk", n/1000)
	}
	return strconv.Itoa(n)
}

// ceilingOf runs the ceiling child of kind over seg of the first load's
// topic, into the ceiling's table, once the server has settled.
func (e *env) ceilingOf(ctx context.Context, kind, name string, seg segment, cpuprofile string) ([]phase, error) {
	if err := e.settle(ctx); err != nil {
		return nil, err
	}
	phases, err := e.child(ctx, childSpec{Kind: kind, Name: name, Pipeline: e.ceiling, Topic: e.load.Topics[0],
		Starts: seg.starts, Ends: seg.ends, CPUProfile: cpuprofile})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return phases, nil
}

func profile(prefix, suffix string) string {
	if prefix == "" {
		return ""
	}
	return prefix + "." + suffix
}
