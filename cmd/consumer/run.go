package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"runtime/debug"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	oklog "github.com/oklog/run"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/idemsink/idemsink/internal/config"
	"github.com/idemsink/idemsink/internal/consume"
	"github.com/idemsink/idemsink/internal/demo"
	"github.com/idemsink/idemsink/internal/fault"
	"github.com/idemsink/idemsink/internal/metrics"
	"github.com/idemsink/idemsink/internal/sink"
)

const usage = `usage: consumer <command> [flags]

commands:
  run            consume the configured topics into PostgreSQL (migrates first)
  migrate        apply the ledger migrations and create the target tables
  offsets        per partition: Kafka's committed offset, the ledger's, the log, the lag, the owner
  offsets reset  move the group's offsets in Kafka and the ledger (a dry run unless --execute)
  replay         re-apply a range of target dates beside the live group, which is not touched
  verify         check Kafka's commits against the ledger; with --date, reconcile tables and topics
  dlq            list dead letters, or replay them through the current configuration
  history        the batch log: every application of a batch, by which group, when, with its counts
  demo           run the whole pipeline on an in-process Kafka and a throwaway PostgreSQL
  version        print the version

Run "consumer <command> -h" for a command's flags and examples.
`

// version is set at build time with -ldflags "-X main.version=...".
var version = ""

// env is what a command runs with.
type env struct {
	cfg            *config.Config // nil for a command without configuration
	log            *slog.Logger
	getenv         func(string) string
	stdout, stderr io.Writer
}

// command is a subcommand: its help, shown by -h, and flags, which
// defines its flags and returns the action that runs it once they are
// parsed.
type command struct {
	help     string
	flags    func(fs *flag.FlagSet) func(context.Context, *env) error
	noConfig bool
}

var commands = map[string]command{
	"run": {help: `Consume the configured topics into PostgreSQL until SIGTERM; migrates first.

examples:
  consumer run -config /etc/idemsink.yaml
  IDEMSINK_DATABASE_URL=postgres://... consumer run -log-format json
`, flags: func(*flag.FlagSet) func(context.Context, *env) error { return serve }},
	"migrate": {help: `Apply the ledger migrations and create missing target tables.

examples:
  consumer migrate -config idemsink.yaml
`, flags: func(*flag.FlagSet) func(context.Context, *env) error { return migrate }},
	"offsets":       {help: offsetsHelp, flags: offsetsFlags},
	"offsets reset": {help: resetHelp, flags: resetFlags},
	"replay":        {help: replayHelp, flags: replayFlags},
	"verify":        {help: verifyHelp, flags: verifyFlags},
	"history":       {help: historyHelp, flags: historyFlags},
	"dlq list":      {help: dlqListHelp, flags: dlqListFlags},
	"dlq replay":    {help: dlqReplayHelp, flags: dlqReplayFlags},
	"demo": {help: `Run the whole pipeline on an in-process Kafka and a throwaway PostgreSQL
(needs the PostgreSQL server binaries on PATH); no configuration.

examples:
  consumer demo
`, noConfig: true, flags: func(*flag.FlagSet) func(context.Context, *env) error {
		return func(ctx context.Context, e *env) error { return demo.Run(ctx, e.stdout, e.log) }
	}},
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errors.New("no command given")
	}
	name, args := args[0], args[1:]
	switch name {
	case "version", "-version", "--version":
		fmt.Fprintln(stdout, "idemsink", buildVersion())
		return nil
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	case "dlq":
		if handled, err := dlqCommand(args, stdout, stderr); handled {
			return err
		}
	}
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		if _, ok := commands[name+" "+args[0]]; ok {
			name, args = name+" "+args[0], args[1:]
		}
	}
	c, ok := commands[name]
	if !ok {
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("unknown command %q", name)
	}
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	cfgPath := fs.String("config", "idemsink.yaml", "configuration file")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn, error")
	logFormat := fs.String("log-format", "text", "log format: text or json")
	action := c.flags(fs)
	if help, err := parseFlags(fs, args, stdout, fmt.Sprintf("usage: consumer %s [flags]\n\n%s", name, c.help)); help || err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%s: unexpected argument %q (flags come as -name value)", name, fs.Arg(0))
	}
	log, err := newLogger(stderr, *logLevel, *logFormat)
	if err != nil {
		return err
	}
	e := &env{log: log, getenv: getenv, stdout: stdout, stderr: stderr}
	if !c.noConfig {
		if e.cfg, err = config.Load(*cfgPath, getenv); err != nil {
			return err
		}
	}
	return action(ctx, e)
}

// parseFlags parses args into fs. -h or --help prints help and the flags
// on stdout and reports help, which is no failure. A bad flag or
// value is one line of error, returned (the flag package would print it,
// then the whole usage, and main would print it again).
func parseFlags(fs *flag.FlagSet, args []string, stdout io.Writer, help string) (bool, error) {
	fs.SetOutput(io.Discard)
	err := fs.Parse(args)
	if errors.Is(err, flag.ErrHelp) {
		fs.SetOutput(stdout)
		fmt.Fprintf(stdout, "%s\nflags:\n", help)
		fs.PrintDefaults()
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("%s: %w (consumer %s -h for help)", fs.Name(), err, fs.Name())
	}
	return false, nil
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
	// One connection per apply lane, one for claims, one spare.
	pcfg.MaxConns = max(pcfg.MaxConns, int32(cfg.ApplyConnections)+2)
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, fmt.Errorf("connect to PostgreSQL: %w", err)
	}
	return pool, nil
}

// migrate applies the ledger migrations and creates missing target tables.
func migrate(ctx context.Context, e *env) error {
	pool, err := connect(ctx, e.cfg)
	if err != nil {
		return err
	}
	defer pool.Close()
	v, err := sink.Migrate(ctx, pool)
	if err != nil {
		return ddlHint(err)
	}
	if err := sink.New(pool, e.cfg, sink.Options{Logger: e.log}).EnsureTables(ctx, e.cfg); err != nil {
		return ddlHint(err)
	}
	fmt.Fprintf(e.stdout, "ledger schema at version %d; %d target table(s) ready\n", v, len(e.cfg.Pipelines))
	return nil
}

// ddlHint says what to do when the role may not apply a pending migration
// or create a missing table. With nothing pending, migrate and run need no
// DDL: a role with run's privileges (README) starts.
func ddlHint(err error) error {
	if sink.SQLState(err) == "42501" { // insufficient_privilege
		return fmt.Errorf("%w: if a migration or a target table is pending, run `consumer migrate` as a role that may change the schema; "+
			"else grant this role what README's PostgreSQL privileges lists", err)
	}
	return err
}

// serve runs the daemon: the consumer and the metrics server as actors of
// one run group; the first to stop stops the other.
func serve(ctx context.Context, e *env) error {
	cfg, log := e.cfg, e.log
	injector, err := fault.Parse(e.getenv(fault.Env))
	if err != nil {
		return err
	}
	if err := migrate(ctx, &env{cfg: cfg, log: log, stdout: io.Discard}); err != nil {
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
	dctx, dcancel := context.WithCancel(ctx)
	g.Add(func() error { return logDrain(dctx, cfg, log, c.Applied, drainEvery) }, func(error) { dcancel() })
	if cfg.MetricsAddr != "" {
		srv, err := metrics.Listen(cfg.MetricsAddr, cfg.MetricsWebConfigFile, metrics.Handler(reg, c.Ready), log)
		if err != nil {
			return err
		}
		g.Add(srv.Serve, func(error) {
			sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer scancel()
			_ = srv.Shutdown(sctx)
		})
	}
	log.Info("idemsink starting", "version", buildVersion(), "group", cfg.Group, "topics", strings.Join(cfg.Topics(), ","),
		"instance_id", cfg.InstanceID)
	return g.Run()
}
