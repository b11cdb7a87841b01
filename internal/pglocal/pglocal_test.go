package pglocal

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// requirePostgres skips the test when the server binaries are missing,
// except on CI, where that is a failure.
func requirePostgres(t *testing.T) {
	t.Helper()
	if err := Available(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("PostgreSQL is required on CI: %v", err)
		}
		t.Skipf("PostgreSQL not available: %v", err)
	}
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// sharedParent returns a directory usable as Options.Dir even when the
// server runs as another user (t.TempDir is 0700 and owned by us).
func sharedParent(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "pglocal-test-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func TestLifecycle(t *testing.T) {
	requirePostgres(t)
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()

	began := time.Now()
	srv, err := Start(ctx, Options{Logger: testLogger(t), Settings: []string{"log_min_messages = warning"}})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Logf("Start took %v (port %d, dir %s)", time.Since(began), srv.Port(), srv.Dir())
	defer srv.Close()

	dsn := srv.DSN("postgres")
	if want := "postgres://postgres@127.0.0.1:" + strconv.Itoa(srv.Port()) + "/postgres?sslmode=disable"; dsn != want {
		t.Fatalf("DSN = %q, want %q", dsn, want)
	}

	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	for _, q := range []string{
		"CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL)",
		"INSERT INTO items VALUES (1, 'one'), (2, 'two')",
	} {
		if _, err := conn.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	var fsync string
	if err := conn.QueryRow(ctx, "SHOW fsync").Scan(&fsync); err != nil || fsync != "off" {
		t.Fatalf("fsync = %q, %v; want off", fsync, err)
	}
	var logLevel string
	if err := conn.QueryRow(ctx, "SHOW log_min_messages").Scan(&logLevel); err != nil || logLevel != "warning" {
		t.Fatalf("log_min_messages = %q, %v; want warning (from Options.Settings)", logLevel, err)
	}
	if got := countItems(ctx, t, conn); got != 2 {
		t.Fatalf("count = %d, want 2", got)
	}
	conn.Close(ctx)

	// Outage.
	if err := srv.Stop(ctx); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if err := srv.Stop(ctx); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	if _, err := os.Stat(srv.DataDir()); err != nil {
		t.Fatalf("data dir gone after Stop: %v", err)
	}
	if err := tryConnect(ctx, dsn); err == nil {
		t.Fatal("connect succeeded while stopped")
	}

	// Recovery.
	began = time.Now()
	if err := srv.Restart(ctx); err != nil {
		t.Fatalf("Restart: %v", err)
	}
	t.Logf("Restart took %v", time.Since(began))
	conn, err = pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connect after Restart: %v", err)
	}
	if got := countItems(ctx, t, conn); got != 2 {
		t.Fatalf("count after Restart = %d, want 2", got)
	}
	conn.Close(ctx)

	// Restart while running stops it first.
	if err := srv.Restart(ctx); err != nil {
		t.Fatalf("Restart while running: %v", err)
	}
	if err := tryConnect(ctx, dsn); err != nil {
		t.Fatalf("connect after second Restart: %v", err)
	}

	dir := srv.Dir()
	if err := srv.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("dir %s still there after Close: %v", dir, err)
	}
	if c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(srv.Port())), time.Second); err == nil {
		c.Close()
		t.Fatal("port still answers after Close")
	}
	if err := srv.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := srv.Restart(ctx); !errors.Is(err, ErrClosed) {
		t.Fatalf("Restart after Close = %v, want ErrClosed", err)
	}
}

func TestStartExplicitDirAndPort(t *testing.T) {
	requirePostgres(t)
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()

	parent := sharedParent(t)
	port, err := FreePort()
	if err != nil {
		t.Fatal(err)
	}
	srv, err := Start(ctx, Options{Dir: parent, Port: port})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	defer srv.Close()
	if srv.Port() != port {
		t.Fatalf("Port = %d, want %d", srv.Port(), port)
	}
	if !strings.HasPrefix(srv.Dir(), parent+string(os.PathSeparator)) {
		t.Fatalf("Dir %s not under %s", srv.Dir(), parent)
	}
	if err := tryConnect(ctx, srv.DSN("")); err != nil {
		t.Fatalf("connect: %v", err)
	}
	if err := srv.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := os.Stat(parent); err != nil {
		t.Fatalf("Close removed the caller's Dir: %v", err)
	}
}

func TestStartFailureReportsLogAndCleansUp(t *testing.T) {
	requirePostgres(t)
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()

	parent := sharedParent(t)
	srv, err := Start(ctx, Options{Dir: parent, Settings: []string{"shared_buffers = 'lots'"}})
	if err == nil {
		srv.Close()
		t.Fatal("Start succeeded with an invalid setting")
	}
	t.Logf("error: %v", err)
	if !strings.Contains(err.Error(), "shared_buffers") {
		t.Fatalf("error lacks the server log tail: %v", err)
	}
	entries, rerr := os.ReadDir(parent)
	if rerr != nil {
		t.Fatal(rerr)
	}
	if len(entries) != 0 {
		t.Fatalf("failed Start left %v behind in %s", entries, parent)
	}
}

func TestStartRespectsContext(t *testing.T) {
	requirePostgres(t)
	t.Parallel()
	parent := sharedParent(t)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	srv, err := Start(ctx, Options{Dir: parent})
	if err == nil {
		srv.Close()
		t.Fatal("Start succeeded with a canceled context")
	}
	entries, _ := os.ReadDir(parent)
	if len(entries) != 0 {
		t.Fatalf("failed Start left %v behind in %s", entries, parent)
	}
}

func TestUntraversableDirAsRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("only relevant when running as root")
	}
	requirePostgres(t)
	t.Parallel()
	_, err := Start(t.Context(), Options{Dir: t.TempDir()}) // 0700, owned by root
	if err == nil || !strings.Contains(err.Error(), "not traversable") {
		t.Fatalf("Start in a 0700 root dir: err = %v, want 'not traversable'", err)
	}
}

func TestFreePort(t *testing.T) {
	port, err := FreePort()
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		t.Fatalf("port %d not free: %v", port, err)
	}
	l.Close()
}

func TestDSN(t *testing.T) {
	s := &Server{port: 54321}
	for db, want := range map[string]string{
		"app": "postgres://postgres@127.0.0.1:54321/app?sslmode=disable",
		"":    "postgres://postgres@127.0.0.1:54321/postgres?sslmode=disable",
	} {
		if got := s.DSN(db); got != want {
			t.Errorf("DSN(%q) = %q, want %q", db, got, want)
		}
	}
}

func TestTail(t *testing.T) {
	if got := tail([]byte("a\nb\nc\n"), 2); got != "b\nc" {
		t.Fatalf("tail = %q", got)
	}
}

func countItems(ctx context.Context, t *testing.T, conn *pgx.Conn) int {
	t.Helper()
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM items").Scan(&n); err != nil {
		t.Fatalf("count: %v", err)
	}
	return n
}

func tryConnect(ctx context.Context, dsn string) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	return conn.Ping(ctx)
}
