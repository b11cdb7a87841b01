package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
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
	ca := certtest.NewCA(t, "pg")
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
	waittest.For(t, 60*time.Second, "10 rows in orders", func() bool { return rowCount(t, s.DSN("idemsink"), "orders") == 10 })
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

	other := certtest.NewCA(t, "other")
	env["IDEMSINK_DATABASE_URL"] = dsn(other.CertFile)
	for _, cmd := range []string{"run", "migrate"} {
		_, err := runCmd(env, 30*time.Second, cmd, "-config", cfg)
		if err == nil || !strings.Contains(err.Error(), "tls: failed to verify certificate: x509: certificate signed by unknown authority") {
			t.Errorf("%s trusting another CA: %v, want the server's certificate refused", cmd, err)
		}
		t.Logf("%s trusting another CA: %v", cmd, err)
	}
}
