//go:build debezium

package debeziumtest_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/idemsink/idemsink/internal/debeziumtest"
	"github.com/idemsink/idemsink/internal/kafkatest"
)

// utcText prints a timestamptz as MariaDB prints a datetime(6).
const utcText = "to_char(%s AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')"

// mariaColumns are the MariaDB source's columns (created first), each
// printed alike on both sides: MariaDB casts the value to text, PostgreSQL
// prints the target column.
var mariaColumns = []column{
	{name: "created", source: "datetime(6) NOT NULL", target: "timestamptz", srcText: "%s", tgtText: utcText},
	{name: "c_int", source: "int", target: "integer", srcText: "%s"},
	{name: "c_bigint", source: "bigint", target: "bigint", srcText: "%s"},
	{name: "c_dec", source: "decimal(12,3)", target: "numeric(12,3)", srcText: "%s"},
	{name: "c_varchar", source: "varchar(40)", target: "varchar(40)", srcText: "%s"},
	{name: "c_text", source: "text", target: "text", srcText: "%s"},
	{name: "c_date", source: "date", target: "date", srcText: "%s"},
	{name: "c_datetime", source: "datetime(6)", target: "timestamp(6)", srcText: "%s", tgtText: "to_char(%s, 'YYYY-MM-DD HH24:MI:SS.US')"},
	{name: "c_ts", source: "timestamp(6) NULL DEFAULT NULL", target: "timestamptz", srcText: "%s", tgtText: utcText},
}

// TestDebeziumMariaDB streams a seeded workload on a MariaDB source through
// Debezium's MariaDB connector (binlog, JSON with the schema envelope) into
// idemsink with debezium.version file_pos: single and multi-row statements
// (the row index within an event), one row changed twice in a transaction,
// a delete and a re-insert of the same id in one transaction; the daemon is
// SIGKILLed mid-stream; source and target are compared column by column.
func TestDebeziumMariaDB(t *testing.T) {
	began := time.Now()
	connectURL := services(t)
	seed := seed(t)
	ctx := context.Background()
	port := 0
	if s := os.Getenv("DEBEZIUM_MARIADB_PORT"); s != "" {
		var err error
		if port, err = strconv.Atoi(s); err != nil {
			t.Fatalf("DEBEZIUM_MARIADB_PORT: %v", err)
		}
	}
	sctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	m, err := debeziumtest.StartMariaDB(sctx, port)
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := m.Close(); err != nil {
			t.Errorf("close MariaDB: %v", err)
		}
	})
	k := kafkatest.New(t)
	w := &mariaWorkload{t: t, m: m, rng: rand.New(rand.NewPCG(seed, 18)), live: map[int64]bool{}}
	w.create(ctx)
	w.snapshot(ctx, snapshotRows)

	connect := debeziumtest.NewConnect(connectURL)
	suffix := fmt.Sprintf("%08x", rand.Uint32())
	st := stream{name: "mariadb", f: flavour{name: "mariadb", schemas: true}, cols: mariaColumns, version: "file_pos"}
	prefix := "dbz_mariadb_" + suffix
	cfg := withConverters(map[string]string{
		"connector.class":       "io.debezium.connector.mariadb.MariaDbConnector",
		"database.hostname":     "127.0.0.1",
		"database.port":         strconv.Itoa(m.Port),
		"database.user":         "dbz",
		"database.password":     "dbz",
		"database.server.id":    strconv.Itoa(5400 + rand.IntN(1000)),
		"topic.prefix":          prefix,
		"database.include.list": "src",
		"table.include.list":    `src\.dbz_types`,
		"snapshot.mode":         "initial",
		"schema.history.internal.kafka.bootstrap.servers": strings.Join(k.Brokers, ","),
		"schema.history.internal.kafka.topic":             prefix + ".history",
	}, st.f)
	topics := map[string]string{st.name: startConnector(t, connect, k, prefix, prefix+".src.dbz_types", cfg)}
	drive(t, k, w, []stream{st}, topics, suffix, began)
}

// mariaWorkload writes the MariaDB source table.
type mariaWorkload struct {
	t               *testing.T
	m               *debeziumtest.MariaDB
	rng             *rand.Rand
	live            map[int64]bool
	deleted         []int64
	next            int64
	statements, txs int
	twice, rowsMany int // a row changed twice in a transaction; statements changing many rows
}

func (w *mariaWorkload) create(ctx context.Context) {
	var cols []string
	for _, c := range mariaColumns {
		cols = append(cols, c.name+" "+c.source)
	}
	sql := fmt.Sprintf(`CREATE DATABASE src;
CREATE TABLE src.dbz_types (id bigint PRIMARY KEY, %s);
CREATE USER 'dbz'@'%%' IDENTIFIED BY 'dbz';
GRANT SELECT, RELOAD, SHOW DATABASES, REPLICATION SLAVE, REPLICATION CLIENT, BINLOG MONITOR, LOCK TABLES ON *.* TO 'dbz'@'%%';`, strings.Join(cols, ", "))
	if err := w.m.Exec(ctx, sql); err != nil {
		w.t.Fatalf("%s: %v", sql, err)
	}
}

// tx runs the statements in one transaction.
func (w *mariaWorkload) tx(ctx context.Context, stmts []string) error {
	w.txs++
	w.statements += len(stmts)
	return w.m.Exec(ctx, "START TRANSACTION;\n"+strings.Join(stmts, ";\n")+";\nCOMMIT;")
}

func (w *mariaWorkload) snapshot(ctx context.Context, n int) {
	var stmts []string
	for range n {
		w.next++
		stmts = append(stmts, w.insert(w.next))
	}
	if err := w.tx(ctx, stmts); err != nil {
		w.t.Fatalf("snapshot rows: %v", err)
	}
}

func (w *mariaWorkload) insertMarker(ctx context.Context) {
	if err := w.tx(ctx, []string{w.insert(marker)}); err != nil {
		w.t.Fatalf("insert the marker row: %v", err)
	}
}

func (w *mariaWorkload) insert(id int64) string {
	names := []string{"id"}
	vals := []string{strconv.FormatInt(id, 10)}
	for _, c := range mariaColumns {
		names = append(names, c.name)
		null := 0.1
		if c.name == "created" {
			null = 0
		}
		vals = append(vals, w.value(c, null))
	}
	w.live[id] = true
	return fmt.Sprintf("INSERT INTO src.dbz_types (%s) VALUES (%s)", strings.Join(names, ", "), strings.Join(vals, ", "))
}

func (w *mariaWorkload) update(id int64, cols []column, nulls float64) string {
	var set []string
	for _, c := range cols {
		n := nulls
		if c.name == "created" {
			n = 0
		}
		set = append(set, c.name+" = "+w.value(c, n))
	}
	return fmt.Sprintf("UPDATE src.dbz_types SET %s WHERE id = %d", strings.Join(set, ", "), id)
}

func (w *mariaWorkload) round(ctx context.Context, r int) error {
	for range 12 {
		var stmts []string
		for range 1 + w.rng.IntN(5) {
			stmts = append(stmts, w.change(r)...)
		}
		if err := w.tx(ctx, stmts); err != nil {
			return err
		}
	}
	return nil
}

func (w *mariaWorkload) change(r int) []string {
	var ids []int64
	for id := range w.live {
		if id != marker {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	small := []column{mariaColumns[1], mariaColumns[4]}
	switch p := w.rng.Float64(); {
	case p < 0.15 || len(ids) == 0:
		w.next++
		return []string{w.insert(w.next)}
	case p < 0.35:
		return []string{w.update(ids[w.rng.IntN(len(ids))], small, 0)}
	case p < 0.50: // values set to NULL
		cols := slices.Clone(mariaColumns[1:])
		w.rng.Shuffle(len(cols), func(i, j int) { cols[i], cols[j] = cols[j], cols[i] })
		return []string{w.update(ids[w.rng.IntN(len(ids))], cols[:3], 1)}
	case p < 0.62:
		return []string{w.update(ids[w.rng.IntN(len(ids))], mariaColumns, 0.1)}
	case p < 0.70: // the same row twice in one transaction
		w.twice++
		id := ids[w.rng.IntN(len(ids))]
		return []string{w.update(id, mariaColumns, 0.1), w.update(id, small, 0.2)}
	case p < 0.78: // one statement, many rows: the row index within the event orders them
		w.rowsMany++
		return []string{fmt.Sprintf("UPDATE src.dbz_types SET c_int = IFNULL(c_int, 0) DIV 2 + %d WHERE id %% 7 = %d", r, w.rng.IntN(7))}
	case p < 0.90:
		id := ids[w.rng.IntN(len(ids))]
		delete(w.live, id)
		if w.rng.IntN(3) == 0 { // deleted and inserted again in the same transaction
			return []string{fmt.Sprintf("DELETE FROM src.dbz_types WHERE id = %d", id), w.insert(id)}
		}
		w.deleted = append(w.deleted, id)
		return []string{fmt.Sprintf("DELETE FROM src.dbz_types WHERE id = %d", id)}
	default:
		if len(w.deleted) == 0 {
			w.next++
			return []string{w.insert(w.next)}
		}
		i := w.rng.IntN(len(w.deleted))
		id := w.deleted[i]
		w.deleted = slices.Delete(w.deleted, i, i+1)
		return []string{w.insert(id)}
	}
}

// value is a random SQL literal of c's type, or NULL with probability nulls.
func (w *mariaWorkload) value(c column, nulls float64) string {
	rng := w.rng
	if rng.Float64() < nulls {
		return "NULL"
	}
	quote := func(s string) string {
		return "'" + strings.NewReplacer(`\`, `\\`, `'`, `''`).Replace(s) + "'"
	}
	pick := func(vs ...string) string { return vs[rng.IntN(len(vs))] }
	dt := func(lo time.Time, span time.Duration) string {
		return quote(lo.Add(time.Duration(rng.Int64N(int64(span)))).Truncate(time.Microsecond).Format("2006-01-02 15:04:05.000000"))
	}
	switch c.name {
	case "created":
		return dt(time.Date(2026, 3, 28, 0, 0, 0, 0, time.UTC), 72*time.Hour)
	case "c_int":
		return pick(strconv.Itoa(int(rng.Int32())-rng.IntN(1<<30)), "2147483647", "-2147483648", "0")
	case "c_bigint":
		return pick(strconv.FormatInt(rng.Int64()-rng.Int64N(1<<62), 10), "9223372036854775807", "-9223372036854775808")
	case "c_dec":
		return fmt.Sprintf("%d.%03d", rng.Int64N(2_000_000_000)-1_000_000_000, rng.IntN(1000))
	case "c_varchar":
		return quote(pick("Ünïcödé ✓", "it's", `back\slash`, "", randomHex(rng, 40)))
	case "c_text":
		return quote(pick("héllo wörld", "line\nbreak\ttab", "", randomHex(rng, 3000+rng.IntN(3000))))
	case "c_date":
		return quote(time.Date(1900, 1, 1, 0, 0, 0, 0, time.UTC).AddDate(0, 0, rng.IntN(73000)).Format(time.DateOnly))
	case "c_datetime":
		return dt(time.Date(1950, 1, 1, 0, 0, 0, 0, time.UTC), 140*365*24*time.Hour)
	case "c_ts": // MariaDB's timestamp range
		return dt(time.Date(1971, 1, 1, 0, 0, 0, 0, time.UTC), 60*365*24*time.Hour)
	}
	panic("no generator for " + c.name)
}

func (w *mariaWorkload) read(t *testing.T, ctx context.Context, exprs []string) map[int64][]string {
	t.Helper()
	names := []string{"id"}
	sel := []string{"id"}
	for i, e := range exprs {
		names = append(names, fmt.Sprintf("v%d", i))
		sel = append(sel, fmt.Sprintf("%s AS v%d", e, i))
	}
	rows, err := w.m.Query(ctx, fmt.Sprintf("SELECT %s FROM src.dbz_types", strings.Join(sel, ", ")), names...)
	if err != nil {
		t.Fatalf("read the MariaDB source: %v", err)
	}
	out := map[int64][]string{}
	for _, r := range rows {
		id, err := strconv.ParseInt(*r[0], 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		row := make([]string, len(exprs))
		for i, v := range r[1:] {
			row[i] = null
			if v != nil {
				row[i] = *v
			}
		}
		out[id] = row
	}
	return out
}

func (w *mariaWorkload) stats() string {
	return fmt.Sprintf("%d source rows, %d statements in %d transactions (%d with a row changed twice, %d multi-row updates)",
		len(w.live), w.statements, w.txs, w.twice, w.rowsMany)
}
