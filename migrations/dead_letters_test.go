package migrations_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/idemsink/idemsink/internal/pgtest"
	"github.com/idemsink/idemsink/migrations"
)

// Migration 2 renames dead_letters' "offset" in place: a dead letter
// written under version 1 is still there, under kafka_offset, and going
// back down keeps it too.
func TestDeadLetterOffsetRenameKeepsRows(t *testing.T) {
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, pgtest.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if v, err := migrations.Migrate(ctx, conn, 1); err != nil || v != 1 {
		t.Fatalf("down to 1: version %d, %v", v, err)
	}
	if _, err := conn.Exec(ctx, `INSERT INTO idemsink.dead_letters (pipeline, topic, partition, "offset", value, reason, batch_id)
VALUES ('p', 't', 3, 42, '\xff'::bytea, 'old reason', gen_random_uuid())`); err != nil {
		t.Fatal(err)
	}
	if v, err := migrations.Migrate(ctx, conn, 2); err != nil || v != 2 {
		t.Fatalf("up to 2: version %d, %v", v, err)
	}
	var off int64
	var reason string
	var replays int
	if err := conn.QueryRow(ctx, `SELECT kafka_offset, reason, replays FROM idemsink.dead_letters WHERE replayed_at IS NULL`).Scan(&off, &reason, &replays); err != nil {
		t.Fatal(err)
	}
	if off != 42 || reason != "old reason" || replays != 0 {
		t.Errorf("after the rename: offset %d, reason %q, replays %d", off, reason, replays)
	}
	if v, err := migrations.Migrate(ctx, conn, 1); err != nil || v != 1 {
		t.Fatalf("down to 1 again: version %d, %v", v, err)
	}
	if err := conn.QueryRow(ctx, `SELECT "offset" FROM idemsink.dead_letters`).Scan(&off); err != nil || off != 42 {
		t.Errorf("after going down: offset %d, %v", off, err)
	}
}
