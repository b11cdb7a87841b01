package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/idemsink/idemsink/internal/kafkatest"
	"github.com/idemsink/idemsink/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func TestRunCommands(t *testing.T) {
	for _, tc := range []struct {
		name    string
		args    []string
		env     map[string]string
		wantOut string
		wantErr string
	}{
		{name: "no command", args: nil, wantErr: "no command given"},
		{name: "unknown command", args: []string{"frobnicate"}, wantErr: `unknown command "frobnicate"`},
		{name: "version", args: []string{"version"}, wantOut: "idemsink "},
		{name: "help", args: []string{"help"}, wantOut: "commands:"},
		{name: "missing config", args: []string{"run", "-config", "testdata/nope.yaml"}, wantErr: "read config: open testdata/nope.yaml: no such file"},
		{name: "unknown key", args: []string{"run", "-config", "testdata/unknown.yaml"}, wantErr: "field databse_url not found"},
		{name: "invalid config names every field", args: []string{"migrate", "-config", "testdata/bad.yaml"},
			wantErr: `brokers[0]: "localhost" is not host:port` + "\n" +
				`pipelines[0].table: "orders; DROP TABLE users" must match`},
		{name: "bad fault spec", args: []string{"run", "-config", "testdata/ok.yaml"}, env: map[string]string{"IDEMSINK_FAULT": "after-lunch=1"},
			wantErr: `unknown fault point "after-lunch"`},
		{name: "bad log level", args: []string{"run", "-log-level", "loud"}, wantErr: "-log-level"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			getenv := func(k string) string { return tc.env[k] }
			err := run(context.Background(), tc.args, getenv, &stdout, &stderr)
			if tc.wantErr == "" && err != nil {
				t.Fatalf("run: %v", err)
			}
			if tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("run: %v, want error containing %q", err, tc.wantErr)
			}
			if !strings.Contains(stdout.String(), tc.wantOut) {
				t.Errorf("stdout %q, want it to contain %q", stdout.String(), tc.wantOut)
			}
		})
	}
}

// migrate and offsets against a real database and Kafka, configured from a
// file with the DSN and brokers coming from the environment.
func TestMigrateAndOffsets(t *testing.T) {
	k := kafkatest.New(t)
	topic := k.Topic("orders", 2)
	cfgPath := filepath.Join(t.TempDir(), "idemsink.yaml")
	cfg := `group: cli-test
pipelines:
  - name: orders
    topics: [` + topic + `]
    table: orders
    key: [id]
    columns:
      - {name: id, type: bigint}
      - {name: note, type: text, nullable: true}
    date: {field: ts}
`
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"IDEMSINK_DATABASE_URL": pgtest.URL(t), "IDEMSINK_BROKERS": strings.Join(k.Brokers, ",")}
	getenv := func(k string) string { return env[k] }
	var out bytes.Buffer
	if err := run(context.Background(), []string{"migrate", "-config", cfgPath}, getenv, &out, &out); err != nil {
		t.Fatalf("migrate: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "ledger schema at version 3; 1 target table(s) ready") {
		t.Errorf("migrate printed %q", out.String())
	}
	out.Reset()
	if err := run(context.Background(), []string{"offsets", "-config", cfgPath}, getenv, &out, &out); err != nil {
		t.Fatalf("offsets: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "LEDGER NEXT") || strings.Count(out.String(), topic) != 2 {
		t.Errorf("offsets printed %q, want a header and one line per partition", out.String())
	}

	// A replay resets both Kafka's commits and the ledger.
	pool, err := pgxpool.New(context.Background(), env["IDEMSINK_DATABASE_URL"])
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()

	// verify: a Kafka commit past the ledger is reported.
	if _, err := pool.Exec(context.Background(), `INSERT INTO idemsink.offsets (group_id, topic, partition, applied_offset, generation, member_id)
VALUES ('cli-test', $1, 0, 1, 3, 'm')`, topic); err != nil {
		t.Fatal(err)
	}
	for range 5 {
		k.Produce(&kgo.Record{Topic: topic, Partition: 0, Value: []byte("{}")})
	}
	adm := k.Admin()
	var ahead kadm.Offsets
	ahead.AddOffset(topic, 0, 2, -1)
	if _, err := adm.CommitOffsets(context.Background(), "cli-test", ahead); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if err := run(context.Background(), []string{"verify", "-config", cfgPath}, getenv, &out, &out); err != nil {
		t.Fatalf("verify with Kafka at the ledger: %v\n%s", err, out.String())
	}
	ahead = kadm.Offsets{}
	ahead.AddOffset(topic, 0, 4, -1)
	if _, err := adm.CommitOffsets(context.Background(), "cli-test", ahead); err != nil {
		t.Fatal(err)
	}
	err = run(context.Background(), []string{"verify", "-config", cfgPath}, getenv, &out, &out)
	if err == nil || !strings.Contains(err.Error(), "Kafka committed 4, ledger applied only up to 1") {
		t.Errorf("verify with Kafka past the ledger: %v", err)
	}
	if _, err := pool.Exec(context.Background(), "DELETE FROM idemsink.offsets"); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(context.Background(), `INSERT INTO idemsink.offsets (group_id, topic, partition, applied_offset, generation, member_id)
VALUES ('cli-test', $1, 0, 41, 3, 'm'), ('cli-test', $1, 1, 9, 3, 'm')`, topic); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		k.Produce(&kgo.Record{Topic: topic, Partition: int32(i % 2), Value: []byte("{}")})
	}
	var offs kadm.Offsets
	offs.AddOffset(topic, 0, 3, -1)
	if _, err := adm.CommitOffsets(context.Background(), "cli-test", offs); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if err := run(context.Background(), []string{"replay", "-config", cfgPath}, getenv, &out, &out); err != nil {
		t.Fatalf("replay: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "2 ledger partition(s) forgotten") {
		t.Errorf("replay printed %q", out.String())
	}
	if c := k.Committed("cli-test", topic); c[0] != 0 {
		t.Errorf("Kafka committed %d after replay, want 0", c[0])
	}
	var n int
	if err := pool.QueryRow(context.Background(), "SELECT count(*) FROM idemsink.offsets").Scan(&n); err != nil || n != 0 {
		t.Errorf("%d ledger rows after replay (%v), want 0", n, err)
	}
}
