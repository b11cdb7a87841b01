// Package migrations holds idemsink's SQL migrations, embedded in the
// binary and applied with tern under its advisory lock, so that several
// daemons starting at once migrate exactly once.
package migrations

import (
	"context"
	"embed"
	"fmt"
	"io/fs"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/tern/v2/migrate"
)

//go:embed *.sql
var files embed.FS

// VersionTable records the applied migration version. It lives outside the
// idemsink schema so that migrating all the way down can drop that schema.
const VersionTable = "public.idemsink_schema_version"

// FS returns the embedded migration files.
func FS() fs.FS { return files }

// Migrate brings the ledger schema to version target; a negative target
// means the latest. It returns the version reached.
func Migrate(ctx context.Context, conn *pgx.Conn, target int32) (int32, error) {
	m, err := migrate.NewMigrator(ctx, conn, VersionTable)
	if err != nil {
		return 0, fmt.Errorf("new migrator: %w", err)
	}
	if err := m.LoadMigrations(files); err != nil {
		return 0, fmt.Errorf("load migrations: %w", err)
	}
	if target < 0 {
		target = int32(len(m.Migrations))
	}
	if err := m.MigrateTo(ctx, target); err != nil {
		return 0, fmt.Errorf("migrate to %d: %w", target, err)
	}
	v, err := m.GetCurrentVersion(ctx)
	if err != nil {
		return 0, fmt.Errorf("read schema version: %w", err)
	}
	return v, nil
}
