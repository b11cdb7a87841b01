package sink_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/idemsink/idemsink/internal/batch"
	"github.com/idemsink/idemsink/internal/config"
	"github.com/idemsink/idemsink/internal/record"
)

func toastPipeline(name string) config.Pipeline {
	return config.Pipeline{
		Name: name, Topics: []string{name + "-topic"}, Table: name, Key: []string{"id"},
		Format: "debezium", Deletes: "apply",
		Columns: []config.Column{{Name: "id", Type: "bigint"}, {Name: "body", Type: "text"}, {Name: "blob", Type: "bytea", Nullable: true},
			{Name: "doc", Type: "jsonb", Nullable: true, SemanticType: "io.debezium.data.Json"}, {Name: "qty", Type: "integer"}, {Name: "day", Type: "date", SemanticType: "io.debezium.time.Date"}},
		Date: config.Date{Field: "day"},
	}
}

// toastEvent is a Debezium event without the envelope; body, blob and doc
// are JSON values or "-" for the unavailable placeholder.
func toastEvent(op string, id int, body, blob, doc string, qty, lsn int) string {
	ph := func(v, as string) string {
		if v == "-" {
			return as
		}
		return v
	}
	return fmt.Sprintf(`{"before":null,"after":{"id":%d,"body":%s,"blob":%s,"doc":%s,"qty":%d,"day":20513},"source":{"lsn":%d},"op":%q}`,
		id, ph(body, `"__debezium_unavailable_value"`), ph(blob, `"X19kZWJleml1bV91bmF2YWlsYWJsZV92YWx1ZQ=="`),
		ph(doc, `"__debezium_unavailable_value"`), qty, lsn, op)
}

// An UPDATE that leaves TOAST values alone: the placeholder columns keep
// the stored values, the rest of the row is written under the version
// guard, a redelivery writes nothing, and an event for a row not in the
// target yet is dead-lettered in the batch's transaction.
func TestUnavailableKeepsStoredValue(t *testing.T) {
	t.Parallel()
	f := newFixture(t, toastPipeline("docs"))
	ctx := context.Background()
	row := func(id int) string {
		var s string
		err := f.pool.QueryRow(ctx, `SELECT format('%s|%s|%s|%s|%s', left(body, 6), length(body), encode(blob, 'escape'), doc::text, qty) FROM docs WHERE id = $1`, id).Scan(&s)
		if err != nil {
			return err.Error()
		}
		return s
	}
	big := strings.Repeat("x", 9000)
	b := f.batchOf("docs", 0, toastEvent("c", 1, `"`+big+`"`, `"AQI="`, `"{\"a\": 1}"`, 1, 10), toastEvent("c", 2, `"two"`, `null`, `null`, 1, 11))
	if r := f.apply(b); r.Inserted != 2 {
		t.Fatalf("insert: %+v", r)
	}
	if got, want := row(1), "xxxxxx|9000|\x01\x02|{\"a\": 1}|1"; got != want {
		t.Fatalf("row 1 %q, want %q", got, want)
	}

	// Key 1 unchanged TOAST columns, qty updated; key 3 unknown to the
	// target: dead-lettered, with its reason.
	b = f.batchOf("docs", 2, toastEvent("u", 1, "-", "-", "-", 2, 20), toastEvent("u", 3, "-", `null`, `{}`, 5, 21))
	r := f.apply(b)
	if r.Updated != 1 || r.Inserted != 0 || r.DeadLettered != 1 || r.DeadClasses[record.ClassEvent] != 1 {
		t.Errorf("update: %+v; want 1 updated, 1 dead-lettered (debezium-event)", r)
	}
	if got, want := row(1), "xxxxxx|9000|\x01\x02|{\"a\": 1}|2"; got != want {
		t.Errorf("row 1 after the TOAST update %q, want %q", got, want)
	}
	if n := f.count(`SELECT count(*) FROM docs WHERE id = 3`); n != 0 {
		t.Errorf("row 3 inserted with its placeholder columns")
	}
	var reason string
	if err := f.pool.QueryRow(ctx, `SELECT reason FROM idemsink.dead_letters WHERE kafka_offset = 3`).Scan(&reason); err != nil {
		t.Fatal(err)
	}
	if want := `debezium-event: column(s) body unavailable (Debezium's placeholder for an unchanged TOAST value) and the row is not in "public"."docs" to keep them from: the event cannot be completed`; reason != want {
		t.Errorf("reason %q, want %q", reason, want)
	}

	// The same event again under a new group: nothing is written (the
	// stored values stand in for the placeholders in the change test).
	x := f.count(`SELECT xmin::text::bigint FROM docs WHERE id = 1`)
	r, err := f.s.Apply(ctx, batch.Of(b), commitAs(commitFor(b, 1), "again"))
	if err != nil || r.Updated != 0 || r.Unchanged != 1 {
		t.Errorf("redelivery: %+v, %v; want 1 unchanged", r, err)
	}
	if f.count(`SELECT xmin::text::bigint FROM docs WHERE id = 1`) != x {
		t.Errorf("redelivery rewrote row 1")
	}
	// An older event (lsn 15) never writes, placeholders or not.
	b = f.batchOf("docs", 4, toastEvent("u", 1, `"old"`, "-", "-", 9, 15))
	if r := f.apply(b); r.Stale != 1 || r.Updated != 0 {
		t.Errorf("older: %+v; want 1 stale", r)
	}
	// A newer event that changes body writes it, and keeps the rest.
	b = f.batchOf("docs", 5, toastEvent("u", 1, `"new"`, "-", "-", 3, 30))
	if r := f.apply(b); r.Updated != 1 {
		t.Errorf("newer: %+v; want 1 updated", r)
	}
	if got, want := row(1), "new|3|\x01\x02|{\"a\": 1}|3"; got != want {
		t.Errorf("row 1 %q, want %q", got, want)
	}
}

// In one batch, an insert then an update that leaves TOAST values alone:
// the update takes them from the insert, not from the (empty) target.
func TestUnavailableFilledFromBatch(t *testing.T) {
	t.Parallel()
	f := newFixture(t, toastPipeline("docs2"))
	b := f.batchOf("docs2", 0, toastEvent("c", 1, `"body"`, `"AQI="`, `[1]`, 1, 10), toastEvent("u", 1, "-", "-", "-", 2, 20))
	if r := f.apply(b); r.Inserted != 1 || r.DeadLettered != 0 {
		t.Fatalf("%+v; want 1 inserted", r)
	}
	if n := f.count(`SELECT count(*) FROM docs2 WHERE body = 'body' AND blob = '\x0102' AND doc = '[1]' AND qty = 2 AND _version = 20`); n != 1 {
		t.Errorf("row not the update with the insert's TOAST values")
	}
}

// Row by row (a batch the database refused): the same rules.
func TestUnavailableRowByRow(t *testing.T) {
	t.Parallel()
	f := newFixture(t, toastPipeline("docs3"))
	ctx := context.Background()
	if _, err := f.pool.Exec(ctx, "ALTER TABLE docs3 ADD CONSTRAINT qty_small CHECK (qty < 100)"); err != nil {
		t.Fatal(err)
	}
	f.apply(f.batchOf("docs3", 0, toastEvent("c", 1, `"body"`, `"AQI="`, `[1]`, 1, 10)))
	b := f.batchOf("docs3", 1, toastEvent("u", 1, "-", "-", "-", 2, 20), toastEvent("u", 2, "-", `null`, `null`, 1, 21), toastEvent("c", 3, `"b"`, `null`, `null`, 100, 22))
	r := f.apply(b)
	if r.Updated != 1 || r.DeadLettered != 2 || r.DeadClasses[record.ClassEvent] != 1 || r.DeadClasses[record.ClassRefused] != 1 {
		t.Errorf("%+v; want 1 updated, 1 incomplete and 1 refused dead-lettered", r)
	}
	if n := f.count(`SELECT count(*) FROM docs3 WHERE id = 1 AND body = 'body' AND blob = '\x0102' AND doc = '[1]' AND qty = 2`); n != 1 {
		t.Errorf("row 1 lost its stored values")
	}
}

// The Debezium types through COPY into their columns, read back as
// PostgreSQL has them; a redelivery is unchanged (the staged values equal
// the stored ones).
func TestDebeziumTypesStored(t *testing.T) {
	t.Parallel()
	p := config.Pipeline{
		Name: "types", Topics: []string{"types-topic"}, Table: "types", Key: []string{"id"}, Format: "debezium",
		Columns: []config.Column{{Name: "id", Type: "bigint"},
			{Name: "ts", Type: "timestamp(6)", SemanticType: "io.debezium.time.MicroTimestamp"},
			{Name: "t", Type: "time", SemanticType: "io.debezium.time.MicroTime"},
			{Name: "d", Type: "date", SemanticType: "io.debezium.time.Date"},
			{Name: "r", Type: "real"}, {Name: "b", Type: "bytea"},
			{Name: "j", Type: "jsonb", SemanticType: "io.debezium.data.Json"},
			{Name: "n", Type: "numeric", SemanticType: "io.debezium.data.VariableScaleDecimal"}},
		Date: config.Date{Field: "ts", TimeZone: "Asia/Kolkata"},
	}
	f := newFixture(t, p)
	ev := `{"after":{"id":1,"ts":1647056689380642,"t":13489380642,"d":19063,"r":1.1,"b":"AAEC/w==","j":"{\"a\": [1, 2.50]}","n":{"scale":1,"value":"BfBs1+nIdYhcXg=="}},"source":{"lsn":5},"op":"r"}`
	if r := f.apply(f.batchOf("types", 0, ev)); r.Inserted != 1 {
		t.Fatalf("%+v", r)
	}
	var got string
	if err := f.pool.QueryRow(context.Background(), `SELECT format('%s|%s|%s|%s|%s|%s|%s', ts, t, d, r, encode(b, 'hex'), j, n) FROM types`).Scan(&got); err != nil {
		t.Fatal(err)
	}
	if want := `2022-03-12 03:44:49.380642|03:44:49.380642|2022-03-12|1.1|000102ff|{"a": [1, 2.50]}|2804689398636178206627.0`; got != want {
		t.Errorf("stored %s, want %s", got, want)
	}
	b := f.batchOf("types", 0, ev)
	if r, err := f.s.Apply(context.Background(), batch.Of(b), commitAs(commitFor(b, 1), "again")); err != nil || r.Unchanged != 1 {
		t.Errorf("redelivery %+v, %v; want unchanged", r, err)
	}
}
