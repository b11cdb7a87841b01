package sink

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/idemsink/idemsink/internal/config"
)

// EnsureTables creates any missing target table, under an advisory lock so
// that concurrent starts do not race, and brings existing tables in line
// with their pipelines: a column the pipeline gained is added when it is
// nullable (or the table is empty), so that a replay can fill it; a type
// change, a column the pipeline gained that cannot be added, and a column
// it lost that would refuse inserts (NOT NULL without a default) are
// refused with the statement to run.
func (s *Sink) EnsureTables(ctx context.Context, cfg *config.Config) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, lockDDL); err != nil {
			return fmt.Errorf("lock for DDL: %w", err)
		}
		for i := range cfg.Pipelines {
			if err := s.ensureTable(ctx, tx, &cfg.Pipelines[i]); err != nil {
				return err
			}
		}
		return nil
	})
}

// column is what the catalog says of one column of a target table.
type column struct {
	typ            string
	notNull, isDef bool
}

func (s *Sink) ensureTable(ctx context.Context, tx pgx.Tx, p *config.Pipeline) error {
	st := s.tables[p.Name]
	// CREATE TABLE IF NOT EXISTS needs CREATE on the schema even when the
	// table exists: look first, so that a role without DDL (the least
	// privilege of run) starts on existing tables. No DDL runs when every
	// table is as its pipeline says.
	var exists bool
	if err := tx.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", st.target).Scan(&exists); err != nil {
		return fmt.Errorf("look up table %s: %w", st.target, err)
	}
	if !exists {
		if _, err := tx.Exec(ctx, st.createTable); err != nil {
			return fmt.Errorf("create table %s: %w", st.target, err)
		}
	}
	rows, err := tx.Query(ctx, `SELECT attname, format_type(atttypid, atttypmod), attnotnull, atthasdef FROM pg_attribute
WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped`, st.target)
	if err != nil {
		return fmt.Errorf("read columns of %s: %w", st.target, err)
	}
	have := map[string]column{}
	for rows.Next() {
		var name string
		var c column
		if err := rows.Scan(&name, &c.typ, &c.notNull, &c.isDef); err != nil {
			return err
		}
		have[name] = c
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read columns of %s: %w", st.target, err)
	}
	var empty *bool
	for _, c := range p.Columns {
		got, ok := have[c.Name]
		if !ok {
			if !c.Nullable {
				if empty == nil {
					var e bool
					if err := tx.QueryRow(ctx, fmt.Sprintf("SELECT NOT EXISTS (SELECT FROM %s)", st.target)).Scan(&e); err != nil {
						return fmt.Errorf("read %s: %w", st.target, err)
					}
					empty = &e
				}
				if !*empty {
					return fmt.Errorf("table %s has no column %q that pipeline %s writes, and it is NOT NULL in the pipeline, so it cannot be added to a table with rows; "+
						"make it nullable: true in the pipeline (then replay to fill it), or add it yourself: ALTER TABLE %s ADD COLUMN %s %s NOT NULL DEFAULT ...",
						st.target, c.Name, p.Name, st.target, quote(c.Name), c.Type)
				}
			}
			null := ""
			if !c.Nullable {
				null = " NOT NULL"
			}
			ddl := fmt.Sprintf("ALTER TABLE %s ADD COLUMN %s %s%s", st.target, quote(c.Name), c.Type, null)
			if _, err := tx.Exec(ctx, ddl); err != nil {
				return fmt.Errorf("add column %q to %s (%s): %w", c.Name, st.target, ddl, err)
			}
			s.log.Info("added a column the pipeline gained; replay the dates to fill it", "pipeline", p.Name, "table", st.target,
				"column", c.Name, "type", c.Type)
			continue
		}
		if want := canonicalType(c.Type); got.typ != want {
			return fmt.Errorf("table %s column %q is %s, but pipeline %s says %s (%s); make them agree, e.g. ALTER TABLE %s ALTER COLUMN %s TYPE %s",
				st.target, c.Name, got.typ, p.Name, c.Type, want, st.target, quote(c.Name), c.Type)
		}
	}
	writes := map[string]bool{"record_id": true, "_version": true, "_src_topic": true, "_src_partition": true, "_src_offset": true,
		"_batch_id": true, "_applied_at": true}
	for _, c := range p.Columns {
		writes[c.Name] = true
	}
	for name, c := range have {
		if writes[name] || !c.notNull || c.isDef {
			continue
		}
		return fmt.Errorf("table %s has a NOT NULL column %q without a default that pipeline %s does not write, so every insert would fail; "+
			"drop it (ALTER TABLE %s DROP COLUMN %s) or let it be null (ALTER TABLE %s ALTER COLUMN %s DROP NOT NULL)",
			st.target, name, p.Name, st.target, quote(name), st.target, quote(name))
	}
	return nil
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
