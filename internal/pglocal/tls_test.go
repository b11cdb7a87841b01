package pglocal

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/idemsink/idemsink/internal/certtest"
)

// With Options.TLS and Options.HBA the server speaks TLS and lets the role
// app in only with a client certificate whose common name is app, checked
// against the CA: sslmode=verify-full with the CA and the client
// certificate connects; without TLS, without the certificate, or trusting
// another CA it does not.
func TestStartTLS(t *testing.T) {
	requirePostgres(t)
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	ca := certtest.New(t, "pg")
	pair := ca.Server("pg")
	s, err := Start(ctx, Options{Logger: testLogger(t),
		TLS: &TLS{CertFile: pair.CertFile, KeyFile: pair.KeyFile, CAFile: ca.CertFile},
		HBA: []string{"hostssl all app 127.0.0.1/32 cert", "host all app 127.0.0.1/32 reject"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	su, err := pgx.Connect(ctx, s.DSN(""))
	if err != nil {
		t.Fatalf("superuser over plain TCP: %v", err)
	}
	defer su.Close(ctx)
	if _, err := su.Exec(ctx, "CREATE ROLE app LOGIN"); err != nil {
		t.Fatal(err)
	}

	client := ca.Client("app")
	dsn := func(params string) string {
		return fmt.Sprintf("postgres://app@127.0.0.1:%d/postgres?%s", s.Port(), params)
	}
	full := fmt.Sprintf("sslmode=verify-full&sslrootcert=%s&sslcert=%s&sslkey=%s", ca.CertFile, client.CertFile, client.KeyFile)
	conn, err := pgx.Connect(ctx, dsn(full))
	if err != nil {
		t.Fatalf("verify-full with a client certificate: %v", err)
	}
	var ssl bool
	var user string
	if err := conn.QueryRow(ctx, "SELECT ssl, current_user FROM pg_stat_ssl WHERE pid = pg_backend_pid()").Scan(&ssl, &user); err != nil {
		t.Fatal(err)
	}
	_ = conn.Close(ctx)
	if !ssl || user != "app" {
		t.Errorf("connected with ssl %v as %q, want ssl as app", ssl, user)
	}

	other := certtest.New(t, "other")
	for _, c := range []struct{ name, params, want string }{
		{"no TLS", "sslmode=disable", "rejects connection"},
		{"no client certificate", "sslmode=verify-full&sslrootcert=" + ca.CertFile, "certificate"},
		{"another CA", fmt.Sprintf("sslmode=verify-full&sslrootcert=%s&sslcert=%s&sslkey=%s", other.CertFile, client.CertFile, client.KeyFile),
			"certificate signed by unknown authority"},
		{"certificate of another role", fmt.Sprintf("sslmode=verify-full&sslrootcert=%s&sslcert=%s&sslkey=%s", ca.CertFile,
			ca.Client("postgres").CertFile, ca.Client("postgres").KeyFile), `certificate authentication failed for user "app"`},
	} {
		cctx, ccancel := context.WithTimeout(ctx, 10*time.Second)
		conn, err := pgx.Connect(cctx, dsn(c.params))
		ccancel()
		if err == nil {
			_ = conn.Close(ctx)
			t.Errorf("%s: connected, want a refusal", c.name)
			continue
		}
		if !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want it to contain %q", c.name, err, c.want)
		}
		t.Logf("%s: %v", c.name, err)
	}
}
