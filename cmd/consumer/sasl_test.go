package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/idemsink/idemsink/internal/pgtest"
)

// The admin commands connect with the daemon's client recipe: to a broker
// that requires SASL/SCRAM, with the configured credentials, and not
// without them.
func TestCommandsWithSASL(t *testing.T) {
	fc, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.EnableSASL(), kfake.Superuser("SCRAM-SHA-256", "idemsink", "s3cret"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fc.Close)
	cl, err := kgo.NewClient(kgo.SeedBrokers(fc.ListenAddrs()...), kgo.ProducerLinger(0), kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.SASL(scram.Auth{User: "idemsink", Pass: "s3cret"}.AsSha256Mechanism()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := kadm.NewClient(cl).CreateTopic(ctx, 2, 1, nil, "orders"); err != nil {
		t.Fatal(err)
	}
	if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "orders", Partition: 1,
		Value: []byte(`{"id": 1, "ts": "2026-11-02T10:00:00Z", "v": 1}`)}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(t.TempDir(), "idemsink.yaml")
	if err := os.WriteFile(cfgPath, []byte(`group: sasl
sasl: {mechanism: scram-sha-256, user: idemsink}
pipelines:
  - name: orders
    topics: [orders]
    table: orders
    key: [id]
    columns: [{name: id, type: bigint}, {name: ts, type: timestamptz}, {name: v, type: bigint}]
    date: {field: ts}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"IDEMSINK_DATABASE_URL": pgtest.URL(t), "IDEMSINK_BROKERS": strings.Join(fc.ListenAddrs(), ","),
		"IDEMSINK_SASL_PASSWORD": "s3cret"}
	cmd := func(args ...string) (string, error) {
		var out, errOut strings.Builder
		cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		defer cancel()
		err := run(cctx, args, func(k string) string { return env[k] }, &out, &errOut)
		return out.String(), err
	}
	for _, args := range [][]string{
		{"migrate", "-config", cfgPath},
		{"offsets", "-config", cfgPath},
		{"offsets", "reset", "-config", cfgPath, "--to-date", "2026-11-02"},
		{"offsets", "reset", "-config", cfgPath, "--to-latest", "--execute"},
		{"replay", "-config", cfgPath, "--from", "2026-11-02"},
		{"verify", "-config", cfgPath, "--date", "2026-11-02"},
	} {
		if out, err := cmd(args...); err != nil {
			t.Errorf("%s with SASL: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	out, _ := cmd("offsets", "-config", cfgPath)
	if !strings.Contains(out, "orders  1          1") {
		t.Errorf("offsets with SASL printed\n%s\nwant partition 1 committed at 1 after the reset", out)
	}
	env["IDEMSINK_SASL_PASSWORD"] = "wrong"
	if _, err := cmd("offsets", "-config", cfgPath); err == nil {
		t.Error("offsets with a wrong SASL password succeeded")
	}
}
