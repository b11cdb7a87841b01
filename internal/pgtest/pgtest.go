// Package pgtest gives each test its own real PostgreSQL database, cloned
// from a template that the ledger migrations were applied to once.
//
// The server is chosen once per test binary, first match wins:
//
//  1. TEST_DATABASE_URL, a server someone else runs;
//  2. with IDEMSINK_TESTCONTAINERS=1, a container started through
//     testcontainers-go from IDEMSINK_POSTGRES_IMAGE (default postgres:15)
//     on the Docker-compatible engine that DOCKER_HOST or the default socket
//     names;
//  3. a throwaway server started from the local binaries (internal/pglocal).
//
// A server that cannot be had fails the test, never skips it: CI must run
// what it says it runs. Packages using pgtest call Main from TestMain; it
// stops what was started, containers included (nothing else would: the
// harness expects Ryuk, testcontainers' reaper, to be disabled).
package pgtest

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx" for pgtestdb
	"github.com/peterldowns/pgtestdb"

	"github.com/idemsink/idemsink/internal/pglocal"
	"github.com/idemsink/idemsink/migrations"
)

// The main server, chosen once by Server.
var (
	once    sync.Once
	server  *pglocal.Server // the local throwaway server, when it is the main one
	baseURL string
	initErr error
)

// Local's own server, when the main one is a container.
var (
	localOnce sync.Once
	local     *pglocal.Server
	localErr  error
	// placement records, for each running test that took a database or
	// called Local, which server its databases live on: onLocal or onMain.
	placement sync.Map // testing.TB → string
)

const (
	onLocal = "local"
	onMain  = "main"
)

// What Main releases once the tests have run.
var (
	exitMu  sync.Mutex
	inMain  bool
	exitFns []func() error
)

// Main runs the package's tests, then stops what the harness started for
// them (servers, containers, whatever AtExit registered) and exits. Call it
// from TestMain. A failure to clean up fails the run: a container left
// behind is a leak that nothing else will reap.
func Main(m *testing.M) {
	exitMu.Lock()
	inMain = true
	exitMu.Unlock()

	code := m.Run()

	exitMu.Lock()
	fns := slices.Clone(exitFns)
	exitFns, inMain = nil, false
	exitMu.Unlock()
	var errs []error
	for _, f := range slices.Backward(fns) {
		errs = append(errs, f())
	}
	if err := errors.Join(errs...); err != nil {
		fmt.Fprintf(os.Stderr, "pgtest: cleanup after the tests: %v\n", err)
		if code == 0 {
			code = 1
		}
	}
	os.Exit(code)
}

// AtExit registers f to run when Main's tests have finished, before the
// functions registered earlier. It is how the harness packages (this one,
// kafkatest) release what they start once per test binary. It fails when
// the tests do not run under Main, since nothing would then call f; so
// register before starting anything.
func AtExit(f func() error) error {
	exitMu.Lock()
	defer exitMu.Unlock()
	if !inMain {
		return errors.New("the tests do not run under pgtest.Main, so nothing would stop what the harness starts: add `func TestMain(m *testing.M) { pgtest.Main(m) }` to the package")
	}
	exitFns = append(exitFns, f)
	return nil
}

// Server returns the main server's base URL, starting the server if needed.
func Server(t testing.TB) string {
	t.Helper()
	once.Do(func() { baseURL, initErr = startServer() })
	if initErr != nil {
		t.Fatalf("PostgreSQL for tests: %v", initErr)
	}
	return baseURL
}

func startServer() (string, error) {
	if u := os.Getenv("TEST_DATABASE_URL"); u != "" {
		return u, nil
	}
	use, err := containersWanted()
	if err != nil {
		return "", err
	}
	if use {
		return startContainer()
	}
	s, err := startLocal()
	if err != nil {
		return "", fmt.Errorf("%w (set TEST_DATABASE_URL, set IDEMSINK_TESTCONTAINERS=1 with a container engine, or install the server: apt-get install -y postgresql)", err)
	}
	server = s
	return s.DSN("postgres"), nil
}

// startLocal starts a throwaway server from the local binaries; Main closes it.
func startLocal() (*pglocal.Server, error) {
	if err := pglocal.Available(); err != nil {
		return nil, err
	}
	var s *pglocal.Server
	err := AtExit(func() error {
		if s == nil {
			return nil
		}
		return s.Close()
	})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s, err = pglocal.Start(ctx, pglocal.Options{})
	return s, err
}

// Local returns a throwaway server from the local binaries, for tests that
// stop and restart it to simulate an outage.
//
// When the main server is that local server, Local returns it. When the
// main server is a container, Local starts a local server of its own (once
// per test binary) and URL and Pool give the test that called Local its
// databases there, so that stopping the server really cuts the test off:
// call Local first, in the same test or subtest that calls URL or Pool
// (Local fails a test that already took a database from the container).
// With TEST_DATABASE_URL, Local fails the test.
func Local(t testing.TB) *pglocal.Server {
	t.Helper()
	Server(t)
	if server != nil {
		return server
	}
	if os.Getenv("TEST_DATABASE_URL") != "" {
		t.Fatal("this test stops the server and needs the local throwaway PostgreSQL; unset TEST_DATABASE_URL")
	}
	localOnce.Do(func() { local, localErr = startLocal() })
	if localErr != nil {
		t.Fatalf("this test stops the server and needs a local throwaway PostgreSQL besides the container: %v (apt-get install -y postgresql)", localErr)
	}
	if place(t, onLocal) != onLocal {
		t.Fatal("pgtest.Local called after URL or Pool in the same test, whose database lives in the container that an outage of the local server does not touch: call Local first")
	}
	return local
}

// place records where t's databases live, unless already recorded, and
// returns the recorded place.
func place(t testing.TB, where string) string {
	p, loaded := placement.LoadOrStore(t, where)
	if !loaded {
		t.Cleanup(func() { placement.Delete(t) })
	}
	return p.(string)
}

// localRole is pgtestdb's role on Local's own server. pgtestdb creates its
// role and template once per process, keyed by role and migrations, not by
// server: a second server needs a role of its own, or pgtestdb would take
// the first server's role and template for granted on it.
var localRole = pgtestdb.Role{
	Username:     "pgtdblocal",
	Password:     pgtestdb.DefaultRolePassword,
	Capabilities: pgtestdb.DefaultRoleCapabilities,
}

// base returns the base URL of the server on which t's databases live, and
// the pgtestdb role to use there (nil: the default).
func base(t testing.TB) (string, *pgtestdb.Role) {
	t.Helper()
	main := Server(t)
	if server == nil && place(t, onMain) == onLocal {
		return local.DSN("postgres"), &localRole
	}
	return main, nil
}

// URL returns the connection URL of a fresh, migrated database for t,
// dropped when t ends.
func URL(t testing.TB) string {
	t.Helper()
	b, role := base(t)
	u, err := url.Parse(b)
	if err != nil {
		t.Fatalf("server URL: %v", err)
	}
	pw, _ := u.User.Password()
	conf := pgtestdb.Config{
		DriverName: "pgx", Host: u.Hostname(), Port: u.Port(), User: u.User.Username(), Password: pw,
		Database: "postgres", Options: u.RawQuery, TestRole: role, ForceTerminateConnections: true,
	}
	if conf.Options == "" {
		conf.Options = "sslmode=disable"
	}
	return pgtestdb.Custom(t, conf, migrator{}).URL()
}

// Pool returns a pool on a fresh, migrated database for t.
func Pool(t testing.TB) *pgxpool.Pool {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), URL(t))
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// migrator applies the embedded migrations to the template database.
type migrator struct{}

func (migrator) Hash() (string, error) {
	h := sha256.New()
	err := fs.WalkDir(migrations.FS(), ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(migrations.FS(), path)
		h.Write([]byte(path))
		h.Write(b)
		return err
	})
	return hex.EncodeToString(h.Sum(nil))[:16], err
}

func (migrator) Migrate(ctx context.Context, _ *sql.DB, conf pgtestdb.Config) error {
	conn, err := pgx.Connect(ctx, conf.URL())
	if err != nil {
		return fmt.Errorf("connect to template: %w", err)
	}
	defer func() { _ = conn.Close(ctx) }()
	_, err = migrations.Migrate(ctx, conn, -1)
	return err
}

// Start starts a throwaway server from the local binaries for t alone,
// configured by opts (TLS, pg_hba lines, settings), and closes it when t
// ends: for tests that need a server set up otherwise than the shared one,
// with roles and authentication of their own. Its superuser connects with
// DSN over plain TCP. Without the binaries the test fails.
func Start(t testing.TB, opts pglocal.Options) *pglocal.Server {
	t.Helper()
	if err := pglocal.Available(); err != nil {
		t.Fatalf("this test starts a PostgreSQL server of its own: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s, err := pglocal.Start(ctx, opts)
	if err != nil {
		t.Fatalf("start PostgreSQL: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("close PostgreSQL: %v", err)
		}
	})
	return s
}
