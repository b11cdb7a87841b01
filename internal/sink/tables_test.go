package sink_test

import (
	"context"
	"strings"
	"testing"

	"github.com/idemsink/idemsink/internal/batch"
	"github.com/idemsink/idemsink/internal/config"
	"github.com/idemsink/idemsink/internal/pgtest"
	"github.com/idemsink/idemsink/internal/sink"
)

func typedPipeline() config.Pipeline {
	return config.Pipeline{
		Name: "prices", Topics: []string{"prices-topic"}, Table: "prices", Key: []string{"sku", "cc"},
		Columns: []config.Column{
			{Name: "sku", Type: "varchar(8)"},
			{Name: "cc", Type: "char(2)"},
			{Name: "price", Type: "numeric(12,2)"},
			{Name: "at", Type: "timestamptz(3)", Nullable: true},
		},
		Date: config.Date{Field: "day"},
	}
}

// A table created from modifiers matches them on the next start, values
// at the limits apply, and a redelivery finds them unchanged (a char(n)
// value the database pads compares equal to the one staged).
func TestEnsureTablesWithModifiers(t *testing.T) {
	t.Parallel()
	f := newFixture(t, typedPipeline())
	ctx := context.Background()
	if err := f.s.EnsureTables(ctx, f.cfg); err != nil {
		t.Fatalf("second EnsureTables: %v", err)
	}
	var types string
	if err := f.pool.QueryRow(ctx, `SELECT string_agg(format_type(atttypid, atttypmod), ', ' ORDER BY attnum) FROM pg_attribute
WHERE attrelid = 'prices'::regclass AND attname IN ('sku', 'cc', 'price', 'at')`).Scan(&types); err != nil {
		t.Fatal(err)
	}
	if want := "character varying(8), character(2), numeric(12,2), timestamp(3) with time zone"; types != want {
		t.Errorf("created %s, want %s", types, want)
	}
	values := []string{
		`{"sku":"ABCDEFGH","cc":"DE","price":"9999999999.99","at":"2026-03-01T10:00:00.123Z","day":"2026-03-01"}`,
		`{"sku":"Zürich-ß","cc":"D ","price":-0.5,"day":"2026-03-01"}`,
	}
	b := f.batchOf("prices", 0, values...)
	if len(b.Dead) != 0 {
		t.Fatalf("dead letters: %+v", b.Dead)
	}
	if r, err := f.s.Apply(ctx, batch.Of(b), commitFor(b, 1)); err != nil || r.Inserted != 2 {
		t.Fatalf("apply: %+v, %v", r, err)
	}
	b = f.batchOf("prices", 2, values...)
	if r, err := f.s.Apply(ctx, batch.Of(b), commitFor(b, 1)); err != nil || r.Unchanged != 2 {
		t.Errorf("redelivery: %+v, %v; want 2 unchanged", r, err)
	}
}

// A pre-created table must carry the configured modifiers exactly.
func TestEnsureTablesChecksModifiers(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ ddl, want string }{
		{`ALTER TABLE prices ALTER COLUMN price TYPE numeric(14,2)`, `column "price" is numeric(14,2), but pipeline prices says numeric(12,2) (numeric(12,2))`},
		{`ALTER TABLE prices ALTER COLUMN price TYPE numeric`, `column "price" is numeric, but pipeline prices says numeric(12,2)`},
		{`ALTER TABLE prices ALTER COLUMN sku TYPE varchar(9)`, `column "sku" is character varying(9), but pipeline prices says varchar(8) (character varying(8))`},
		{`ALTER TABLE prices ALTER COLUMN sku TYPE text`, `column "sku" is text, but pipeline prices says varchar(8)`},
		{`ALTER TABLE prices ALTER COLUMN cc TYPE char(3)`, `column "cc" is character(3), but pipeline prices says char(2)`},
		{`ALTER TABLE prices ALTER COLUMN at TYPE timestamptz`, `column "at" is timestamp with time zone, but pipeline prices says timestamptz(3)`},
	} {
		pool := pgtest.Pool(t)
		cfg := testConfig(typedPipeline())
		s := sink.New(pool, cfg, sink.Options{})
		ctx := context.Background()
		if err := s.EnsureTables(ctx, cfg); err != nil {
			t.Fatal(err)
		}
		if _, err := pool.Exec(ctx, tc.ddl); err != nil {
			t.Fatal(err)
		}
		err := s.EnsureTables(ctx, cfg)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: EnsureTables: %v\nwant it to contain %s", tc.ddl, err, tc.want)
		}
	}
}
