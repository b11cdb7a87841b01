//go:build debezium

package debeziumtest_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.yaml.in/yaml/v3"

	"github.com/idemsink/idemsink/internal/config"
	"github.com/idemsink/idemsink/internal/debeziumtest"
	"github.com/idemsink/idemsink/internal/kafkatest"
	"github.com/idemsink/idemsink/internal/pglocal"
	"github.com/idemsink/idemsink/internal/pgtest"
	"github.com/idemsink/idemsink/internal/waittest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// column is one column of the source table and how the target holds it.
type column struct {
	name, source string
	// target is the configured column type; "" takes source.
	target string
	// hint is the column's semantic_type for a flavour without the schema
	// envelope (README: Debezium types); "" for none.
	hint string
	// cmpSource and cmpTarget print the values in the same terms when the
	// column type differs from the source's (format verbs for the column
	// name); "" is %s::text.
	cmpSource, cmpTarget string
	// srcText and tgtText, when set, always print the values in the same
	// terms (a source that is not PostgreSQL).
	srcText, tgtText string
}

func (c column) typ() string {
	if c.target != "" {
		return c.target
	}
	return c.source
}

// columns are every column type the Debezium PostgreSQL connector maps,
// beside id (the key) and created (the target date), each configured as
// README's "Debezium types" table says.
var columns = []column{
	{name: "c_smallint", source: "smallint"},
	{name: "c_int", source: "integer"},
	{name: "c_bigint", source: "bigint"},
	{name: "c_numeric_scaled", source: "numeric(12,3)", hint: "org.apache.kafka.connect.data.Decimal"},
	{name: "c_numeric", source: "numeric", hint: "io.debezium.data.VariableScaleDecimal"},
	{name: "c_real", source: "real"},
	{name: "c_double", source: "double precision"},
	{name: "c_text", source: "text"}, // large values are stored out of line (TOAST)
	{name: "c_varchar", source: "varchar(40)"},
	{name: "c_char", source: "char(8)"},
	{name: "c_bool", source: "boolean"},
	{name: "c_date", source: "date", hint: "io.debezium.time.Date"},
	{name: "c_time", source: "time", hint: "io.debezium.time.MicroTime"},
	{name: "c_timestamp", source: "timestamp", hint: "io.debezium.time.MicroTimestamp"},
	{name: "c_timestamptz", source: "timestamptz"},
	{name: "c_uuid", source: "uuid"},
	// json has no equality in PostgreSQL: it is stored as jsonb, which
	// normalises whitespace, key order and duplicate keys, so the source is
	// compared as jsonb too.
	{name: "c_json", source: "json", target: "jsonb", hint: "io.debezium.data.Json", cmpSource: "%s::jsonb::text"},
	{name: "c_jsonb", source: "jsonb", hint: "io.debezium.data.Json"},
	{name: "c_bytea", source: "bytea"},
}

// flavour is one way Kafka Connect writes the events: the JSON converter
// with or without the schema envelope.
type flavour struct {
	name    string
	schemas bool
	// connector is the flavour's extra connector configuration.
	connector map[string]string
}

// stream is one connector and the columns it carries.
type stream struct {
	name    string // the flavour's
	f       flavour
	cols    []column
	version string // debezium.version
}

// streams are a stream per flavour.
func streams() []stream {
	var out []stream
	for _, f := range flavours {
		out = append(out, stream{name: f.name, f: f, cols: columns, version: "lsn"})
	}
	return out
}

// flavours are the connector's defaults (README's "Debezium types" table:
// decimal.handling.mode=precise, time.precision.mode=adaptive,
// binary.handling.mode=bytes) with and without the schema envelope, and
// without it with decimals as strings (a common setting: the numerics need
// no semantic_type then).
var flavours = []flavour{
	{name: "envelope", schemas: true},
	{name: "plain", schemas: false},
	{name: "plain_string", schemas: false, connector: map[string]string{"decimal.handling.mode": "string"}},
}

// cmpSource is how the source prints c in flavour f. With the default
// decimal.handling.mode=precise the connector strips the trailing zeros of
// an unconstrained numeric before it writes its VariableScaleDecimal
// (PostgresValueConverter.convertDecimal: stripTrailingZeros), so the
// event no longer has the source's scale: the target holds the value as
// sent, which is the source's without trailing zeros (trim_scale). As a
// string, the value keeps its scale and is compared as it is.
func (f flavour) cmpSource(c column) string {
	if c.source == "numeric" && f.connector["decimal.handling.mode"] != "string" {
		return "trim_scale(%s)::text"
	}
	return c.cmpSource
}

// hint is c's semantic_type in flavour f: none with the envelope, none for
// a decimal sent as a string.
func (f flavour) hint(c column) string {
	if f.schemas || f.connector["decimal.handling.mode"] == "string" && strings.HasSuffix(c.hint, "Decimal") {
		return ""
	}
	return c.hint
}

// pending are known failures, keyed by "flavour/column": reported, not
// failed, while a pending column that matches fails the test, so that the
// entry goes with its fix. A dead letter naming a pending column excuses
// its row. Empty: issue 17's bar is 0 rows differing on every column of
// every flavour.
var pending = map[string]known{}

// known is a pending failure.
type known struct {
	why string
}

const (
	snapshotRows = 150
	rounds       = 8
	// marker is the id of the row inserted last: once both topics hold
	// it, Debezium has written every change before it.
	marker = 1_000_000
)

// TestDebeziumPostgres streams a seeded workload (snapshot, inserts,
// updates that leave TOASTed values unchanged or set values to NULL,
// deletes, re-inserts, multi-row transactions) through the Debezium
// connector in both flavours into idemsink, SIGKILLs the daemon mid-stream
// after every other round, and compares source and target column by column.
func TestDebeziumPostgres(t *testing.T) {
	began := time.Now()
	connectURL := services(t)
	seed := seed(t)
	ctx := context.Background()

	src, srcPort := startSource(t)
	k := kafkatest.New(t)
	w := &workload{t: t, pool: src, rng: rand.New(rand.NewPCG(seed, 17)), live: map[int64]bool{}}
	w.create(ctx)
	w.snapshot(ctx, snapshotRows)

	connect := debeziumtest.NewConnect(connectURL)
	suffix := fmt.Sprintf("%08x", rand.Uint32())
	topics := map[string]string{}
	for _, st := range streams() {
		prefix := "dbz_" + st.name + "_" + suffix
		topics[st.name] = startConnector(t, connect, k, prefix, prefix+".public.dbz_types", pgConnector(st, srcPort, prefix))
	}
	drive(t, k, w, streams(), topics, suffix, began)
}

// source is a database the workload writes and the comparison reads.
type source interface {
	// round writes one round of changes.
	round(ctx context.Context, r int) error
	// insertMarker inserts the row with id marker, last.
	insertMarker(ctx context.Context)
	// read returns id → the values of exprs as text (null for NULL).
	read(t *testing.T, ctx context.Context, exprs []string) map[int64][]string
	// stats describes the workload written.
	stats() string
}

// drive waits for the snapshots, runs the daemon through the rounds of
// the workload with a SIGKILL after every other one, waits until it has
// caught up and compares every stream's table with the source.
func drive(t *testing.T, k *kafkatest.Cluster, w source, streams []stream, topics map[string]string, suffix string, began time.Time) {
	t.Helper()
	ctx := context.Background()
	for _, s := range streams {
		waitEnds(t, k, topics[s.name], snapshotRows, "the snapshot of "+s.name)
	}
	t.Logf("snapshot of %d rows in %d topics after %s", snapshotRows, len(streams), time.Since(began).Round(time.Millisecond))

	d := newDaemon(t, k, streams, topics, suffix)
	life := d.start()
	kills := 0
	for r := 1; r <= rounds; r++ {
		done := make(chan error, 1)
		go func() { done <- w.round(ctx, r) }()
		if r%2 == 1 {
			// Kill once this life has applied something, while the round
			// is still being written and streamed.
			base := life.committedAtStart
			waittest.Describe(t, 2*time.Minute, func() bool { return d.committed(d.runs[0]) > base || life.exited() },
				func() string { return fmt.Sprintf("the daemon to commit past %d (life %d)", base, kills+1) })
			life.mustRun(t)
			lag := d.lag(d.runs[0])
			life.kill()
			kills++
			t.Logf("round %d: SIGKILL %d with %d records not yet committed", r, kills, lag)
		}
		if err := <-done; err != nil {
			t.Fatalf("round %d: %v", r, err)
		}
		if life.exited() {
			life = d.start()
		}
	}
	w.insertMarker(ctx)
	for _, s := range streams {
		waitMarker(t, k, topics[s.name])
	}
	for _, rn := range d.runs {
		waittest.Describe(t, 3*time.Minute, func() bool { return d.lag(rn) == 0 || life.exited() },
			func() string { return fmt.Sprintf("run %s to commit every record (%d to go)", rn.name, d.lag(rn)) })
		life.mustRun(t)
	}
	t.Logf("caught up after %s: %s, %d SIGKILLs of the daemon", time.Since(began).Round(time.Millisecond), w.stats(), kills)

	var summary []string
	var reports []*report
	for _, rn := range d.runs {
		tgt, err := pgxpool.New(ctx, withUTC(rn.target))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(tgt.Close)
		for _, s := range streams {
			rep := compare(t, ctx, w, tgt, s, rn)
			for _, line := range rep.lines() {
				t.Log(line)
			}
			rep.judge(t)
			reports = append(reports, rep)
			summary = append(summary, rep.summary())
		}
	}
	stillPending(t, streams, reports)
	t.Logf("debezium: %d SIGKILLs; %s", kills, time.Since(began).Round(time.Second))
	for _, line := range summary {
		t.Logf("debezium: %s", line)
	}
}

// services returns the Connect worker's URL, failing the test when the
// tier's services are not there.
func services(t *testing.T) string {
	t.Helper()
	connectURL, brokers := os.Getenv("CONNECT_URL"), os.Getenv("KAFKA_BROKERS")
	if connectURL == "" || brokers == "" {
		t.Fatal("CONNECT_URL and KAFKA_BROKERS are unset: run make test-debezium (scripts/test-debezium starts the broker and the Connect worker)")
	}
	return connectURL
}

// seed returns DEBEZIUM_SEED, else a random seed, and logs it.
func seed(t *testing.T) uint64 {
	t.Helper()
	seed := rand.Uint64()
	if s := os.Getenv("DEBEZIUM_SEED"); s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatalf("DEBEZIUM_SEED: %v", err)
		}
	}
	t.Logf("seed %d (DEBEZIUM_SEED repeats the workload)", seed)
	return seed
}

// ---- the source ----

// startSource starts a PostgreSQL server with logical decoding on
// DEBEZIUM_PG_PORT (a free port when unset) and returns a pool on it and
// its port.
func startSource(t *testing.T) (*pgxpool.Pool, int) {
	t.Helper()
	port := 0
	if s := os.Getenv("DEBEZIUM_PG_PORT"); s != "" {
		var err error
		if port, err = strconv.Atoi(s); err != nil {
			t.Fatalf("DEBEZIUM_PG_PORT: %v", err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	srv, err := pglocal.Start(ctx, pglocal.Options{Port: port, Settings: []string{
		"wal_level = logical", "max_replication_slots = 10", "max_wal_senders = 10",
	}})
	if err != nil {
		t.Fatalf("start the source PostgreSQL: %v", err)
	}
	t.Cleanup(func() {
		if err := srv.Close(); err != nil {
			t.Errorf("close the source PostgreSQL: %v", err)
		}
	})
	pool, err := pgxpool.New(ctx, withUTC(srv.DSN("")))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool, srv.Port()
}

// withUTC sets the session time zone, so that timestamptz prints alike on
// both servers.
func withUTC(dsn string) string {
	if strings.Contains(dsn, "?") {
		return dsn + "&timezone=UTC"
	}
	return dsn + "?timezone=UTC"
}

// ---- Kafka Connect ----

// pgConnector is the configuration of a PostgreSQL stream's connector:
// its own slot, publication and topic prefix.
func pgConnector(s stream, port int, prefix string) map[string]string {
	cfg := map[string]string{
		"connector.class":             "io.debezium.connector.postgresql.PostgresConnector",
		"plugin.name":                 "pgoutput",
		"database.hostname":           "127.0.0.1",
		"database.port":               strconv.Itoa(port),
		"database.user":               pglocal.Superuser,
		"database.password":           "unused", // the server trusts local connections
		"database.dbname":             "postgres",
		"topic.prefix":                prefix,
		"slot.name":                   prefix,
		"publication.name":            prefix,
		"publication.autocreate.mode": "filtered",
		"table.include.list":          "public.dbz_types",
		"snapshot.mode":               "initial",
	}
	return withConverters(cfg, s.f)
}

// withConverters adds the flavour's converters and settings to cfg.
func withConverters(cfg map[string]string, f flavour) map[string]string {
	conv := strconv.FormatBool(f.schemas)
	cfg["tasks.max"] = "1"
	cfg["key.converter"] = "org.apache.kafka.connect.json.JsonConverter"
	cfg["key.converter.schemas.enable"] = conv
	cfg["value.converter"] = "org.apache.kafka.connect.json.JsonConverter"
	cfg["value.converter.schemas.enable"] = conv
	for k, v := range f.connector {
		cfg[k] = v
	}
	return cfg
}

// startConnector creates topic and the connector prefix that writes to
// it, and waits until its task runs.
func startConnector(t *testing.T, c *debeziumtest.Connect, k *kafkatest.Cluster, prefix, topic string, cfg map[string]string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// Created here, not by the producer's auto-creation, so that the waits
	// can ask for its end offsets at once.
	if resp, err := k.Admin().CreateTopic(ctx, 1, 1, nil, topic); err != nil || resp.Err != nil {
		t.Fatalf("create topic %s: %v %v", topic, err, resp.Err)
	}
	if err := c.Create(ctx, prefix, cfg); err != nil {
		t.Fatalf("create connector %s: %v", prefix, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := c.Delete(ctx, prefix); err != nil {
			t.Errorf("delete connector %s: %v", prefix, err)
		}
	})
	var last error
	waittest.Describe(t, 2*time.Minute, func() bool {
		s, err := c.Status(ctx, prefix)
		if err != nil {
			last = err
			return false
		}
		ok, err := s.Running()
		if err != nil {
			t.Fatalf("connector %s: %v", prefix, err)
		}
		return ok
	}, func() string { return fmt.Sprintf("connector %s to run (last error: %v)", prefix, last) })
	return topic
}

// waitEnds waits until topic holds at least n records.
func waitEnds(t *testing.T, k *kafkatest.Cluster, topic string, n int64, what string) {
	t.Helper()
	waittest.For(t, 3*time.Minute, what, func() bool { return sum(k.Ends(topic)) >= n })
}

// waitMarker reads topic from the start until the marker row's event.
func waitMarker(t *testing.T, k *kafkatest.Cluster, topic string) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(k.Brokers...), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	want := []byte(fmt.Sprintf(`"id":%d}`, marker))
	for {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatalf("the marker row's event in %s: %v", topic, err)
		}
		found := false
		fs.EachRecord(func(r *kgo.Record) { found = found || bytes.Contains(r.Key, want) })
		if found {
			return
		}
	}
}

func sum(m map[int32]int64) int64 {
	var n int64
	for _, v := range m {
		n += v
	}
	return n
}

// ---- the workload ----

// workload writes the source table, keeping which ids are live.
type workload struct {
	t               *testing.T
	pool            *pgxpool.Pool
	rng             *rand.Rand
	live            map[int64]bool
	deleted         []int64
	next            int64
	statements, txs int
	bigText         int // large c_text values written
}

func (w *workload) create(ctx context.Context) {
	var cols []string
	for _, c := range columns {
		cols = append(cols, c.name+" "+c.source)
	}
	sql := fmt.Sprintf(`CREATE TABLE dbz_types (id bigint PRIMARY KEY, created timestamptz NOT NULL, %s)`, strings.Join(cols, ", "))
	if _, err := w.pool.Exec(ctx, sql); err != nil {
		w.t.Fatalf("%s: %v", sql, err)
	}
	// REPLICA IDENTITY DEFAULT (the key only in before) is what makes an
	// update that leaves a TOASTed value alone arrive without it.
}

// tx runs f in one source transaction.
func (w *workload) tx(ctx context.Context, f func(pgx.Tx) error) error {
	w.txs++
	return pgx.BeginFunc(ctx, w.pool, f)
}

func (w *workload) snapshot(ctx context.Context, n int) {
	err := w.tx(ctx, func(tx pgx.Tx) error {
		for range n {
			if err := w.insert(ctx, tx, w.newID()); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		w.t.Fatalf("snapshot rows: %v", err)
	}
}

func (w *workload) newID() int64 { w.next++; return w.next }

func (w *workload) read(t *testing.T, ctx context.Context, exprs []string) map[int64][]string {
	return readRows(t, ctx, w.pool, "dbz_types", exprs)
}

func (w *workload) stats() string {
	return fmt.Sprintf("%d source rows, %d statements in %d transactions, %d large (TOASTed) text values written",
		len(w.live), w.statements, w.txs, w.bigText)
}

func (w *workload) insertMarker(ctx context.Context) {
	if err := w.tx(ctx, func(tx pgx.Tx) error { return w.insert(ctx, tx, marker) }); err != nil {
		w.t.Fatalf("insert the marker row: %v", err)
	}
}

// insert writes a row with random values under id.
func (w *workload) insert(ctx context.Context, tx pgx.Tx, id int64) error {
	names := []string{"id", "created"}
	args := []any{id, w.created()}
	ph := []string{"$1", "$2::timestamptz"}
	for _, c := range columns {
		names = append(names, c.name)
		args = append(args, w.value(c, 0.1))
		ph = append(ph, fmt.Sprintf("$%d::%s", len(args), c.source))
	}
	w.statements++
	w.live[id] = true
	_, err := tx.Exec(ctx, fmt.Sprintf(`INSERT INTO dbz_types (%s) VALUES (%s)`, strings.Join(names, ", "), strings.Join(ph, ", ")), args...)
	return err
}

// update sets the named columns of id to new random values (NULL with
// probability nulls).
func (w *workload) update(ctx context.Context, tx pgx.Tx, id int64, cols []column, nulls float64) error {
	var set []string
	args := []any{id}
	for _, c := range cols {
		args = append(args, w.value(c, nulls))
		set = append(set, fmt.Sprintf("%s = $%d::%s", c.name, len(args), c.source))
	}
	w.statements++
	_, err := tx.Exec(ctx, fmt.Sprintf(`UPDATE dbz_types SET %s WHERE id = $1`, strings.Join(set, ", ")), args...)
	return err
}

// round runs about 40 changes in transactions of one to five statements.
func (w *workload) round(ctx context.Context, r int) error {
	for range 12 {
		n := 1 + w.rng.IntN(5)
		err := w.tx(ctx, func(tx pgx.Tx) error {
			for range n {
				if err := w.change(ctx, tx, r); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// small are the columns an update that leaves c_text alone touches.
var small = []column{columns[1], columns[8], columns[10]}

func (w *workload) change(ctx context.Context, tx pgx.Tx, r int) error {
	ids := w.liveIDs()
	switch p := w.rng.Float64(); {
	case p < 0.15 || len(ids) == 0:
		return w.insert(ctx, tx, w.newID())
	case p < 0.40: // c_text, often TOASTed, left unchanged
		return w.update(ctx, tx, ids[w.rng.IntN(len(ids))], small, 0)
	case p < 0.55: // values set to NULL
		cols := slices.Clone(columns)
		w.rng.Shuffle(len(cols), func(i, j int) { cols[i], cols[j] = cols[j], cols[i] })
		return w.update(ctx, tx, ids[w.rng.IntN(len(ids))], cols[:4], 1)
	case p < 0.70: // every column, c_text included
		return w.update(ctx, tx, ids[w.rng.IntN(len(ids))], columns, 0.1)
	case p < 0.78: // one statement, many rows, c_text unchanged
		w.statements++
		_, err := tx.Exec(ctx, `UPDATE dbz_types SET c_smallint = coalesce(c_smallint, 0) / 2 + $1 WHERE id % 9 = $2`, r, w.rng.IntN(9))
		return err
	case p < 0.90:
		id := ids[w.rng.IntN(len(ids))]
		delete(w.live, id)
		w.deleted = append(w.deleted, id)
		w.statements++
		_, err := tx.Exec(ctx, `DELETE FROM dbz_types WHERE id = $1`, id)
		return err
	default: // re-insert a deleted id, else a new one
		if len(w.deleted) == 0 {
			return w.insert(ctx, tx, w.newID())
		}
		i := w.rng.IntN(len(w.deleted))
		id := w.deleted[i]
		w.deleted = slices.Delete(w.deleted, i, i+1)
		return w.insert(ctx, tx, id)
	}
}

func (w *workload) liveIDs() []int64 {
	ids := make([]int64, 0, len(w.live))
	for id := range w.live {
		if id != marker {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return ids
}

func (w *workload) created() string {
	base := time.Date(2026, 3, 28, 0, 0, 0, 0, time.UTC) // the last Sunday of March: a DST day in Berlin
	return base.Add(time.Duration(w.rng.Int64N(int64(72 * time.Hour)))).Format(time.RFC3339Nano)
}

// value is a random value of c's source type as text, or nil (NULL) with
// probability nulls.
func (w *workload) value(c column, nulls float64) any {
	rng := w.rng
	if rng.Float64() < nulls {
		return nil
	}
	pick := func(vs ...string) string { return vs[rng.IntN(len(vs))] }
	switch c.source {
	case "smallint":
		return strconv.Itoa(rng.IntN(65536) - 32768)
	case "integer":
		return pick(strconv.Itoa(int(rng.Int32())-rng.IntN(1<<30)), "2147483647", "-2147483648", "0")
	case "bigint":
		return pick(strconv.FormatInt(rng.Int64()-rng.Int64N(1<<62), 10), "9223372036854775807", "-9223372036854775808")
	case "numeric(12,3)":
		return fmt.Sprintf("%d.%03d", rng.Int64N(2_000_000_000)-1_000_000_000, rng.IntN(1000))
	case "numeric":
		scale := rng.IntN(12)
		digits := strconv.FormatUint(rng.Uint64()>>rng.IntN(60), 10) + strconv.FormatUint(rng.Uint64N(1e9), 10)
		if scale >= len(digits) {
			scale = len(digits) - 1
		}
		v := digits[:len(digits)-scale]
		if scale > 0 {
			v += "." + digits[len(digits)-scale:]
		}
		return pick("", "-") + v
	case "real":
		return strconv.FormatFloat(float64(float32(rng.NormFloat64()*math.Pow(10, float64(rng.IntN(20)-10)))), 'g', -1, 32)
	case "double precision":
		return pick(strconv.FormatFloat(rng.NormFloat64()*math.Pow(10, float64(rng.IntN(200)-100)), 'g', -1, 64), "0.1", "-0", "1e300")
	case "text":
		if rng.Float64() < 0.4 {
			w.bigText++
			return randomHex(rng, 10000+rng.IntN(5000)) // incompressible enough to be stored out of line
		}
		return pick("héllo wörld ✓", `quote ' and "double" and \ backslash`, "line\nbreak\ttab", "", "__debezium_unavailable_value_not", randomHex(rng, 20))
	case "varchar(40)":
		return pick("Ünïcödé", "a b c", "", randomHex(rng, 40))
	case "char(8)":
		return pick("ab", "abcdefgh", "é", "")
	case "boolean":
		return strconv.FormatBool(rng.IntN(2) == 0)
	case "date":
		return time.Date(1900, 1, 1, 0, 0, 0, 0, time.UTC).AddDate(0, 0, rng.IntN(73000)).Format(time.DateOnly)
	case "time":
		return fmt.Sprintf("%02d:%02d:%02d.%06d", rng.IntN(24), rng.IntN(60), rng.IntN(60), rng.IntN(1_000_000))
	case "timestamp":
		return randomTime(rng).Format("2006-01-02 15:04:05.999999")
	case "timestamptz":
		return randomTime(rng).Format(time.RFC3339Nano)
	case "uuid":
		return fmt.Sprintf("%08x-%04x-4%03x-a%03x-%012x", rng.Uint32(), rng.IntN(1<<16), rng.IntN(1<<12), rng.IntN(1<<12), rng.Int64N(1<<48))
	case "json", "jsonb":
		return pick(`{"a": 1, "b": [true, null, "x"]}`, `[1, 2.5, "three"]`, `"just a string"`, `{"nested": {"deep": {"n": -1e-7}}, "ü": "✓"}`, `42`, `null`, `{}`)
	case "bytea":
		b := make([]byte, rng.IntN(64))
		for i := range b {
			b[i] = byte(rng.IntN(256))
		}
		return fmt.Sprintf(`\x%x`, b)
	}
	panic("no generator for " + c.source)
}

func randomTime(rng *rand.Rand) time.Time {
	lo := time.Date(1950, 1, 1, 0, 0, 0, 0, time.UTC)
	return lo.Add(time.Duration(rng.Int64N(int64(140 * 365 * 24 * time.Hour)))).Truncate(time.Microsecond)
}

func randomHex(rng *rand.Rand, n int) string {
	const digits = "0123456789abcdef"
	b := make([]byte, n)
	for i := range b {
		b[i] = digits[rng.IntN(16)]
	}
	return string(b)
}

// ---- the daemon ----

// run is one configuration of the daemon: its own group and target database.
type run struct {
	name, group, cfg, target string
	pipelines                map[string]config.Pipeline // by flavour
	topics                   []string
}

// daemon runs "consumer run" as child processes, one per run, all killed
// and restarted together.
type daemon struct {
	t    *testing.T
	k    *kafkatest.Cluster
	bin  string
	runs []*run
}

func newDaemon(t *testing.T, k *kafkatest.Cluster, streams []stream, topics map[string]string, suffix string) *daemon {
	t.Helper()
	d := &daemon{t: t, k: k}
	dir := t.TempDir()
	d.bin = filepath.Join(dir, "consumer")
	build := exec.Command("go", "build", "-o", d.bin, "./cmd/consumer")
	build.Dir = filepath.Join("..", "..")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/consumer: %v\n%s", err, out)
	}
	for _, name := range []string{"idemsink"} {
		rn := &run{name: name, group: "dbz-" + name + "-" + suffix, target: pgtest.URL(t), pipelines: map[string]config.Pipeline{}}
		var docs []map[string]any
		for _, s := range streams {
			p, doc := pipeline(s, topics[s.name])
			rn.pipelines[s.name] = p
			rn.topics = append(rn.topics, topics[s.name])
			docs = append(docs, doc)
		}
		b, err := yaml.Marshal(map[string]any{
			"brokers": d.k.Brokers, "group": rn.group, "database_url": rn.target,
			// Static membership: a restarted life gets the partitions back
			// without waiting for the killed one's session to expire.
			"instance_id": "debezium-" + name, "session_timeout": "10s", "rebalance_timeout": "10s",
			"retry_backoff": "50ms", "retry_backoff_max": "500ms", "shutdown_timeout": "10s",
			"pipelines": docs,
		})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := config.Parse(b, func(string) string { return "" }); err != nil {
			t.Fatalf("the daemon's configuration does not load: %v\n%s", err, b)
		}
		rn.cfg = filepath.Join(dir, name+".yaml")
		if err := os.WriteFile(rn.cfg, b, 0o600); err != nil {
			t.Fatal(err)
		}
		d.runs = append(d.runs, rn)
	}
	return d
}

// pipeline is the stream's pipeline: every column the stream carries, with
// its semantic_type when the flavour has no schema envelope.
func pipeline(s stream, topic string) (config.Pipeline, map[string]any) {
	p := config.Pipeline{Name: "dbz_" + s.name, Topics: []string{topic}, Table: "dbz_" + s.name, Key: []string{"id"}}
	cols := []map[string]any{{"name": "id", "type": "bigint"}, {"name": "created", "type": "timestamptz"}}
	p.Columns = []config.Column{{Name: "id", Type: "bigint"}, {Name: "created", Type: "timestamptz"}}
	for _, c := range s.cols {
		if c.name == "created" { // the date column above
			continue
		}
		col := map[string]any{"name": c.name, "type": c.typ(), "nullable": true}
		pc := config.Column{Name: c.name, Type: c.typ(), Nullable: true}
		if h := s.f.hint(c); h != "" {
			col["semantic_type"], pc.SemanticType = h, h
		}
		cols = append(cols, col)
		p.Columns = append(p.Columns, pc)
	}
	doc := map[string]any{
		"name": p.Name, "topics": p.Topics, "table": p.Table, "key": p.Key, "columns": cols,
		"date":     map[string]any{"field": "created", "time_zone": "Europe/Berlin"},
		"format":   "debezium",
		"debezium": map[string]any{"encoding": "json", "version": s.version},
		"deletes":  "apply",
		// Small batches: the kills land between commits, not after one.
		"batch": map[string]any{"max_records": 10, "linger": "20ms"},
	}
	return p, doc
}

// committed is the run's committed offsets summed over its topics. A
// fresh broker answers COORDINATOR_NOT_AVAILABLE until it has created its
// offsets topic, so errors are asked again for a while.
func (d *daemon) committed(rn *run) int64 {
	d.t.Helper()
	var n int64
	var last error
	ok := waittest.Until(time.Minute, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		offs, err := d.k.Admin().FetchOffsets(ctx, rn.group)
		if err == nil {
			err = offs.Error()
		}
		if last = err; err != nil {
			return false
		}
		n = 0
		for _, topic := range rn.topics {
			for _, o := range offs[topic] {
				n += o.At
			}
		}
		return true
	})
	if !ok {
		d.t.Fatalf("fetch the offsets of group %s: %v", rn.group, last)
	}
	return n
}

// lag is how many records of the run's topics its group has not committed.
func (d *daemon) lag(rn *run) int64 {
	var n int64
	for _, topic := range rn.topics {
		n += sum(d.k.Ends(topic))
	}
	return n - d.committed(rn)
}

// life is one run of the daemon's processes.
type life struct {
	procs            []*proc
	committedAtStart int64 // of the first run
}

type proc struct {
	name string
	cmd  *exec.Cmd
	out  *tailBuffer
	done chan struct{}
}

func (d *daemon) start() *life {
	d.t.Helper()
	l := &life{committedAtStart: d.committed(d.runs[0])}
	for _, rn := range d.runs {
		p := &proc{name: rn.name, out: &tailBuffer{}, done: make(chan struct{})}
		p.cmd = exec.Command(d.bin, "run", "-config", rn.cfg)
		p.cmd.Env = append(os.Environ(), "IDEMSINK_DATABASE_URL=", "IDEMSINK_BROKERS=")
		p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
		if err := p.cmd.Start(); err != nil {
			d.t.Fatalf("start the daemon: %v", err)
		}
		go func() { _ = p.cmd.Wait(); close(p.done) }()
		d.t.Cleanup(func() {
			if !p.exited() {
				_ = p.cmd.Process.Signal(syscall.SIGTERM)
				select {
				case <-p.done:
				case <-time.After(15 * time.Second):
					_ = p.cmd.Process.Kill()
					<-p.done
				}
			}
		})
		l.procs = append(l.procs, p)
	}
	return l
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// exited reports whether any process of the life has ended.
func (l *life) exited() bool { return slices.ContainsFunc(l.procs, (*proc).exited) }

// mustRun fails the test if a process ended that the test did not kill.
func (l *life) mustRun(t *testing.T) {
	t.Helper()
	for _, p := range l.procs {
		if p.exited() {
			t.Fatalf("daemon %s exited by itself: %s\n%s", p.name, p.cmd.ProcessState, p.out.tail())
		}
	}
}

// kill SIGKILLs every process and waits for them to be gone.
func (l *life) kill() {
	for _, p := range l.procs {
		_ = p.cmd.Process.Kill()
	}
	for _, p := range l.procs {
		<-p.done
	}
}

// tailBuffer keeps the last 64 KiB a child wrote.
type tailBuffer struct {
	mu  sync.Mutex
	buf []byte
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if len(b.buf) > 64<<10 {
		b.buf = b.buf[len(b.buf)-64<<10:]
	}
	return len(p), nil
}

func (b *tailBuffer) tail() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.buf)
}

// ---- the comparison ----

// report is one run's comparison for one flavour.
type report struct {
	run, flavour     string
	sourceRows, rows int
	clean            int // rows on both sides whose key has no dead letter
	missing, extra   []int64
	stale            int            // rows on both sides with dead letters that differ
	dead             map[string]int // dead-letter reason (numbers elided) → count
	deadIDs          map[int64][]string
	cols             []colReport
}

type colReport struct {
	name, typ string
	how       string // "" or what the target does instead of the source type
	differ    int    // clean rows whose value differs
	dead      int    // dead letters naming the column
	example   string
}

func (c colReport) fails() bool { return c.differ > 0 || c.dead > 0 || c.how != "" }

const null = "\x00NULL"

const leftOut = "not in the pipeline: left out"

// compare reads both tables and counts, per column, the clean rows (present
// on both sides, no dead letter for their key) whose values differ.
func compare(t *testing.T, ctx context.Context, src source, tgt *pgxpool.Pool, s stream, rn *run) *report {
	t.Helper()
	p := rn.pipelines[s.name]
	rep := &report{run: rn.name, flavour: s.f.name, dead: map[string]int{}, deadIDs: map[int64][]string{}}
	srcExprs, tgtExprs := []string{"created::text"}, []string{"created::text"}
	rep.cols = []colReport{{name: "created", typ: "timestamptz"}}
	or := func(verb, name string) string {
		if verb == "" {
			verb = "%s::text"
		}
		return fmt.Sprintf(verb, name)
	}
	if s.cols[0].srcText != "" {
		// created is the first of a foreign source's columns.
		srcExprs, tgtExprs, rep.cols = nil, nil, nil
	}
	for _, c := range s.cols {
		pc := p.Column(c.name)
		cr := colReport{name: c.name, typ: c.source}
		if pc == nil {
			srcExprs, tgtExprs = append(srcExprs, c.name+"::text"), append(tgtExprs, "NULL::text")
			cr.how = leftOut
			rep.cols = append(rep.cols, cr)
			continue
		}
		if src, _, _ := strings.Cut(c.source, " NOT NULL"); pc.Type != c.source {
			src, _, _ = strings.Cut(src, " NULL")
			cr.typ = src + " as " + pc.Type
		}
		srcVerb, tgtVerb := s.f.cmpSource(c), c.cmpTarget
		if srcVerb != c.cmpSource {
			cr.typ += " (source trim_scale)"
		}
		if c.srcText != "" {
			srcVerb, tgtVerb = c.srcText, c.tgtText
		}
		srcExprs, tgtExprs = append(srcExprs, or(srcVerb, c.name)), append(tgtExprs, or(tgtVerb, c.name))
		rep.cols = append(rep.cols, cr)
	}
	source := src.read(t, ctx, srcExprs)
	target := readRows(t, ctx, tgt, p.Table, tgtExprs)
	rep.sourceRows, rep.rows = len(source), len(target)

	rows, err := tgt.Query(ctx, `SELECT key, reason FROM idemsink.dead_letters WHERE pipeline = $1`, p.Name)
	if err != nil {
		t.Fatal(err)
	}
	digits := regexp.MustCompile(`[0-9]+`)
	field := regexp.MustCompile(`field "?([a-z_0-9]+)`)
	for rows.Next() {
		var key []byte
		var reason string
		if err := rows.Scan(&key, &reason); err != nil {
			t.Fatal(err)
		}
		short := digits.ReplaceAllString(reason, "N")
		if len(short) > 160 {
			short = short[:160] + "…"
		}
		rep.dead[short]++
		if id, ok := keyID(key); ok {
			rep.deadIDs[id] = append(rep.deadIDs[id], reason)
		}
		if m := field.FindStringSubmatch(reason); m != nil {
			for i := range rep.cols {
				if rep.cols[i].name == m[1] {
					rep.cols[i].dead++
				}
			}
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}

	for _, id := range sortedIDs(source) {
		tv, ok := target[id]
		if !ok {
			rep.missing = append(rep.missing, id)
			continue
		}
		if len(rep.deadIDs[id]) > 0 {
			if !slices.Equal(source[id], tv) {
				rep.stale++
			}
			continue
		}
		rep.clean++
		for i := range rep.cols {
			c := &rep.cols[i]
			if source[id][i] != tv[i] {
				if c.differ == 0 {
					c.example = fmt.Sprintf("id %d: source %s, target %s", id, show(source[id][i]), show(tv[i]))
				}
				c.differ++
			}
		}
	}
	for _, id := range sortedIDs(target) {
		if _, ok := source[id]; !ok {
			rep.extra = append(rep.extra, id)
		}
	}
	return rep
}

// keyID reads id from a Debezium JSON key, with or without the envelope.
func keyID(key []byte) (int64, bool) {
	var k struct {
		ID      *int64 `json:"id"`
		Payload struct {
			ID *int64 `json:"id"`
		} `json:"payload"`
	}
	if json.Unmarshal(key, &k) != nil {
		return 0, false
	}
	switch {
	case k.ID != nil:
		return *k.ID, true
	case k.Payload.ID != nil:
		return *k.Payload.ID, true
	}
	return 0, false
}

func readRows(t *testing.T, ctx context.Context, pool *pgxpool.Pool, table string, exprs []string) map[int64][]string {
	t.Helper()
	sql := fmt.Sprintf(`SELECT id, %s FROM %s`, strings.Join(exprs, ", "), pgx.Identifier{table}.Sanitize())
	rows, err := pool.Query(ctx, sql)
	if err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	out := map[int64][]string{}
	for rows.Next() {
		vals := make([]*string, len(exprs))
		dest := []any{new(int64)}
		for i := range vals {
			dest = append(dest, &vals[i])
		}
		if err := rows.Scan(dest...); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
		row := make([]string, len(vals))
		for i, v := range vals {
			row[i] = null
			if v != nil {
				row[i] = *v
			}
		}
		out[*dest[0].(*int64)] = row
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return out
}

func sortedIDs(m map[int64][]string) []int64 {
	ids := make([]int64, 0, len(m))
	for id := range m {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

func show(v string) string {
	if v == null {
		return "NULL"
	}
	if len(v) > 60 {
		return fmt.Sprintf("%q…(%d bytes)", v[:40], len(v))
	}
	return strconv.Quote(v)
}

func (r *report) lines() []string {
	at := r.run + "/" + r.flavour
	out := []string{fmt.Sprintf("%s: source %d rows, target %d rows: %d compared (no dead letter for the key), %d missing, %d stale after a dead letter, %d extra; %d dead letters",
		at, r.sourceRows, r.rows, r.clean, len(r.missing), r.stale, len(r.extra), total(r.dead))}
	reasons := make([]string, 0, len(r.dead))
	for reason := range r.dead {
		reasons = append(reasons, reason)
	}
	sort.Slice(reasons, func(i, j int) bool { return r.dead[reasons[i]] > r.dead[reasons[j]] })
	for _, reason := range reasons {
		out = append(out, fmt.Sprintf("%s:   dead letter ×%d: %s", at, r.dead[reason], reason))
	}
	for _, c := range r.cols {
		line := fmt.Sprintf("%s:   %-17s %-26s %4d of %d rows differ, %4d dead letters", at, c.name, c.typ, c.differ, r.clean, c.dead)
		if c.how != "" {
			line += " [" + c.how + "]"
		}
		if k, ok := pending[r.flavour+"/"+c.name]; ok {
			line += " [pending: " + k.why + "]"
		}
		if c.example != "" {
			line += "; e.g. " + c.example
		}
		out = append(out, line)
	}
	return out
}

func total(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// judge fails the test for every failure not pending.
func (r *report) judge(t *testing.T) {
	t.Helper()
	at := r.run + "/" + r.flavour
	for _, c := range r.cols {
		k, isPending := pending[r.flavour+"/"+c.name]
		switch {
		case c.fails() && !isPending:
			t.Errorf("%s: column %s (%s): %d of %d rows differ, %d dead letters, %s; e.g. %s", at, c.name, c.typ, c.differ, r.clean, c.dead, c.how, c.example)
		case isPending && c.fails():
			t.Logf("%s: column %s (%s) fails as pending: %s", at, c.name, c.typ, k.why)
		}
	}
	// A dead letter, a missing or a stale row is excused only by a dead
	// letter naming a pending column of the flavour.
	excused := func(id int64) bool { return slices.ContainsFunc(r.deadIDs[id], r.pendingReason) }
	var unexplained []int64
	for _, id := range r.missing {
		if !excused(id) {
			unexplained = append(unexplained, id)
		}
	}
	if len(unexplained) > 0 {
		t.Errorf("%s: %d source rows missing from the target; e.g. id %d, dead letters %q", at, len(unexplained), unexplained[0], r.deadIDs[unexplained[0]])
	}
	for id, reasons := range r.deadIDs {
		for _, reason := range reasons {
			if !r.pendingReason(reason) {
				t.Errorf("%s: id %d dead-lettered, not for a pending column: %s", at, id, reason)
				break
			}
		}
	}
	if len(r.extra) > 0 {
		t.Errorf("%s: %d rows in the target were deleted from the source, e.g. id %d", at, len(r.extra), r.extra[0])
	}
}

// stillPending fails the test for every pending entry that no stream shows
// failing any more: the fix has come, the entry must go.
func stillPending(t *testing.T, streams []stream, reports []*report) {
	t.Helper()
	for key, k := range pending {
		flav, col, _ := strings.Cut(key, "/")
		if !slices.ContainsFunc(streams, func(s stream) bool { return s.f.name == flav }) {
			continue
		}
		failing := false
		for _, r := range reports {
			for _, c := range r.cols {
				if r.flavour == flav && c.name == col && c.fails() {
					failing = true
				}
			}
		}
		if !failing {
			t.Errorf("%s matches now in every stream (pending: %s): remove it from pending", key, k.why)
		}
	}
}

// pendingReason reports whether a dead letter's reason names a pending
// column of this flavour.
func (r *report) pendingReason(reason string) bool {
	for key := range pending {
		flav, col, _ := strings.Cut(key, "/")
		if flav == r.flavour && (strings.Contains(reason, `field "`+col+`"`) || strings.Contains(reason, "field "+col+":")) {
			return true
		}
	}
	return false
}

func (r *report) summary() string {
	var differ []string
	for _, c := range r.cols {
		if c.fails() {
			differ = append(differ, fmt.Sprintf("%s %d/%d+%ddl", c.name, c.differ, r.clean, c.dead))
		}
	}
	if len(differ) == 0 {
		differ = []string{"none"}
	}
	return fmt.Sprintf("%s/%s: %d source rows, %d compared, %d missing, %d stale, %d extra, %d dead letters; failing columns (differ/compared+dead letters): %s",
		r.run, r.flavour, r.sourceRows, r.clean, len(r.missing), r.stale, len(r.extra), total(r.dead), strings.Join(differ, ", "))
}
