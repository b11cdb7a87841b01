package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"runtime/debug"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	oklog "github.com/oklog/run"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/idemsink/idemsink/internal/config"
	"github.com/idemsink/idemsink/internal/consume"
	"github.com/idemsink/idemsink/internal/demo"
	"github.com/idemsink/idemsink/internal/fault"
	"github.com/idemsink/idemsink/internal/metrics"
	"github.com/idemsink/idemsink/internal/sink"
	"github.com/idemsink/idemsink/migrations"
)

const usage = `usage: consumer <command> [flags]

commands:
  run      consume the configured topics into PostgreSQL (migrates first)
  migrate  apply the ledger migrations and create the target tables
  offsets  show the ledger's applied offsets beside Kafka's committed ones
  replay   reset the group to the start of its topics, in Kafka and in the ledger (a backfill)
  verify   check that Kafka's committed offsets never pass the ledger's applied ones
  dlq      list dead letters, or replay them through the current configuration
  demo     run the whole pipeline on an in-process Kafka and a throwaway PostgreSQL
  version  print the version

Run "consumer <command> -h" for a command's flags.
`

// version is set at build time with -ldflags "-X main.version=...".
var version = ""

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errors.New("no command given")
	}
	cmd, args := args[0], args[1:]
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "idemsink.yaml", "configuration file")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn, error")
	logFormat := fs.String("log-format", "text", "log format: text or json")
	switch cmd {
	case "run", "migrate", "offsets", "replay", "verify", "demo":
	case "dlq":
		return runDLQ(ctx, args, getenv, stdout, stderr)
	case "version", "-version", "--version":
		fmt.Fprintln(stdout, "idemsink", buildVersion())
		return nil
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("unknown command %q", cmd)
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil // -h: the usage is the answer, not an error
		}
		return err
	}
	log, err := newLogger(stderr, *logLevel, *logFormat)
	if err != nil {
		return err
	}
	if cmd == "demo" {
		return demo.Run(ctx, stdout, log)
	}
	cfg, err := config.Load(*cfgPath, getenv)
	if err != nil {
		return err
	}
	switch cmd {
	case "migrate":
		return migrate(ctx, cfg, log, stdout)
	case "offsets":
		return offsets(ctx, cfg, stdout)
	case "replay":
		return replay(ctx, cfg, stdout)
	case "verify":
		return verify(ctx, cfg, stdout)
	}
	injector, err := fault.Parse(getenv(fault.Env))
	if err != nil {
		return err
	}
	return serve(ctx, cfg, log, injector)
}

func buildVersion() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "(devel)"
}

func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("-log-level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("-log-format: %q is not text or json", format)
}

func connect(ctx context.Context, cfg *config.Config) (*pgxpool.Pool, error) {
	pcfg, err := pgxpool.ParseConfig(cfg.DatabaseURL)
	if err != nil {
		return nil, fmt.Errorf("database_url: %w", err)
	}
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, fmt.Errorf("connect to PostgreSQL: %w", err)
	}
	return pool, nil
}

// migrate applies the ledger migrations and creates missing target tables.
func migrate(ctx context.Context, cfg *config.Config, log *slog.Logger, stdout io.Writer) error {
	pool, err := connect(ctx, cfg)
	if err != nil {
		return err
	}
	defer pool.Close()
	var v int32
	if err := pool.AcquireFunc(ctx, func(c *pgxpool.Conn) error {
		v, err = migrations.Migrate(ctx, c.Conn(), -1)
		return err
	}); err != nil {
		return err
	}
	if err := sink.New(pool, cfg, sink.Options{Logger: log}).EnsureTables(ctx, cfg); err != nil {
		return err
	}
	if stdout != nil {
		fmt.Fprintf(stdout, "ledger schema at version %d; %d target table(s) ready\n", v, len(cfg.Pipelines))
	}
	return nil
}

// offsets prints, per partition, the ledger's applied offset, Kafka's
// committed offset and the end of the log.
func offsets(ctx context.Context, cfg *config.Config, stdout io.Writer) error {
	g, err := openGroup(ctx, cfg)
	if err != nil {
		return err
	}
	defer g.close()
	applied, committed := g.applied, g.committed
	ends, err := g.adm.ListEndOffsets(ctx, cfg.Topics()...)
	if err != nil {
		return fmt.Errorf("list end offsets: %w", err)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TOPIC\tPARTITION\tLEDGER NEXT\tKAFKA COMMITTED\tEND\tLAG\tGENERATION")
	ends.Each(func(e kadm.ListedOffset) {
		l, ok := applied[fmt.Sprintf("%s/%d", e.Topic, e.Partition)]
		next := int64(0)
		if ok {
			next = l.Applied + 1
		}
		kc := int64(-1)
		if o, ok := committed.Lookup(e.Topic, e.Partition); ok {
			kc = o.At
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%d\n", e.Topic, e.Partition, next, kc, e.Offset, e.Offset-next, l.Generation)
	})
	return tw.Flush()
}

// replay resets the group to the start of its topics in Kafka and forgets
// its ledger offsets, so that the next run applies every record again: the
// rows come out unchanged or stale, never duplicated. Either step alone is
// harmless, so their order does not matter for safety.
func replay(ctx context.Context, cfg *config.Config, stdout io.Writer) error {
	adm, closeAdm, err := admin(cfg)
	if err != nil {
		return err
	}
	defer closeAdm()
	groups, err := adm.DescribeGroups(ctx, cfg.Group)
	if err != nil {
		return fmt.Errorf("describe group %s: %w", cfg.Group, err)
	}
	if g, ok := groups[cfg.Group]; ok && len(g.Members) > 0 {
		return fmt.Errorf("group %s has %d active member(s); stop them before a replay", cfg.Group, len(g.Members))
	}
	starts, err := adm.ListStartOffsets(ctx, cfg.Topics()...)
	if err != nil {
		return fmt.Errorf("list start offsets: %w", err)
	}
	resp, err := adm.CommitOffsets(ctx, cfg.Group, starts.Offsets())
	if err == nil {
		err = resp.Error()
	}
	if err != nil {
		return fmt.Errorf("reset Kafka offsets: %w", err)
	}
	pool, err := connect(ctx, cfg)
	if err != nil {
		return err
	}
	defer pool.Close()
	n, err := sink.New(pool, cfg, sink.Options{}).ResetLedger(ctx, cfg.Group, cfg.Topics())
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "group %s reset to the start of %s; %d ledger partition(s) forgotten\n", cfg.Group, strings.Join(cfg.Topics(), ", "), n)
	return nil
}

// admin returns a Kafka admin client on the configured brokers.
func admin(cfg *config.Config) (*kadm.Client, func(), error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(cfg.Brokers...))
	if err != nil {
		return nil, nil, fmt.Errorf("kafka client: %w", err)
	}
	return kadm.NewClient(cl), cl.Close, nil
}

// group is what offsets and verify read: the database, the brokers, and
// the group's two positions per partition, the ledger's applied offsets (by
// "topic/partition") and Kafka's committed offsets.
type group struct {
	pool      *pgxpool.Pool
	adm       *kadm.Client
	applied   map[string]sink.Offset
	committed kadm.OffsetResponses
	close     func()
}

func openGroup(ctx context.Context, cfg *config.Config) (*group, error) {
	pool, err := connect(ctx, cfg)
	if err != nil {
		return nil, err
	}
	adm, closeAdm, err := admin(cfg)
	if err != nil {
		pool.Close()
		return nil, err
	}
	g := &group{pool: pool, adm: adm, applied: map[string]sink.Offset{}, close: func() { closeAdm(); pool.Close() }}
	ledger, err := sink.New(pool, cfg, sink.Options{}).Offsets(ctx, cfg.Group)
	if err != nil {
		g.close()
		return nil, err
	}
	for _, o := range ledger {
		g.applied[o.TP.String()] = o
	}
	g.committed, err = adm.FetchOffsets(ctx, cfg.Group)
	if errors.Is(err, kerr.GroupIDNotFound) {
		err = nil // a group that never committed
	}
	if err != nil {
		g.close()
		return nil, fmt.Errorf("fetch committed offsets: %w", err)
	}
	return g, nil
}

// verify checks the invariant the commit order guarantees: for every
// partition, Kafka's committed offset is at most the ledger's applied offset
// plus one. A committed offset past it would mean records marked consumed
// that were never applied. It also reports dead letters per pipeline.
func verify(ctx context.Context, cfg *config.Config, stdout io.Writer) error {
	g, err := openGroup(ctx, cfg)
	if err != nil {
		return err
	}
	defer g.close()
	applied, committed := g.applied, g.committed
	topics := map[string]bool{}
	for _, t := range cfg.Topics() {
		topics[t] = true
	}
	var bad []string
	checked := 0
	committed.Each(func(o kadm.OffsetResponse) {
		if !topics[o.Topic] || o.At < 0 {
			return
		}
		checked++
		a := int64(-1)
		if l, ok := applied[fmt.Sprintf("%s/%d", o.Topic, o.Partition)]; ok {
			a = l.Applied
		}
		if o.At > a+1 {
			bad = append(bad, fmt.Sprintf("%s/%d: Kafka committed %d, ledger applied only up to %d", o.Topic, o.Partition, o.At, a))
		}
	})
	rows, err := g.pool.Query(ctx, "SELECT pipeline, count(*) FROM idemsink.dead_letters GROUP BY 1 ORDER BY 1")
	if err != nil {
		return fmt.Errorf("count dead letters: %w", err)
	}
	for rows.Next() {
		var p string
		var n int64
		if err := rows.Scan(&p, &n); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "pipeline %s: %d dead letter(s) in idemsink.dead_letters\n", p, n)
	}
	if err := rows.Err(); err != nil {
		return err
	}
	if len(bad) > 0 {
		return fmt.Errorf("group %s: %d partition(s) committed past the ledger:\n%s", cfg.Group, len(bad), strings.Join(bad, "\n"))
	}
	fmt.Fprintf(stdout, "group %s: %d partition(s) checked; no Kafka commit passes the ledger\n", cfg.Group, checked)
	return nil
}

// serve runs the daemon: the consumer and the metrics server as actors of
// one run group; the first to stop stops the other.
func serve(ctx context.Context, cfg *config.Config, log *slog.Logger, injector *fault.Injector) error {
	if err := migrate(ctx, cfg, log, nil); err != nil {
		return err
	}
	pool, err := connect(ctx, cfg)
	if err != nil {
		return err
	}
	defer pool.Close()
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m := metrics.New(reg)
	sk := sink.New(pool, cfg, sink.Options{Logger: log, Metrics: m, Fault: injector.Hit})
	c := consume.New(consume.Options{Config: cfg, Sink: sk, Logger: log, Metrics: m, Registerer: reg, Fault: injector.Hit})

	var g oklog.Group
	cctx, cancel := context.WithCancel(ctx)
	g.Add(func() error { return c.Run(cctx) }, func(error) { cancel() })
	if cfg.MetricsAddr != "" {
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
		mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
		mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
			if !c.Ready() {
				http.Error(w, "not ready", http.StatusServiceUnavailable)
				return
			}
			fmt.Fprintln(w, "ready")
		})
		srv := &http.Server{Addr: cfg.MetricsAddr, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		g.Add(func() error {
			if err := srv.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("metrics server: %w", err)
			}
			return nil
		}, func(error) {
			sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer scancel()
			_ = srv.Shutdown(sctx)
		})
	}
	log.Info("idemsink starting", "version", buildVersion(), "group", cfg.Group, "topics", strings.Join(cfg.Topics(), ","))
	return g.Run()
}
