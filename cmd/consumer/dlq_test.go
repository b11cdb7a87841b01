package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/idemsink/idemsink/internal/config"
	"github.com/idemsink/idemsink/internal/kafkatest"
	"github.com/idemsink/idemsink/internal/pgtest"
	"github.com/idemsink/idemsink/internal/record"
	"github.com/idemsink/idemsink/internal/sink"
	"github.com/idemsink/idemsink/internal/waittest"
)

// badInput is the corpus of the bad-input test: one record per line, each
// with the class it must be dead-lettered with. fits says whether it
// applies once price is widened to numeric(14,2) and status to
// varchar(20).
var badInput = []struct {
	name, class string
	key         string
	value       *string // nil: a tombstone
	fits        bool
}{
	{"empty value", record.ClassMalformed, "", s(``), false},
	{"lone brace", record.ClassMalformed, "", s(`{`), false},
	{"trailing comma", record.ClassMalformed, "", s(`{"sku":"x",}`), false},
	{"trailing data", record.ClassMalformed, "", s(good("t1", 1) + ` trailing`), false},
	{"not JSON", record.ClassMalformed, "", s(`sku=1`), false},
	{"single quotes", record.ClassMalformed, "", s(`{'sku':'a'}`), false},
	{"two objects", record.ClassMalformed, "", s(good("t2", 1) + good("t3", 1)), false},
	{"array", record.ClassNotObject, "", s(`[{"sku":"a"}]`), false},
	{"string", record.ClassNotObject, "", s(`"sku"`), false},
	{"number", record.ClassNotObject, "", s(`42`), false},
	{"null", record.ClassNotObject, "", s(`null`), false},
	{"boolean", record.ClassNotObject, "", s(`true`), false},
	{"tombstone", record.ClassTombstone, "k", nil, false},
	{"oversize value", record.ClassOversize, "", s(`{"sku":"big","ts":"2026-03-01","qty":1,"price":1,"status":"ok","cc":"DE","pad":"` + strings.Repeat("x", 5000) + `"}`), false},
	{"oversize key", record.ClassOversize, strings.Repeat("k", 5000), s(good("bigkey", 1)), false},
	{"invalid UTF-8 in the key", record.ClassText, "", s("{\"sku\":\"A\xffB\",\"ts\":\"2026-03-01\",\"qty\":1,\"price\":1,\"status\":\"ok\",\"cc\":\"DE\"}"), false},
	{"other invalid UTF-8 in the key", record.ClassText, "", s("{\"sku\":\"A\xfeB\",\"ts\":\"2026-03-01\",\"qty\":1,\"price\":1,\"status\":\"ok\",\"cc\":\"DE\"}"), false},
	{"lone surrogate in the key", record.ClassText, "", s(`{"sku":"A\ud800B","ts":"2026-03-01","qty":1,"price":1,"status":"ok","cc":"DE"}`), false},
	{"lone low surrogate", record.ClassText, "", s(`{"sku":"lo","ts":"2026-03-01","qty":1,"price":1,"status":"\udc00","cc":"DE"}`), false},
	{"surrogate before a letter", record.ClassText, "", s(`{"sku":"hi","ts":"2026-03-01","qty":1,"price":1,"status":"\ud83d\u0041","cc":"DE"}`), false},
	{"invalid UTF-8 nested", record.ClassText, "", s("{\"sku\":\"nest\",\"ts\":\"2026-03-01\",\"qty\":1,\"price\":1,\"status\":\"ok\",\"cc\":\"DE\",\"meta\":{\"note\":\"K\xf6ln\"}}"), false},
	{"invalid UTF-8 in a member name", record.ClassText, "", s("{\"sku\":\"mn\",\"ts\":\"2026-03-01\",\"qty\":1,\"price\":1,\"status\":\"ok\",\"cc\":\"DE\",\"x\xff\":1}"), false},
	{"invalid UTF-8 in an unread field", record.ClassText, "", s("{\"sku\":\"ur\",\"ts\":\"2026-03-01\",\"qty\":1,\"price\":1,\"status\":\"ok\",\"cc\":\"DE\",\"other\":\"\xc3\"}"), false},
	{"NUL in text", record.ClassText, "", s(`{"sku":"nul","ts":"2026-03-01","qty":1,"price":1,"status":"o\u0000k","cc":"DE"}`), false},
	{"NUL in jsonb", record.ClassText, "", s(`{"sku":"nulj","ts":"2026-03-01","qty":1,"price":1,"status":"ok","cc":"DE","doc":{"a":"\u0000"}}`), false},
	{"missing key", record.ClassMissing, "", s(`{"ts":"2026-03-01","qty":1,"price":1,"status":"ok","cc":"DE"}`), false},
	{"null key", record.ClassMissing, "", s(`{"sku":null,"ts":"2026-03-01","qty":1,"price":1,"status":"ok","cc":"DE"}`), false},
	{"missing date", record.ClassMissing, "", s(`{"sku":"nodate","qty":1,"price":1,"status":"ok","cc":"DE"}`), false},
	{"missing qty", record.ClassMissing, "", s(`{"sku":"noqty","ts":"2026-03-01","price":1,"status":"ok","cc":"DE"}`), false},
	{"qty words", record.ClassType, "", s(`{"sku":"w1","ts":"2026-03-01","qty":"abc","price":1,"status":"ok","cc":"DE"}`), false},
	{"qty fraction", record.ClassType, "", s(`{"sku":"w2","ts":"2026-03-01","qty":1.5,"price":1,"status":"ok","cc":"DE"}`), false},
	{"key is a number", record.ClassType, "", s(`{"sku":123,"ts":"2026-03-01","qty":1,"price":1,"status":"ok","cc":"DE"}`), false},
	{"date words", record.ClassType, "", s(`{"sku":"w3","ts":"yesterday","qty":1,"price":1,"status":"ok","cc":"DE"}`), false},
	{"date Feb 30", record.ClassType, "", s(`{"sku":"w4","ts":"2026-02-30","qty":1,"price":1,"status":"ok","cc":"DE"}`), false},
	{"timestamp words", record.ClassType, "", s(`{"sku":"w5","ts":"2026-03-01","qty":1,"price":1,"status":"ok","cc":"DE","at":"noon"}`), false},
	{"price with a comma", record.ClassType, "", s(`{"sku":"w6","ts":"2026-03-01","qty":1,"price":"1,5","status":"ok","cc":"DE"}`), false},
	{"price boolean", record.ClassType, "", s(`{"sku":"w7","ts":"2026-03-01","qty":1,"price":true,"status":"ok","cc":"DE"}`), false},
	{"country number", record.ClassType, "", s(`{"sku":"w8","ts":"2026-03-01","qty":1,"price":1,"status":"ok","cc":49}`), false},
	{"price overflows numeric(8,2)", record.ClassRange, "", s(`{"sku":"r1","ts":"2026-03-01","qty":1,"price":123456789.5,"status":"ok","cc":"DE"}`), true},
	{"price scale", record.ClassRange, "", s(`{"sku":"r2","ts":"2026-03-01","qty":1,"price":1.005,"status":"ok","cc":"DE"}`), false},
	{"price 1e400", record.ClassRange, "", s(`{"sku":"r3","ts":"2026-03-01","qty":1,"price":1e400,"status":"ok","cc":"DE"}`), false},
	{"status over varchar(8)", record.ClassRange, "", s(`{"sku":"r4","ts":"2026-03-01","qty":1,"price":1,"status":"delivered!","cc":"DE"}`), true},
	{"status far over varchar(8)", record.ClassRange, "", s(`{"sku":"r5","ts":"2026-03-01","qty":1,"price":1,"status":"` + strings.Repeat("z", 30) + `","cc":"DE"}`), false},
	{"qty over integer", record.ClassRange, "", s(`{"sku":"r6","ts":"2026-03-01","qty":3000000000,"price":1,"status":"ok","cc":"DE"}`), false},
	{"country over char(2)", record.ClassRange, "", s(`{"sku":"r7","ts":"2026-03-01","qty":1,"price":1,"status":"ok","cc":"DEU"}`), false},
	{"timestamp precision", record.ClassRange, "", s(`{"sku":"r8","ts":"2026-03-01","qty":1,"price":1,"status":"ok","cc":"DE","at":"2026-03-01T10:00:00.0001Z"}`), false},
	{"timestamp beyond PostgreSQL", record.ClassRange, "", s(`{"sku":"r9","ts":"2026-03-01","qty":1,"price":1,"status":"ok","cc":"DE","at":9223372036854775807}`), false},
	{"negative qty (CHECK)", record.ClassRefused, "", s(`{"sku":"c1","ts":"2026-03-01","qty":-1,"price":1,"status":"ok","cc":"DE"}`), false},
}

func s(v string) *string { return &v }

func good(sku string, qty int) string {
	return fmt.Sprintf(`{"sku":%q,"ts":"2026-03-01","qty":%d,"price":"12.50","status":"ok","cc":"DE ","at":"2026-03-01T10:00:00.123Z","meta":{"note":"Grüße"},"doc":{"n":%d}}`, sku, qty, qty)
}

const dlqConfig = `group: %s
pipelines:
  - name: items
    topics: [%s]
    table: items
    key: [sku]
    max_record_bytes: 4KiB
    batch: {max_records: 50, linger: 20ms}
    columns:
      - {name: sku, type: text}
      - {name: qty, type: integer}
      - {name: price, type: "%s"}
      - {name: status, type: "%s"}
      - {name: cc, type: char(2)}
      - {name: at, type: timestamptz(3), nullable: true}
      - {name: note, type: text, field: meta.note, nullable: true}
      - {name: doc, type: jsonb, nullable: true}
    date: {field: ts}
`

// TestBadInputCorpus mixes every class of bad input into good traffic on
// several partitions of a running daemon: each bad record is dead-lettered
// with its class, every good one is applied, the ledger reaches the end of
// every partition and the daemon runs throughout. Then the operator widens
// two columns and replays: exactly the records that now fit apply.
func TestBadInputCorpus(t *testing.T) {
	if len(badInput) < 40 {
		t.Fatalf("%d bad records; the corpus must hold at least 40", len(badInput))
	}
	k := kafkatest.New(t)
	const parts = 3
	topic := k.Topic("items", parts)
	group := kafkatest.Name(t, "group")
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "idemsink.yaml")
	writeConfig := func(price, status string) {
		t.Helper()
		if err := os.WriteFile(cfgPath, fmt.Appendf(nil, dlqConfig, group, topic, price, status), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	writeConfig("numeric(8,2)", "varchar(8)")
	env := map[string]string{"IDEMSINK_DATABASE_URL": pgtest.URL(t), "IDEMSINK_BROKERS": strings.Join(k.Brokers, ",")}
	getenv := func(k string) string { return env[k] }
	ctx := context.Background()
	var out bytes.Buffer
	pool := migrated(t, cfgPath, getenv)
	// What the decoder cannot know: a rule only the database holds.
	if _, err := pool.Exec(ctx, "ALTER TABLE items ADD CONSTRAINT qty_not_negative CHECK (qty >= 0)"); err != nil {
		t.Fatal(err)
	}

	// Good and bad records interleaved, round robin over the partitions.
	type where struct {
		partition int32
		offset    int64
	}
	var recs []*kgo.Record
	next := map[int32]int64{}
	wantBad := map[where]int{}
	goodKeys := map[string]int{}
	add := func(key string, value *string) where {
		p := int32(len(recs) % parts)
		r := &kgo.Record{Topic: topic, Partition: p}
		if key != "" {
			r.Key = []byte(key)
		}
		if value != nil {
			r.Value = []byte(*value)
		}
		recs = append(recs, r)
		w := where{p, next[p]}
		next[p]++
		return w
	}
	for i, b := range badInput {
		for j := range 4 {
			sku := fmt.Sprintf("good-%d-%d", i, j)
			goodKeys[sku] = i + j
			add("", s(good(sku, i+j)))
		}
		wantBad[add(b.key, b.value)] = i
	}
	k.Produce(recs...)

	dctx, stop := context.WithCancel(ctx)
	var logs syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- run(dctx, []string{"run", "-config", cfgPath, "-log-format", "json"}, getenv, &logs, &logs)
	}()
	ends := map[record.TP]int64{}
	for p, n := range next {
		ends[record.TP{Topic: topic, Partition: p}] = n
	}
	ledger := sink.New(pool, &config.Config{}, sink.Options{})
	waittest.Describe(t, 60*time.Second, func() bool {
		select {
		case err := <-done:
			t.Fatalf("the daemon stopped before reaching the end: %v\n%s", err, logs.String())
		default:
		}
		ok, err := ledger.CaughtUp(ctx, group, ends)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}, func() string { return "the ledger to reach the end of every partition\n" + logs.String() })
	stop()
	if err := <-done; err != nil {
		t.Fatalf("daemon: %v\n%s", err, logs.String())
	}

	// Every good record applied, with its values.
	var n, qtySum int
	if err := pool.QueryRow(ctx, `SELECT count(*), coalesce(sum(qty), 0) FROM items WHERE sku LIKE 'good-%' AND price = 12.50 AND cc = 'DE'
AND note = 'Grüße' AND at = '2026-03-01T10:00:00.123Z' AND (doc->>'n')::int = qty`).Scan(&n, &qtySum); err != nil {
		t.Fatal(err)
	}
	wantSum := 0
	for _, q := range goodKeys {
		wantSum += q
	}
	if n != len(goodKeys) || qtySum != wantSum {
		t.Errorf("%d good rows with qty sum %d, want %d with %d", n, qtySum, len(goodKeys), wantSum)
	}
	if n := count(t, pool, "SELECT count(*) FROM items"); n != len(goodKeys) {
		t.Errorf("%d rows in items, want only the %d good ones", n, len(goodKeys))
	}

	// Every bad record dead-lettered once, at its position, with its class.
	dls := listJSON(t, getenv, "-config", cfgPath, "-limit", "0")
	if len(dls) != len(badInput) {
		t.Errorf("%d dead letters, want %d", len(dls), len(badInput))
	}
	for _, d := range dls {
		i, ok := wantBad[where{d.Partition, d.Offset}]
		if !ok {
			t.Errorf("dead letter at %d/%d is not a bad record: %s", d.Partition, d.Offset, d.Reason)
			continue
		}
		b := badInput[i]
		if d.Class != b.class || !strings.HasPrefix(d.Reason, b.class+": ") {
			t.Errorf("%s: class %q, reason %q; want class %s", b.name, d.Class, d.Reason, b.class)
		}
		if strings.Contains(d.Reason, "json: cannot") || strings.Contains(d.Reason, "Go value") || strings.Contains(d.Reason, "EOF") || strings.Contains(d.Reason, "interface {}") || strings.Contains(d.Reason, "strconv.") {
			t.Errorf("%s: reason %q leaks Go internals", b.name, d.Reason)
		}
		switch {
		case b.class == record.ClassOversize:
			if d.ValueBytes > record.KeptBytes || !strings.Contains(d.Reason, "over max_record_bytes 4096") {
				t.Errorf("%s: kept %d bytes, reason %q", b.name, d.ValueBytes, d.Reason)
			}
		case b.value == nil:
			if d.ValueText != nil || d.ValueBase64 != "" {
				t.Errorf("%s: a tombstone's value is %v", b.name, d.ValueText)
			}
		case d.ValueBase64 != base64Of(*b.value):
			t.Errorf("%s: dead letter holds other bytes than the record", b.name)
		}
	}
	// The ledger commits in Kafka too: the group is at the end.
	for p, c := range k.Committed(group, topic) {
		if c != next[p] {
			t.Errorf("partition %d committed at %d, want %d", p, c, next[p])
		}
	}
	// Filters: a class, a partition, a window.
	if got := listJSON(t, getenv, "-config", cfgPath, "-reason", "OUT-OF-RANGE"); len(got) != countClass(record.ClassRange) {
		t.Errorf("-reason out-of-range lists %d, want %d", len(got), countClass(record.ClassRange))
	}
	if got := listJSON(t, getenv, "-config", cfgPath, "-partition", "1", "-topic", topic, "-limit", "0"); len(got) == 0 || slices.ContainsFunc(got, func(d deadLetter) bool { return d.Partition != 1 }) {
		t.Errorf("-partition 1 lists %d, some of another partition", len(got))
	}
	if got := listJSON(t, getenv, "-config", cfgPath, "-since", "1h", "-until", time.Now().Add(time.Minute).Format(time.RFC3339)); len(got) != len(badInput) {
		t.Errorf("-since 1h lists %d, want %d", len(got), len(badInput))
	}
	if got := listJSON(t, getenv, "-config", cfgPath, "-until", "2000-01-01"); len(got) != 0 {
		t.Errorf("-until 2000-01-01 lists %d, want none", len(got))
	}
	out.Reset()
	if err := run(ctx, []string{"dlq", "list", "-config", cfgPath, "-pipeline", "items", "-limit", "3"}, getenv, &out, &out); err != nil {
		t.Fatal(err)
	}
	if lines := strings.Split(strings.TrimSpace(out.String()), "\n"); len(lines) != 5 || !strings.HasPrefix(lines[0], "PIPELINE") {
		t.Errorf("table:\n%s", out.String())
	}

	// Widen the two columns, in the table and the configuration, and
	// replay: exactly the records that now fit apply. A second replay
	// finds nothing new to apply.
	if _, err := pool.Exec(ctx, "ALTER TABLE items ALTER COLUMN price TYPE numeric(14,2), ALTER COLUMN status TYPE varchar(20)"); err != nil {
		t.Fatal(err)
	}
	writeConfig("numeric(14,2)", "varchar(20)")
	var fits []string
	for _, b := range badInput {
		if b.fits {
			fits = append(fits, b.name)
		}
	}
	for attempt := 1; attempt <= 2; attempt++ {
		out.Reset()
		if err := run(ctx, []string{"dlq", "replay", "-config", cfgPath}, getenv, &out, &out); err != nil {
			t.Fatalf("replay %d: %v\n%s", attempt, err, out.String())
		}
		replayed := len(fits)
		if attempt == 2 {
			replayed = 0
		}
		want := fmt.Sprintf("pipeline items: %d replayed (%d inserted, 0 updated, 0 deleted, 0 unchanged, 0 stale or superseded), %d still failing, 2 oversize kept only in part (not replayable)",
			replayed, replayed, len(badInput)-len(fits)-2)
		if !strings.Contains(out.String(), want) {
			t.Errorf("replay %d printed:\n%s\nwant a line %s", attempt, out.String(), want)
		}
	}
	if n := count(t, pool, "SELECT count(*) FROM items WHERE sku IN ('r1', 'r4')"); n != 2 {
		t.Errorf("%d of the 2 records that now fit are in items", n)
	}
	if n := count(t, pool, "SELECT count(*) FROM items"); n != len(goodKeys)+len(fits) {
		t.Errorf("%d rows after the replay, want %d", n, len(goodKeys)+len(fits))
	}
	pending := listJSON(t, getenv, "-config", cfgPath, "-limit", "0")
	if len(pending) != len(badInput)-len(fits) {
		t.Errorf("%d dead letters pending after the replay, want %d", len(pending), len(badInput)-len(fits))
	}
	for _, d := range pending {
		b := badInput[wantBad[where{d.Partition, d.Offset}]]
		wantReplays := 2
		if b.class == record.ClassOversize {
			wantReplays = 0
		}
		if d.Class != b.class || d.Replays != wantReplays || d.ReplayedAt != nil {
			t.Errorf("%s after replays: class %s, %d replays, replayed at %v; want %s, %d, none", b.name, d.Class, d.Replays, d.ReplayedAt, b.class, wantReplays)
		}
	}
	all := listJSON(t, getenv, "-config", cfgPath, "-limit", "0", "-all")
	replayedNow := slices.DeleteFunc(all, func(d deadLetter) bool { return d.ReplayedAt == nil })
	if len(replayedNow) != len(fits) {
		t.Errorf("-all shows %d replayed, want %d", len(replayedNow), len(fits))
	}
	for _, d := range replayedNow {
		if b := badInput[wantBad[where{d.Partition, d.Offset}]]; !b.fits || d.Replays != 1 {
			t.Errorf("%s marked replayed after %d replays", b.name, d.Replays)
		}
	}
}

func countClass(class string) int {
	n := 0
	for _, b := range badInput {
		if b.class == class {
			n++
		}
	}
	return n
}

func base64Of(v string) string { return base64.StdEncoding.EncodeToString([]byte(v)) }

func listJSON(t *testing.T, getenv func(string) string, args ...string) []deadLetter {
	t.Helper()
	var out, errOut bytes.Buffer
	if err := run(context.Background(), append([]string{"dlq", "list", "-json"}, args...), getenv, &out, &errOut); err != nil {
		t.Fatalf("dlq list: %v\n%s", err, errOut.String())
	}
	var dls []deadLetter
	sc := bufio.NewScanner(&out)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var d deadLetter
		if err := json.Unmarshal(sc.Bytes(), &d); err != nil {
			t.Fatalf("dlq list -json line %q: %v", sc.Text(), err)
		}
		dls = append(dls, d)
	}
	return dls
}

func count(t *testing.T, pool *pgxpool.Pool, q string) int {
	t.Helper()
	var n int
	if err := pool.QueryRow(context.Background(), q).Scan(&n); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return n
}

// Each command answers -h with its usage and no error.
func TestCommandHelp(t *testing.T) {
	for _, args := range [][]string{{"run", "-h"}, {"migrate", "-h"}, {"offsets", "--help"}, {"replay", "-h"}, {"verify", "-h"},
		{"dlq", "-h"}, {"dlq", "list", "-h"}, {"dlq", "replay", "-h"}} {
		var out, errOut bytes.Buffer
		if err := run(context.Background(), args, func(string) string { return "" }, &out, &errOut); err != nil {
			t.Errorf("%v: %v", args, err)
		}
		if !strings.Contains(out.String()+errOut.String(), "-config") && !strings.Contains(out.String(), "usage: consumer dlq") {
			t.Errorf("%v printed no usage:\n%s%s", args, out.String(), errOut.String())
		}
	}
}

// migrated runs consumer migrate on the configuration and opens a pool on
// its database, closed when the test ends.
func migrated(t *testing.T, cfgPath string, getenv func(string) string) *pgxpool.Pool {
	t.Helper()
	var out bytes.Buffer
	if err := run(context.Background(), []string{"migrate", "-config", cfgPath}, getenv, &out, &out); err != nil {
		t.Fatalf("migrate: %v\n%s", err, out.String())
	}
	pool, err := pgxpool.New(context.Background(), getenv("IDEMSINK_DATABASE_URL"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}
