package migrations_test

import (
	"context"
	"fmt"
	"io/fs"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/idemsink/idemsink/internal/pgtest"
	"github.com/idemsink/idemsink/migrations"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// latest is the version of the last migration: one per .sql file.
var latest = func() int32 {
	files, err := fs.Glob(migrations.FS(), "*.sql")
	if err != nil {
		panic(err)
	}
	return int32(len(files))
}()

// The migrations go up, all the way down, and up again, and each step
// leaves the schema it should.
func TestUpDownUp(t *testing.T) {
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, pgtest.URL(t)) // already migrated up by the template
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	tables := func() int {
		var n int
		if err := conn.QueryRow(ctx, "SELECT count(*) FROM pg_tables WHERE schemaname = 'idemsink'").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := tables(); n != 6 {
		t.Fatalf("after up: %d ledger tables, want 6", n)
	}
	if v, err := migrations.Migrate(ctx, conn, 0); err != nil || v != 0 {
		t.Fatalf("down: version %d, %v", v, err)
	}
	if n := tables(); n != 0 {
		t.Fatalf("after down: %d ledger tables, want 0", n)
	}
	if v, err := migrations.Migrate(ctx, conn, -1); err != nil || v != latest {
		t.Fatalf("up again: version %d, %v", v, err)
	}
	if n := tables(); n != 6 {
		t.Fatalf("after up again: %d ledger tables, want 6", n)
	}
	if v, err := migrations.Migrate(ctx, conn, -1); err != nil || v != latest {
		t.Fatalf("up when up to date: version %d, %v", v, err)
	}
}

// Daemons starting together migrate once: tern's advisory lock serializes
// them, and each sees the schema at the latest version.
func TestConcurrentMigrate(t *testing.T) {
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, pgtest.Server(t))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	const db = "idemsink_concurrent_migrate"
	if _, err := admin.Exec(ctx, "DROP DATABASE IF EXISTS "+db+" WITH (FORCE)"); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+db); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = admin.Exec(ctx, "DROP DATABASE IF EXISTS "+db+" WITH (FORCE)") })
	cfg, err := pgx.ParseConfig(pgtest.Server(t))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Database = db
	errs := make(chan error, 4)
	for range 4 {
		go func() {
			conn, err := pgx.ConnectConfig(ctx, cfg)
			if err != nil {
				errs <- err
				return
			}
			defer conn.Close(ctx)
			v, err := migrations.Migrate(ctx, conn, -1)
			if err == nil && v != latest {
				err = fmt.Errorf("version %d, want %d", v, latest)
			}
			errs <- err
		}()
	}
	for range 4 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}
