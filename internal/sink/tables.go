package sink

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/idemsink/idemsink/internal/config"
)

// EnsureTables creates any missing target table, under an advisory lock so
// that concurrent starts do not race, and checks that existing tables have
// every configured column. When every table exists it runs no DDL.
func (s *Sink) EnsureTables(ctx context.Context, cfg *config.Config) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, lockDDL); err != nil {
			return fmt.Errorf("lock for DDL: %w", err)
		}
		for i := range cfg.Pipelines {
			p := &cfg.Pipelines[i]
			st := s.tables[p.Name]
			// CREATE TABLE IF NOT EXISTS needs CREATE on the schema even
			// when the table exists: look first, so that a role without
			// DDL (the least privilege of run) starts on existing tables.
			var exists bool
			if err := tx.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", st.target).Scan(&exists); err != nil {
				return fmt.Errorf("look up table %s: %w", st.target, err)
			}
			if !exists {
				if _, err := tx.Exec(ctx, st.createTable); err != nil {
					return fmt.Errorf("create table %s: %w", st.target, err)
				}
			}
			rows, err := tx.Query(ctx, `SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute
WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped`, st.target)
			if err != nil {
				return fmt.Errorf("read columns of %s: %w", st.target, err)
			}
			have := map[string]string{}
			for rows.Next() {
				var name, typ string
				if err := rows.Scan(&name, &typ); err != nil {
					return err
				}
				have[name] = typ
			}
			if err := rows.Err(); err != nil {
				return fmt.Errorf("read columns of %s: %w", st.target, err)
			}
			for _, c := range p.Columns {
				typ, ok := have[c.Name]
				if !ok {
					return fmt.Errorf("table %s has no column %q that pipeline %s writes; add it or drop the table", st.target, c.Name, p.Name)
				}
				if want := canonicalType(c.Type); typ != want {
					return fmt.Errorf("table %s column %q is %s, but pipeline %s says %s (%s); make them agree, e.g. ALTER TABLE %s ALTER COLUMN %s TYPE %s",
						st.target, c.Name, typ, p.Name, c.Type, want, st.target, quote(c.Name), c.Type)
				}
			}
		}
		return nil
	})
}

// canonicalType is the name format_type gives a configured type, modifiers
// included: numeric(12,2) is "numeric(12,2)", varchar(40) is "character
// varying(40)", timestamptz(3) is "timestamp(3) with time zone". A column
// whose modifiers differ from the configuration's is refused at start: the
// decoder checks values against the configured ones, so a narrower column
// would refuse what the decoder let through, and a wider one would be
// checked against limits it does not have.
func canonicalType(t string) string {
	ct, err := config.ParseType(t)
	if err != nil {
		return t
	}
	return ct.Catalog()
}
