// Package pgtest gives each test its own real PostgreSQL database, cloned
// from a template that the ledger migrations were applied to once.
//
// The server is TEST_DATABASE_URL when set; otherwise a throwaway server is
// started from the local binaries (internal/pglocal) once per test binary.
// With CI=true, a missing server fails the test instead of skipping it.
package pgtest

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"fmt"
	"io/fs"
	"net/url"
	"os"
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

var (
	once    sync.Once
	server  *pglocal.Server
	baseURL string
	initErr error
)

// Main runs the package's tests and stops the server it may have started.
// Call it from TestMain.
func Main(m *testing.M) {
	code := m.Run()
	if server != nil {
		_ = server.Close()
	}
	os.Exit(code)
}

// Server returns the server's base URL, starting one if needed.
func Server(t testing.TB) string {
	t.Helper()
	once.Do(func() {
		if u := os.Getenv("TEST_DATABASE_URL"); u != "" {
			baseURL = u
			return
		}
		if err := pglocal.Available(); err != nil {
			initErr = err
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		server, initErr = pglocal.Start(ctx, pglocal.Options{})
		if initErr == nil {
			baseURL = server.DSN("postgres")
		}
	})
	if initErr != nil {
		t.Fatalf("PostgreSQL for tests: %v (set TEST_DATABASE_URL, or install the server: apt-get install -y postgresql)", initErr)
	}
	return baseURL
}

// Local returns the throwaway server, for tests that stop and restart it to
// simulate an outage; it fails the test when TEST_DATABASE_URL is in use.
func Local(t testing.TB) *pglocal.Server {
	t.Helper()
	Server(t)
	if server == nil {
		t.Fatal("this test stops the server and needs the local throwaway PostgreSQL; unset TEST_DATABASE_URL")
	}
	return server
}

// URL returns the connection URL of a fresh, migrated database for t,
// dropped when t ends.
func URL(t testing.TB) string {
	t.Helper()
	u, err := url.Parse(Server(t))
	if err != nil {
		t.Fatalf("TEST_DATABASE_URL: %v", err)
	}
	pw, _ := u.User.Password()
	conf := pgtestdb.Config{
		DriverName: "pgx", Host: u.Hostname(), Port: u.Port(), User: u.User.Username(), Password: pw,
		Database: "postgres", Options: u.RawQuery, ForceTerminateConnections: true,
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
	defer conn.Close(ctx)
	_, err = migrations.Migrate(ctx, conn, -1)
	return err
}
