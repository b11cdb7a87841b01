package sink

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"math"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/idemsink/idemsink/internal/batch"
	"github.com/idemsink/idemsink/internal/config"
	"github.com/idemsink/idemsink/internal/pgtest"
	"github.com/idemsink/idemsink/internal/record"
)

// rowSource hands the stage rows to pgx.CopyFrom, as the sink did before
// copy.go: the reference the tests and the benchmark compare with.
type rowSource struct {
	rows []batch.Dated
	ids  []record.ID // batch id per batch index
	i    int
	buf  []any
	// unavailable: the stage has the _unavailable column.
	unavailable bool
}

func (r *rowSource) Next() bool { r.i++; return r.i <= len(r.rows) }

func (r *rowSource) Values() ([]any, error) {
	row := r.rows[r.i-1]
	r.buf = append(r.buf[:0], row.ID)
	r.buf = append(r.buf, row.Values...)
	r.buf = append(r.buf, row.Version, row.Pos.Topic, row.Pos.Partition, row.Pos.Offset, r.ids[row.Batch])
	if r.unavailable {
		r.buf = append(r.buf, unavailableArg(row.Row))
	}
	return r.buf, nil
}

func (r *rowSource) Err() error { return nil }

// copyColumn is a column of every type a pipeline may have, with values
// of the Go types internal/decode hands for it, edges included.
type copyColumn struct {
	typ  string
	vals []any
}

func copyColumns() []copyColumn {
	east := time.FixedZone("east", 5*3600+30*60)
	west := time.FixedZone("west", -8*3600)
	long := strings.Repeat("żółw ", 20000) // 140 KB: one row spans reads
	blob := make([]byte, 70000)
	for i := range blob {
		blob[i] = byte(i)
	}
	num := func(s string) any { return record.Numeric(s) }
	return []copyColumn{
		{"text", []any{"", "plain", "non-ASCII: żółw 🐢 日本語", "quote'\"\\\t\n\r", long, nil}},
		{"varchar(10)", []any{"", "abcdefghij", "żółwżółwżó", nil}},
		{"char(5)", []any{"", "ab", "abcde", "ż", nil}},
		{"bigint", []any{int64(0), int64(-1), int64(math.MaxInt64), int64(math.MinInt64), nil}},
		{"integer", []any{int32(0), int32(-1), int32(math.MaxInt32), int32(math.MinInt32), nil}},
		{"smallint", []any{int16(0), int16(-1), int16(math.MaxInt16), int16(math.MinInt16), nil}},
		{"numeric(12,2)", []any{num("0"), num("-0.01"), num("9999999999.99"), num("1.5"), num("-12345.6"), num("100"), nil}},
		{"numeric(1000,500)", []any{num(strings.Repeat("9", 500) + "." + strings.Repeat("9", 500)), num("-0." + strings.Repeat("0", 499) + "1"), nil}},
		{"numeric", []any{
			num("0"), num("0.0"), num("0.00000"), num("-0.00001"), num("1.50"), num("10000"), num("100000000"),
			num("0.0001"), num("0.00010000"), num("-1"), num("9999"), num("10000.0001"), num("12345678.87654321"),
			num("123456789012345678901234567890.123456789012345678901234567890"),
			num("1" + strings.Repeat("0", 20000)), num("-" + strings.Repeat("7", 1001) + "." + strings.Repeat("3", 999)),
			num("0." + strings.Repeat("0", 1000) + "5"), num("0012.3400"), nil,
		}},
		{"double precision", []any{0.0, math.Copysign(0, -1), 1.5, -1e-300, math.MaxFloat64, math.SmallestNonzeroFloat64,
			math.Inf(1), math.Inf(-1), math.NaN(), nil}},
		{"real", []any{float32(0), float32(-1.25), float32(math.MaxFloat32), float32(math.SmallestNonzeroFloat32),
			float32(math.Inf(-1)), float32(math.NaN()), nil}},
		{"boolean", []any{true, false, nil}},
		{"date", []any{
			time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(1999, 12, 31, 0, 0, 0, 0, time.UTC),
			time.Date(1970, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC),
			time.Date(-4712, 11, 24, 0, 0, 0, 0, time.UTC), time.Date(5874897, 12, 31, 0, 0, 0, 0, time.UTC),
			time.Date(1969, 7, 20, 20, 17, 0, 0, time.UTC), // not midnight: its day
			time.Date(2026, 3, 1, 1, 0, 0, 0, east), time.Date(1900, 2, 28, 23, 0, 0, 0, west), nil,
		}},
		{"timestamptz", []any{
			time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(1969, 12, 31, 23, 59, 59, 999999000, time.UTC),
			time.Date(-4712, 11, 24, 0, 0, 0, 0, time.UTC), time.Date(294276, 12, 31, 23, 59, 59, 999999000, time.UTC),
			time.Date(2026, 3, 29, 1, 30, 0, 123456000, east), time.Date(1, 1, 1, 0, 0, 0, 1000, west), nil,
		}},
		{"timestamptz(3)", []any{time.Date(2026, 3, 29, 1, 30, 0, 123000000, time.UTC), nil}},
		{"timestamp", []any{
			time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(1969, 12, 31, 23, 59, 59, 999999000, time.UTC),
			time.Date(-4712, 11, 24, 0, 0, 0, 0, time.UTC), time.Date(294276, 12, 31, 23, 59, 59, 999999000, time.UTC),
			time.Date(2026, 3, 29, 1, 30, 0, 123456000, east), time.Date(1950, 6, 1, 12, 0, 0, 0, west), nil,
		}},
		{"time", []any{pgtype.Time{Valid: true}, pgtype.Time{Microseconds: 1, Valid: true},
			pgtype.Time{Microseconds: 86_400_000_000, Valid: true}, pgtype.Time{Microseconds: 45_296_789_012, Valid: true}, pgtype.Time{}, nil}},
		{"uuid", []any{[16]byte{}, [16]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
			record.ID{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}, nil}},
		{"jsonb", []any{json.RawMessage(`{}`), json.RawMessage(`{"a":[1,"ż",null,1.50,{"b":true}]}`), json.RawMessage(`"x"`),
			json.RawMessage(`null`), json.RawMessage(`123456789012345678901234567890.5`), nil}},
		{"bytea", []any{[]byte{}, []byte{0, 1, 255}, blob, nil}},
	}
}

// fallbackRows are rows of Go types decode does not hand, which take pgx's
// plans; each is followed by a row of the usual types, so that a column's
// plan is looked up again when the type changes.
func fallbackValues(cols []copyColumn) [][]any {
	row := func(f func(typ string) any) []any {
		vals := make([]any, len(cols))
		for i, c := range cols {
			vals[i] = f(c.typ)
		}
		return vals
	}
	other := row(func(typ string) any {
		switch typ {
		case "bigint":
			return 42 // int
		case "integer":
			return int64(7)
		case "smallint":
			return int8(-3)
		case "numeric":
			return pgtype.Numeric{Int: big.NewInt(-12345), Exp: -3, Valid: true}
		case "numeric(12,2)":
			return 1.25
		case "double precision":
			return float32(0.5)
		case "text":
			return pgtype.Text{String: "a pgtype.Text", Valid: true}
		case "uuid":
			return pgtype.UUID{Bytes: [16]byte{9}, Valid: true}
		case "timestamptz":
			return pgtype.Timestamptz{InfinityModifier: pgtype.Infinity, Valid: true}
		case "date":
			return pgtype.Date{InfinityModifier: pgtype.NegativeInfinity, Valid: true}
		case "jsonb":
			return map[string]any{"k": "v"}
		case "boolean":
			return (*bool)(nil)
		}
		return nil
	})
	usual := row(func(typ string) any {
		for _, c := range cols {
			if c.typ == typ {
				return c.vals[0]
			}
		}
		return nil
	})
	return [][]any{other, usual, other}
}

// TestCopyRoundTrip stages the same rows, of every column type, through
// copy.go's encoder (hand-written and plans only) and through pgx.CopyFrom,
// and compares what the database stored: the values, and their text, so
// that a numeric's scale counts too.
func TestCopyRoundTrip(t *testing.T) {
	t.Parallel()
	cols := copyColumns()
	p := &config.Pipeline{Name: "copy", Schema: "public", Table: "copy", Format: "debezium"}
	var rows []record.Row
	for i, c := range cols {
		p.Columns = append(p.Columns, config.Column{Name: strings.NewReplacer(" ", "_", "(", "_", ")", "", ",", "_").Replace(c.typ) + "_col", Type: c.typ, Nullable: true})
		for j := range c.vals {
			vals := make([]any, len(cols))
			for k, o := range cols {
				vals[k] = o.vals[(i+j+k)%len(o.vals)]
			}
			rows = append(rows, record.Row{Values: vals})
		}
	}
	rows = append(rows, record.Row{Values: make([]any, len(cols))}) // every column NULL
	for _, vals := range fallbackValues(cols) {
		rows = append(rows, record.Row{Values: vals})
	}
	for n := len(rows); len(rows) < 2000; { // many reads, of small rows
		r := rows[len(rows)%n]
		r.Values = append([]any(nil), r.Values...)
		for i, v := range r.Values {
			switch v := v.(type) {
			case string:
				r.Values[i] = "short"
			case []byte:
				r.Values[i] = v[:min(len(v), 8)]
			case record.Numeric:
				r.Values[i] = record.Numeric(strings.Repeat("1", i%9+1))
			}
		}
		rows = append(rows, r)
	}
	dated := make([]batch.Dated, len(rows))
	for i := range rows {
		r := &rows[i]
		r.ID = record.ID{byte(i >> 8), byte(i)}
		r.Version = int64(i) * 1_000_000_007
		r.Pos = record.Position{TP: record.TP{Topic: "tópico", Partition: int32(i % 3)}, Offset: int64(i) << 33}
		if i%5 == 0 {
			r.Unavailable = []int32{int32(i % len(cols)), int32(len(cols) - 1)}
		}
		dated[i] = batch.Dated{Row: r, Batch: i % 2}
	}
	ids := []record.ID{{0xaa}, {0xbb, 1}}

	for _, format := range []string{"json", "debezium"} {
		t.Run(format, func(t *testing.T) {
			p := *p
			p.Format = format
			st := buildStatements(&p)
			ctx := context.Background()
			pool := pgtest.Pool(t)
			tx, err := pool.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer tx.Rollback(ctx) //nolint:errcheck // the test's data goes
			if _, err := tx.Exec(ctx, st.createStage); err != nil {
				t.Fatal(err)
			}
			keep := func(table string) {
				t.Helper()
				if _, err := tx.Exec(ctx, "CREATE TEMP TABLE "+table+" AS SELECT * FROM "+st.stage+"; DELETE FROM "+st.stage); err != nil {
					t.Fatal(err)
				}
			}
			n, err := tx.CopyFrom(ctx, pgx.Identifier{st.stageName}, st.stageCols, &rowSource{rows: dated, ids: ids, unavailable: st.unavailable})
			if err != nil || n != int64(len(rows)) {
				t.Fatalf("pgx.CopyFrom: %d rows, %v", n, err)
			}
			keep("by_pgx")
			if n, err := copyStage(ctx, tx, st, dated, ids); err != nil || n != int64(len(rows)) {
				t.Fatalf("copyStage: %d rows, %v", n, err)
			}
			keep("by_hand")
			enc := newRowEncoder(tx.Conn().TypeMap(), st.stageOIDs, st.unavailable)
			enc.plansOnly = true
			if n, err := enc.copyRows(ctx, tx.Conn().PgConn(), st.copyStage, dated, ids); err != nil || n != int64(len(rows)) {
				t.Fatalf("copy through plans: %d rows, %v", n, err)
			}
			keep("by_plans")
			for _, table := range []string{"by_hand", "by_plans"} {
				for _, q := range []string{
					"SELECT count(*) FROM (SELECT * FROM by_pgx EXCEPT ALL SELECT * FROM %[1]s) d",
					"SELECT count(*) FROM (SELECT * FROM %[1]s EXCEPT ALL SELECT * FROM by_pgx) d",
					"SELECT count(*) FROM (SELECT t::text FROM by_pgx t EXCEPT ALL SELECT t::text FROM %[1]s t) d",
					"SELECT count(*) FROM (SELECT t::text FROM %[1]s t EXCEPT ALL SELECT t::text FROM by_pgx t) d",
				} {
					var differ int
					if err := tx.QueryRow(ctx, strings.ReplaceAll(q, "%[1]s", table)).Scan(&differ); err != nil {
						t.Fatal(err)
					}
					if differ != 0 {
						t.Errorf("%s: %d rows differ (%s)", table, differ, q)
					}
				}
			}
			// The comparison is not empty-handed: the edges arrived.
			var got string
			if err := tx.QueryRow(ctx, `SELECT numeric_col::text FROM by_hand WHERE numeric_col = 1.5`).Scan(&got); err != nil || got != "1.50" {
				t.Errorf("numeric 1.50 is stored as %q (%v)", got, err)
			}
		})
	}
}

// TestCopyEncodeError: a value no codec can encode fails the copy with
// the row's position, not the server's "COPY from stdin failed".
func TestCopyEncodeError(t *testing.T) {
	t.Parallel()
	p := &config.Pipeline{Name: "copyerr", Schema: "public", Table: "copyerr", Format: "json",
		Columns: []config.Column{{Name: "n", Type: "bigint"}}}
	st := buildStatements(p)
	ctx := context.Background()
	tx, err := pgtest.Pool(t).Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // the test's data goes
	if _, err := tx.Exec(ctx, st.createStage); err != nil {
		t.Fatal(err)
	}
	rows := []batch.Dated{{Row: &record.Row{Values: []any{int64(1)}}}, {Row: &record.Row{Values: []any{struct{}{}}, Pos: record.Position{TP: record.TP{Topic: "t"}, Offset: 9}}}}
	_, err = copyStage(ctx, tx, st, rows, []record.ID{{1}})
	if err == nil || !strings.Contains(err.Error(), "encode row at t/0 offset 9: column 1: ") {
		t.Fatalf("err = %v, want the row's position and column", err)
	}
}

func TestAppendNumeric(t *testing.T) {
	for _, s := range []string{"", "-", ".5", "5.", "1e5", "+1", "NaN", "1.2.3", "--1", " 1", "١"} {
		if _, ok := appendNumeric(nil, s); ok {
			t.Errorf("appendNumeric(%q) took it", s)
		}
	}
}

// TestCopyReaderChunks: the reader fills every read but the last, whatever
// the rows' sizes, and holds about a read and a row, whatever their number.
func TestCopyReaderChunks(t *testing.T) {
	p := &config.Pipeline{Name: "chunks", Schema: "public", Table: "chunks", Format: "json",
		Columns: []config.Column{{Name: "s", Type: "text"}}}
	st := buildStatements(p)
	var rows []batch.Dated
	var want []byte
	want = append(want, copyHeader...)
	enc := newRowEncoder(pgtype.NewMap(), st.stageOIDs, st.unavailable)
	biggest := 0
	for i := range 3000 {
		s := strings.Repeat("x", i%7*i) // up to 18 KB
		r := &record.Row{Values: []any{s}, Pos: record.Position{Offset: int64(i)}}
		rows = append(rows, batch.Dated{Row: r})
		before := len(want)
		want, _ = enc.appendRow(want, r, record.ID{})
		biggest = max(biggest, len(want)-before)
	}
	want = append(want, 0xff, 0xff)

	const read = 65531 // what pgconn asks for
	cr := &copyReader{enc: enc, rows: rows, ids: []record.ID{{}}}
	var got []byte
	p2 := make([]byte, read)
	for {
		n, err := cr.Read(p2)
		got = append(got, p2[:n]...)
		if cap(cr.buf) > 2*(read+biggest) { // append's growth
			t.Fatalf("the reader holds %d bytes, more than twice a read (%d) and the biggest row (%d)", cap(cr.buf), read, biggest)
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if n != read && len(got) != len(want) {
			t.Fatalf("a read of %d bytes before the last", n)
		}
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("read %d bytes, want %d (the header, the rows, the trailer)", len(got), len(want))
	}
	if len(want) < 10*read {
		t.Fatalf("only %d bytes: too few reads to test", len(want))
	}
}
