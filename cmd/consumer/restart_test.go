package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/idemsink/idemsink/internal/kafkatest"
	"github.com/idemsink/idemsink/internal/pgtest"
	"github.com/idemsink/idemsink/internal/waittest"
)

// BenchmarkRestartToFirstBatch measures how long a restarted daemon takes
// to apply a batch on every partition again, with dynamic and with static
// group membership (instance_id), after a crash (SIGKILL) and after a
// clean stop (SIGTERM). It runs the real binary against the broker of
// KAFKA_BROKERS, with the default 45 s session timeout:
//
//	eval "$(KAFKA_PORT=19300 KAFKA_STATE=/tmp/idemsink-kafka-i11 scripts/kafka start)"
//	KAFKA_BROKERS=$KAFKA_BROKERS go test ./cmd/consumer -run '^$' -bench RestartToFirstBatch -benchtime 1x
//
// The figure is s/restart: from the new process's start until the ledger
// shows a batch applied past the restart on every partition.
func BenchmarkRestartToFirstBatch(b *testing.B) {
	if os.Getenv("KAFKA_BROKERS") == "" {
		b.Skip("needs a real broker (KAFKA_BROKERS): the figure is the broker's group protocol")
	}
	bin := filepath.Join(b.TempDir(), "consumer")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		b.Fatalf("build: %v\n%s", err, out)
	}
	for _, tc := range []struct {
		name   string
		static bool
		sig    syscall.Signal
	}{
		{"dynamic/SIGKILL", false, syscall.SIGKILL},
		{"static/SIGKILL", true, syscall.SIGKILL},
		{"dynamic/SIGTERM", false, syscall.SIGTERM},
		{"static/SIGTERM", true, syscall.SIGTERM},
	} {
		b.Run(tc.name, func(b *testing.B) {
			var total time.Duration
			for range b.N {
				total += restartOnce(b, bin, tc.static, tc.sig)
			}
			b.ReportMetric(total.Seconds()/float64(b.N), "s/restart")
		})
	}
}

func restartOnce(b *testing.B, bin string, static bool, sig syscall.Signal) time.Duration {
	const parts = 4
	k := kafkatest.New(b)
	topic := k.Topic("restart", parts)
	group := kafkatest.Name(b, "group")
	cfg := fmt.Sprintf(`group: %s
pipelines:
  - name: items
    topics: [%s]
    table: items
    key: [id]
    batch: {linger: 50ms}
    columns:
      - {name: id, type: bigint}
    date: {field: ts}
`, group, topic)
	if static {
		cfg = "instance_id: bench-0\n" + cfg
	}
	dir := b.TempDir()
	cfgPath := filepath.Join(dir, "idemsink.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		b.Fatal(err)
	}
	dsn := pgtest.URL(b)
	pool, err := pgxpool.New(context.Background(), dsn)
	if err != nil {
		b.Fatal(err)
	}
	defer pool.Close()
	start := func(name string) *exec.Cmd {
		cmd := exec.Command(bin, "run", "-config", cfgPath)
		cmd.Env = append(os.Environ(), "IDEMSINK_DATABASE_URL="+dsn, "IDEMSINK_BROKERS="+strings.Join(k.Brokers, ","))
		log, err := os.Create(filepath.Join(dir, name+".log"))
		if err != nil {
			b.Fatal(err)
		}
		cmd.Stdout, cmd.Stderr = log, log
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		return cmd
	}
	produce := func(id int) {
		for p := range int32(parts) {
			k.Produce(&kgo.Record{Topic: topic, Partition: p, Value: fmt.Appendf(nil, `{"id":%d,"ts":"2026-03-01"}`, id*parts+int(p))})
		}
	}
	waitApplied := func(offset int64, name string) {
		ok := waittest.Until(3*time.Minute, func() bool {
			var n int
			if err := pool.QueryRow(context.Background(), `SELECT count(*) FROM idemsink.offsets WHERE group_id = $1 AND topic = $2 AND applied_offset >= $3`,
				group, topic, offset).Scan(&n); err != nil && !strings.Contains(err.Error(), "does not exist") {
				b.Fatal(err)
			}
			return n == parts
		})
		if !ok {
			log, _ := os.ReadFile(filepath.Join(dir, name+".log"))
			b.Fatalf("offset %d not applied on every partition within 3 minutes\n%s", offset, log)
		}
	}
	first := start("first")
	produce(0)
	waitApplied(0, "first")
	if err := first.Process.Signal(sig); err != nil {
		b.Fatal(err)
	}
	_ = first.Wait()

	b.ResetTimer()
	t0 := time.Now()
	second := start("second")
	produce(1)
	waitApplied(1, "second")
	took := time.Since(t0)
	b.StopTimer()
	_ = second.Process.Signal(syscall.SIGTERM)
	_ = second.Wait()
	return took
}
