package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/idemsink/idemsink/internal/pgtest"
	"github.com/idemsink/idemsink/internal/record"
)

const dlqDeleteConfig = `group: g
pipelines:
  - name: items
    topics: [items]
    table: items
    key: [sku]
    deletes: %s
    columns:
      - {name: sku, type: text}
      - {name: qty, type: integer}
    date: {field: ts}
`

// A tombstone dead-lettered under deletes: dead_letter keeps failing, with
// its class, while the pipeline dead-letters deletes; once the pipeline
// applies them, a replay applies the delete (keeping its tombstone), counts
// the row it deleted, and marks the dead letter replayed, although no row
// is left to show for it.
func TestDLQReplayTombstone(t *testing.T) {
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "idemsink.yaml")
	writeConfig := func(deletes string) {
		t.Helper()
		if err := os.WriteFile(cfgPath, fmt.Appendf(nil, dlqDeleteConfig, deletes), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	writeConfig("dead_letter")
	env := map[string]string{"IDEMSINK_DATABASE_URL": pgtest.URL(t), "IDEMSINK_BROKERS": "127.0.0.1:9"}
	getenv := func(k string) string { return env[k] }
	ctx := context.Background()
	var out bytes.Buffer
	pool := migrated(t, cfgPath, getenv)
	if _, err := pool.Exec(ctx, `INSERT INTO idemsink.dead_letters (pipeline, topic, partition, kafka_offset, key, value, reason, batch_id)
VALUES ('items', 'items', 0, 6, NULL, '{"sku":"a","qty":1,"ts":"2026-03-01"}', 'a refusal since fixed', gen_random_uuid()),
       ('items', 'items', 0, 7, '{"sku":"a"}', NULL, 'tombstone: the value is null; deletes are dead-lettered (pipeline deletes: dead_letter)', gen_random_uuid())`); err != nil {
		t.Fatal(err)
	}

	out.Reset()
	if err := run(ctx, []string{"dlq", "replay", "-config", cfgPath}, getenv, &out, &out); err != nil {
		t.Fatalf("replay: %v\n%s", err, out.String())
	}
	// The row of offset 6 is inserted; the tombstone keeps failing.
	if !strings.Contains(out.String(), "pipeline items: 1 replayed (1 inserted, 0 updated, 0 deleted, 0 unchanged, 0 stale or superseded), 1 still failing") {
		t.Errorf("replay under deletes: dead_letter printed:\n%s", out.String())
	}
	pending := listJSON(t, getenv, "-config", cfgPath, "-limit", "0")
	if len(pending) != 1 || pending[0].Class != record.ClassTombstone || !strings.Contains(pending[0].Reason, "(pipeline deletes: dead_letter)") {
		t.Fatalf("pending after a replay under deletes: dead_letter: %+v", pending)
	}

	writeConfig("apply")
	out.Reset()
	if err := run(ctx, []string{"dlq", "replay", "-config", cfgPath}, getenv, &out, &out); err != nil {
		t.Fatalf("replay: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "pipeline items: 1 replayed (0 inserted, 0 updated, 1 deleted, 0 unchanged, 0 stale or superseded), 0 still failing") {
		t.Errorf("replay under deletes: apply printed:\n%s", out.String())
	}
	if n := count(t, pool, "SELECT count(*) FROM items WHERE sku = 'a'"); n != 0 {
		t.Errorf("%d rows of the deleted key left", n)
	}
	if pending := listJSON(t, getenv, "-config", cfgPath, "-limit", "0"); len(pending) != 0 {
		t.Errorf("%d dead letters pending after the delete was replayed: %+v", len(pending), pending)
	}
	if n := count(t, pool, "SELECT count(*) FROM idemsink.tombstones WHERE pipeline = 'items' AND src_offset = 7"); n != 1 {
		t.Errorf("%d tombstones kept for the replayed delete, want 1", n)
	}
}
