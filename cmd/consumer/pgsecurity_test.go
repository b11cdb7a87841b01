package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/idemsink/idemsink/internal/certtest"
	"github.com/idemsink/idemsink/internal/kafkatest"
	"github.com/idemsink/idemsink/internal/pglocal"
	"github.com/idemsink/idemsink/internal/pgtest"
	"github.com/idemsink/idemsink/internal/sink"
	"github.com/idemsink/idemsink/internal/waittest"
	"github.com/idemsink/idemsink/migrations"
)

// secPipeline is the pipeline of these tests: orders(id, ts, v) from
// topic, keyed by id, versioned by v.
func secPipeline(topic string) string {
	return `pipelines:
  - name: orders
    topics: [` + topic + `]
    table: orders
    key: [id]
    columns: [{name: id, type: bigint}, {name: ts, type: timestamptz}, {name: v, type: bigint}]
    date: {field: ts}
    version: {field: v}
    batch: {max_records: 4, linger: 20ms}
`
}

// writeConfig writes a configuration file and returns its path.
func writeConfig(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "idemsink.yaml")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// produceOrders writes n orders with ids from first to one partition.
func produceOrders(k *kafkatest.Cluster, topic string, first, n int) {
	var recs []*kgo.Record
	for i := first; i < first+n; i++ {
		recs = append(recs, &kgo.Record{Topic: topic, Partition: int32(i % 2),
			Value: fmt.Appendf(nil, `{"id": %d, "ts": "2026-11-02T10:00:00Z", "v": 1}`, i)})
	}
	k.Produce(recs...)
}

// daemon is `consumer run` running in the test.
type daemon struct {
	cancel func()
	done   chan error
	stderr *syncBuffer
}

// startRun runs `consumer run` with the configuration and environment
// until stop or the end of the test.
func startRun(t *testing.T, cfgPath string, env map[string]string, flags ...string) *daemon {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	d := &daemon{cancel: cancel, done: make(chan error, 1), stderr: &syncBuffer{}}
	args := append([]string{"run", "-config", cfgPath}, flags...)
	go func() { d.done <- run(ctx, args, func(k string) string { return env[k] }, &syncBuffer{}, d.stderr) }()
	t.Cleanup(func() { _ = d.stop() })
	return d
}

// stop cancels the daemon and returns what run returned.
func (d *daemon) stop() error {
	if d.cancel == nil {
		return nil
	}
	d.cancel()
	d.cancel = nil
	select {
	case err := <-d.done:
		return err
	case <-time.After(60 * time.Second):
		return errors.New("run did not stop within 60s")
	}
}

// running fails the test if run has returned; wait conditions call it so
// that a daemon that stopped fails at once, with its error.
func (d *daemon) running(t *testing.T) bool {
	t.Helper()
	select {
	case err := <-d.done:
		d.cancel = nil
		t.Fatalf("run returned: %v\n%s", err, d.stderr)
	default:
	}
	return true
}

// runCmd runs a command to its end and returns its error and everything
// it printed.
func runCmd(env map[string]string, timeout time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var out bytes.Buffer
	err := run(ctx, args, func(k string) string { return env[k] }, &out, &out)
	return out.String(), err
}

// rowCount returns the rows of a table (0 before it exists), read as
// the superuser.
func rowCount(t *testing.T, dsn, table string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close(ctx) }()
	var n int
	err = conn.QueryRow(ctx, "SELECT count(*) FROM "+table).Scan(&n)
	if sink.SQLState(err) == "42P01" {
		return 0 // not created yet
	}
	if err != nil {
		t.Fatalf("count %s: %v", table, err)
	}
	return n
}

// superuser runs statements as the server's superuser in database db.
func superuser(t *testing.T, s *pglocal.Server, db string, stmts ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, s.DSN(db))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close(ctx) }()
	for _, q := range stmts {
		if _, err := conn.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
}

// The daemon connects to PostgreSQL with sslmode=verify-full, the CA and a
// client certificate whose common name is its role, on a server whose
// pg_hba lets that role in only so (hostssl ... cert); trusting another CA,
// it refuses the server with the reason.
func TestRunPostgresVerifyFull(t *testing.T) {
	ca := certtest.New(t, "pg")
	pair := ca.Server("pg")
	s := pgtest.Start(t, pglocal.Options{
		TLS: &pglocal.TLS{CertFile: pair.CertFile, KeyFile: pair.KeyFile, CAFile: ca.CertFile},
		HBA: []string{"hostssl all idemsink 127.0.0.1/32 cert", "host all idemsink 127.0.0.1/32 reject"},
	})
	superuser(t, s, "", "CREATE ROLE idemsink LOGIN", "CREATE DATABASE idemsink OWNER idemsink")
	client := ca.Client("idemsink")
	dsn := func(rootCA string) string {
		return fmt.Sprintf("postgres://idemsink@127.0.0.1:%d/idemsink?sslmode=verify-full&sslrootcert=%s&sslcert=%s&sslkey=%s",
			s.Port(), rootCA, client.CertFile, client.KeyFile)
	}

	k := kafkatest.New(t)
	topic := k.Topic("orders", 2)
	produceOrders(k, topic, 0, 10)
	cfg := writeConfig(t, "group: "+kafkatest.Name(t, "group")+"\n"+secPipeline(topic))
	env := map[string]string{"IDEMSINK_DATABASE_URL": dsn(ca.CertFile), "IDEMSINK_BROKERS": strings.Join(k.Brokers, ",")}

	d := startRun(t, cfg, env)
	waittest.For(t, 60*time.Second, "10 rows in orders", func() bool { return d.running(t) && rowCount(t, s.DSN("idemsink"), "orders") == 10 })
	// Every connection of the daemon is TLS with its client certificate.
	var conns, tlsConns int
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, s.DSN(""))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close(ctx) }()
	if err := conn.QueryRow(ctx, `SELECT count(*), count(*) FILTER (WHERE s.ssl AND s.client_dn = '/CN=idemsink')
FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) WHERE a.usename = 'idemsink'`).Scan(&conns, &tlsConns); err != nil {
		t.Fatal(err)
	}
	if conns == 0 || tlsConns != conns {
		t.Errorf("the daemon has %d connection(s), %d of them TLS with its client certificate; want all", conns, tlsConns)
	}
	if err := d.stop(); err != nil {
		t.Fatalf("run: %v\n%s", err, d.stderr)
	}
	t.Logf("run over verify-full: 10 rows, %d connection(s), all TLS with CN=idemsink", conns)

	other := certtest.New(t, "other")
	env["IDEMSINK_DATABASE_URL"] = dsn(other.CertFile)
	for _, cmd := range []string{"run", "migrate"} {
		_, err := runCmd(env, 30*time.Second, cmd, "-config", cfg)
		if err == nil || !strings.Contains(err.Error(), "tls: failed to verify certificate: x509: certificate signed by unknown authority") {
			t.Errorf("%s trusting another CA: %v, want the server's certificate refused", cmd, err)
		}
		t.Logf("%s trusting another CA: %v", cmd, err)
	}
}

// runGrants are the privileges README's "PostgreSQL privileges" gives the
// role of run, on a database whose owner ran migrate; keep them the same.
var runGrants = []string{
	"GRANT CONNECT, TEMPORARY ON DATABASE app TO idemsink_run",
	"GRANT USAGE ON SCHEMA idemsink, public TO idemsink_run",
	"GRANT SELECT ON public.idemsink_schema_version TO idemsink_run",
	"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA idemsink TO idemsink_run",
	"GRANT SELECT, INSERT, UPDATE, DELETE ON public.orders TO idemsink_run",
}

// migrate runs as the owner; run then works as a role with only run's
// privileges (no DDL anywhere), and a privilege taken away stops it with
// an error that names what is missing.
func TestRunLeastPrivilege(t *testing.T) {
	s := pgtest.Start(t, pglocal.Options{})
	// PUBLIC loses what PostgreSQL grants it by default (CREATE on public
	// before 15, TEMPORARY and CONNECT on the database), so that the run
	// role has exactly runGrants.
	superuser(t, s, "", "CREATE ROLE idemsink_owner LOGIN", "CREATE ROLE idemsink_run LOGIN",
		"CREATE DATABASE app OWNER idemsink_owner", "CREATE DATABASE fresh OWNER idemsink_owner",
		"REVOKE ALL ON DATABASE app FROM PUBLIC", "REVOKE ALL ON DATABASE fresh FROM PUBLIC",
		"GRANT CONNECT ON DATABASE fresh TO idemsink_run")
	superuser(t, s, "app", "REVOKE CREATE ON SCHEMA public FROM PUBLIC")
	superuser(t, s, "fresh", "REVOKE CREATE ON SCHEMA public FROM PUBLIC", "GRANT USAGE ON SCHEMA public TO idemsink_run")
	as := func(role, db string) string {
		return fmt.Sprintf("postgres://%s@127.0.0.1:%d/%s?sslmode=disable", role, s.Port(), db)
	}

	k := kafkatest.New(t)
	topic := k.Topic("orders", 2)
	produceOrders(k, topic, 0, 10)
	cfg := writeConfig(t, "group: "+kafkatest.Name(t, "group")+"\n"+secPipeline(topic))
	env := map[string]string{"IDEMSINK_DATABASE_URL": as("idemsink_owner", "app"), "IDEMSINK_BROKERS": strings.Join(k.Brokers, ",")}
	if out, err := runCmd(env, time.Minute, "migrate", "-config", cfg); err != nil {
		t.Fatalf("migrate as the owner: %v\n%s", err, out)
	}
	ctx := context.Background()
	owner, err := pgx.Connect(ctx, as("idemsink_owner", "app"))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = owner.Close(ctx) }()
	exec := func(q string) {
		t.Helper()
		if _, err := owner.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	for _, q := range runGrants {
		exec(q)
	}

	// The run role can do no DDL.
	runner, err := pgx.Connect(ctx, as("idemsink_run", "app"))
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{"CREATE TABLE public.x (i int)", "CREATE TABLE idemsink.x (i int)", "CREATE SCHEMA x", "ALTER TABLE public.orders ADD COLUMN x int"} {
		if _, err := runner.Exec(ctx, q); sink.SQLState(err) != "42501" {
			t.Errorf("%s as the run role: %v, want insufficient privilege (42501)", q, err)
		}
	}
	_ = runner.Close(ctx)

	// run as that role: migrations applied, tables there, nothing to
	// change: it starts and rows land.
	env["IDEMSINK_DATABASE_URL"] = as("idemsink_run", "app")
	d := startRun(t, cfg, env)
	waittest.For(t, 60*time.Second, "10 rows in orders", func() bool { return d.running(t) && rowCount(t, s.DSN("app"), "orders") == 10 })
	if err := d.stop(); err != nil {
		t.Fatalf("run as the run role: %v\n%s", err, d.stderr)
	}
	newest, err := fs.Glob(migrations.FS(), "*.sql")
	if err != nil {
		t.Fatal(err)
	}
	if out, err := runCmd(env, time.Minute, "migrate", "-config", cfg); err != nil || !strings.Contains(out, fmt.Sprintf("ledger schema at version %d;", len(newest))) {
		t.Errorf("migrate as the run role with nothing pending: %v\n%s", err, out)
	}

	// A privilege taken away at start: run stops and names it.
	exec("REVOKE SELECT ON public.idemsink_schema_version FROM idemsink_run")
	_, err = runCmd(env, time.Minute, "run", "-config", cfg)
	if err == nil || !strings.Contains(err.Error(), "permission denied for table idemsink_schema_version") {
		t.Errorf("run without SELECT on the schema version: %v, want it named", err)
	}
	t.Logf("run without SELECT on idemsink_schema_version: %v", err)
	exec("GRANT SELECT ON public.idemsink_schema_version TO idemsink_run")

	// Taken away while running: the batch is retried, stuck, with the
	// table named in the log; granted back, the rows land.
	exec("REVOKE INSERT ON idemsink.batches FROM idemsink_run")
	d = startRun(t, cfg, env)
	produceOrders(k, topic, 10, 4)
	waittest.For(t, 60*time.Second, "run to log the missing privilege", func() bool {
		return d.running(t) && strings.Contains(d.stderr.String(), "permission denied for table batches")
	})
	if n := rowCount(t, s.DSN("app"), "orders"); n != 10 {
		t.Errorf("%d rows in orders without INSERT on the ledger, want the 10 from before", n)
	}
	exec("GRANT INSERT ON idemsink.batches TO idemsink_run")
	waittest.For(t, 60*time.Second, "14 rows in orders", func() bool { return d.running(t) && rowCount(t, s.DSN("app"), "orders") == 14 })
	if err := d.stop(); err != nil {
		t.Fatalf("run: %v", err)
	}
	for _, l := range strings.Split(d.stderr.String(), "\n") {
		if strings.Contains(l, "permission denied") {
			t.Logf("run without INSERT on idemsink.batches logged: %s", l)
			break
		}
	}

	// A database where migrations are pending: the run role may not apply
	// them, and the error says who must.
	env["IDEMSINK_DATABASE_URL"] = as("idemsink_run", "fresh")
	_, err = runCmd(env, time.Minute, "run", "-config", cfg)
	if err == nil || !strings.Contains(err.Error(), "permission denied for schema public") ||
		!strings.Contains(err.Error(), "run `consumer migrate` as a role that may change the schema") {
		t.Errorf("run as the run role with migrations pending: %v, want the privilege named and migrate suggested", err)
	}
	t.Logf("run with migrations pending: %v", err)
}
