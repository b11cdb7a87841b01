package pgtest

import (
	"context"
	"net/url"
	"os"
	"strconv"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
)

func TestMain(m *testing.M) { Main(m) }

// A test that called Local gets its databases on Local's server, migrated,
// and the other tests on the main server, in whichever order they come
// (pgtestdb caches its role and template per process, not per server).
func TestLocalAndMain(t *testing.T) {
	if os.Getenv("TEST_DATABASE_URL") != "" {
		t.Skip("Local fails with TEST_DATABASE_URL, by design")
	}
	check := func(t *testing.T, pool *pgxpool.Pool, wantPort string) {
		t.Helper()
		if got := strconv.Itoa(int(pool.Config().ConnConfig.Port)); got != wantPort {
			t.Errorf("database on port %s, want %s", got, wantPort)
		}
		var migrated bool
		if err := pool.QueryRow(context.Background(), "SELECT to_regclass('idemsink.batches') IS NOT NULL").Scan(&migrated); err != nil || !migrated {
			t.Errorf("migrated: %v, %v", migrated, err)
		}
	}
	local := func(t *testing.T) {
		srv := Local(t)
		check(t, Pool(t), strconv.Itoa(srv.Port()))
	}
	main := func(t *testing.T) {
		u, err := url.Parse(Server(t))
		if err != nil {
			t.Fatal(err)
		}
		check(t, Pool(t), u.Port())
	}
	t.Run("local", local)
	t.Run("main", main)
	t.Run("local again", local)
}
