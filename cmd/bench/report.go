package main

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/idemsink/idemsink/internal/gen"
)

// row is one line of the result table.
type row struct {
	name    string
	records int64
	bytes   int64
	phase
	// written is rows inserted or updated in the target table by
	// pg_stat_user_tables (n_tup_ins + n_tup_upd), or by command tags for
	// the ceiling.
	written int64
}

func (r *row) rate() float64 { return float64(r.records) / r.Wall }

type report struct {
	o                     options
	loadStart, loadEnd    string
	env                   *env
	started, finished     time.Time
	rows                  []*row
	ceiling, ceilingAgain *row
	// ceilingMix is scenario 4's stream by the same loop (one connection).
	ceilingMix *row
	// ceiling2 and ceiling2Again are the same loop on two connections.
	ceiling2, ceiling2Again *row
	produced                []segment
	kinds                   [4]int64
	// fresh is scenario 6's table; freshPeakRSS the peak RSS of each
	// config's consumer over its three rates.
	fresh        []freshRow
	freshPeakRSS []int64
}

func (rep *report) add(name string, seg segment, ph phase, written int64) *row {
	r := &row{name: name, records: seg.records, bytes: seg.bytes, phase: ph, written: written}
	rep.rows = append(rep.rows, r)
	return r
}

func (rep *report) find(prefix string) *row {
	for _, r := range rep.rows {
		if strings.HasPrefix(r.name, prefix) {
			return r
		}
	}
	return nil
}

func (rep *report) print(w io.Writer) error {
	e := rep.env
	fmt.Fprintf(w, "\nidemsink bench, %s, %s/%s, %d CPUs (GOMAXPROCS %d), Go %s\n", rep.started.Format("2006-01-02"),
		runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), runtime.GOMAXPROCS(0), runtime.Version())
	pg := "external PostgreSQL (-database / TEST_DATABASE_URL)"
	if e.pg != nil {
		pg = "throwaway local PostgreSQL (pglocal: fsync=off, synchronous_commit=off, full_page_writes=off, shared_buffers=128MB)"
		if rep.o.durable {
			pg = "throwaway local PostgreSQL, durable (-durable: fsync=on, synchronous_commit=on, full_page_writes=on, shared_buffers=128MB)"
		}
	}
	if rep.o.connections > 0 {
		pg += fmt.Sprintf("; consumer apply_connections %d", rep.o.connections)
	}
	kafka := "Kafka at " + strings.Join(e.brokers, ",")
	if e.cluster != nil {
		kafka = "in-process kfake broker (in the parent process)"
	}
	fmt.Fprintf(w, "database: %s\nkafka: %s, %d partitions, snappy (franz-go's default)\n", pg, kafka, rep.o.partitions)
	fmt.Fprintf(w, "events: target dates over %d days, %.0f%% late", rep.o.days, 100*rep.o.late)
	if rep.o.wide > 0 {
		fmt.Fprintf(w, ", %.0f%% of new keys dated over the two years before", 100*rep.o.wide)
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "batches: %d records, linger %s (defaults); consumer and ceiling each in their own child process\n",
		e.load.Batch.MaxRecords, e.load.Batch.Linger)
	fmt.Fprintf(w, "load average (1, 5, 15 min) at start %s, at end %s\n\n", rep.loadStart, rep.loadEnd)

	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "Scenario\tRecords\tWall s\tRecords/s\tMB/s\t× ceiling\tBatch p50 ms\tBatch p99 ms\tCPU s/M rec\tPG CPU s/M rec\tPeak RSS MiB\tRows written\tWAL MB\t")
	for _, r := range rep.rows {
		ratio := "-"
		switch {
		case rep.ceilingMix != nil && strings.HasPrefix(r.name, "4 "):
			ratio = fmt.Sprintf("%.2f (mix)", r.rate()/rep.ceilingMix.rate())
		case rep.ceiling != nil:
			ratio = fmt.Sprintf("%.2f", r.rate()/rep.ceiling.rate())
		}
		perM := float64(r.records) / 1e6
		pgCPU := "n/a"
		if r.ServerCPU >= 0 {
			pgCPU = fmt.Sprintf("%.2f", r.ServerCPU/perM)
		}
		wal := "n/a"
		if r.WAL >= 0 {
			wal = fmt.Sprintf("%.1f", float64(r.WAL)/1e6)
		}
		fmt.Fprintf(tw, "%s\t%d\t%.2f\t%.0f\t%.1f\t%s\t%.1f\t%.1f\t%.2f\t%s\t%.0f\t%d\t%s\t\n",
			r.name, r.records, r.Wall, r.rate(), float64(r.bytes)/1e6/r.Wall, ratio, r.P50, r.P99,
			r.CPU/perM, pgCPU, float64(r.PeakRSS)/(1<<20), r.written, wal)
	}
	if err := tw.Flush(); err != nil {
		return err
	}

	fmt.Fprintln(w, "\nWhat each transaction did (from the sink's results; date entries: batch-log entries, one per target date of a transaction):")
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "Scenario\tTransactions\tDate entries\tInserted\tUpdated\tUnchanged\tStale\tIn-batch dup\tSkipped\tIn tx s\tStage s\tUpsert s\tVerify s\t")
	for _, r := range rep.rows {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%.2f\t%.2f\t%.2f\t%.2f\t\n", r.name, r.Batches, r.DateLog, r.Inserted, r.Updated,
			r.Unchanged, r.Stale, r.Superseded, r.Skipped, r.Tx, r.Stage, r.Upsert, r.Verify)
	}
	if err := tw.Flush(); err != nil {
		return err
	}

	fmt.Fprintln(w, "\nTargets:")
	s1, s2, s3 := rep.find("1 "), rep.find("2 "), rep.find("3 ")
	if s1 != nil && rep.ceiling != nil {
		fmt.Fprintf(w, "  scenario 1 / ceiling            %.2f×  (target ≥ 1.0×)\n", s1.rate()/rep.ceiling.rate())
	}
	if s1 != nil && rep.ceiling2 != nil {
		fmt.Fprintf(w, "  scenario 1 / 2-conn ceiling     %.2f×  (aim 0.9×)\n", s1.rate()/rep.ceiling2.rate())
	}
	if s4 := rep.find("4 "); s4 != nil && rep.ceilingMix != nil {
		fmt.Fprintf(w, "  scenario 4 / ceiling mix        %.2f×  (target ≥ 0.9×; against the load ceiling %.2f×)\n", s4.rate()/rep.ceilingMix.rate(), s4.rate()/rep.ceiling.rate())
	}
	if s1 != nil && s2 != nil {
		fmt.Fprintf(w, "  scenario 2 / scenario 1         %.2f×  (target ≥ 1.5×), rows written %d (target 0)\n", s2.rate()/s1.rate(), s2.written)
		if rep.ceilingAgain != nil {
			fmt.Fprintf(w, "  scenario 2 / ceiling same rows  %.2f×  (target ≥ 1.0×), WAL %.1f MB\n", s2.rate()/rep.ceilingAgain.rate(), float64(s2.WAL)/1e6)
		}
	}
	if s1 != nil && s3 != nil {
		fmt.Fprintf(w, "  scenario 3 / scenario 1         %.2f×  (target ≥ 5×), rows written %d\n", s3.rate()/s1.rate(), s3.written)
	}
	var backlog []*row
	for _, r := range rep.rows {
		if strings.HasPrefix(r.name, "5 ") {
			backlog = append(backlog, r)
		}
	}
	if len(backlog) == 2 {
		small, big := backlog[0], backlog[1]
		fmt.Fprintf(w, "  scenario 5 peak RSS             %.0f MiB at %s records, %.0f MiB at %s (%+.0f%%)  (target < 256 MiB, within 20%%)\n",
			float64(big.PeakRSS)/(1<<20), count(int(big.records)), float64(small.PeakRSS)/(1<<20), count(int(small.records)),
			100*(float64(big.PeakRSS)/float64(small.PeakRSS)-1))
	}

	if s1 != nil {
		if ll := rep.find("1 first load, linger"); ll != nil {
			fmt.Fprintf(w, "  %s / scenario 1   %.2f×  (the low-latency config's cost in throughput)\n", ll.name, ll.rate()/s1.rate())
		}
		if s7 := rep.find("7 "); s7 != nil {
			fmt.Fprintf(w, "  scenario 7 / scenario 1         %.2f×  (target ≥ 0.9×), peak RSS %.0f MiB (target ≤ 256 MiB; scenario 1 %.0f MiB), first batch after %.2fs (scenario 1 %.2fs)\n",
				s7.rate()/s1.rate(), float64(s7.PeakRSS)/(1<<20), float64(s1.PeakRSS)/(1<<20), s7.FirstBatch, s1.FirstBatch)
		}
	}
	for _, f := range rep.fresh {
		if f.config == "default" && f.share == 0.5 {
			limit := float64(f.linger.Milliseconds()) + 250
			verdict := "met"
			if f.p99 > limit {
				verdict = "missed"
			}
			fmt.Fprintf(w, "  scenario 6 p99 at 50%%, default  %.0f ms  (target ≤ linger + 250 ms = %.0f ms: %s)\n", f.p99, limit, verdict)
		}
	}
	if len(rep.fresh) > 0 {
		fmt.Fprintln(w, "\nScenario 6, freshness: commit time of the row in PostgreSQL (pg_xact_commit_timestamp of its xmin) - the record's Kafka timestamp:")
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "Config\tLinger\tShare of s1\tAsked rec/s\tProduced rec/s\tRecords\tp50 ms\tp99 ms\tMax ms\tDrain s\tConsumer CPU s\tCPU s/M rec\tLoad at end\t")
		for _, f := range rep.fresh {
			fmt.Fprintf(tw, "%s\t%s\t%.0f%%\t%.0f\t%.0f\t%d\t%.0f\t%.0f\t%.0f\t%.2f\t%.1f\t%.2f\t%s\t\n", f.config, f.linger, 100*f.share, f.target,
				f.produced, f.records, f.p50, f.p99, f.max, f.drain, f.cpu, f.cpu/(float64(f.records)/1e6), f.load)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		for i, rss := range rep.freshPeakRSS {
			fmt.Fprintf(w, "  consumer %d peak RSS %.0f MiB\n", i+1, float64(rss)/(1<<20))
		}
	}

	fmt.Fprintln(w, "\nProduction (not part of any scenario):")
	for _, s := range rep.produced {
		fmt.Fprintf(w, "  %d records, %.1f MB to %s in %.1fs (%.0f records/s)\n", s.records, float64(s.bytes)/1e6, s.topic,
			s.took.Seconds(), float64(s.records)/s.took.Seconds())
	}
	if rep.kinds != [4]int64{} {
		fmt.Fprintf(w, "  mixed stream: %d %s, %d %s, %d %s\n", rep.kinds[gen.Fresh], gen.Fresh, rep.kinds[gen.Update], gen.Update,
			rep.kinds[gen.Duplicate], gen.Duplicate)
	}
	fmt.Fprintf(w, "total time %s\n", rep.finished.Sub(rep.started).Round(time.Second))
	return nil
}

// loadAvg returns the 1, 5 and 15 minute load averages: a run on a busy
// machine measures the other load as much as idemsink.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}
