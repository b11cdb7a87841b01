package fault_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/idemsink/idemsink/internal/fault"
	"github.com/idemsink/idemsink/internal/kafkatest"
	"github.com/idemsink/idemsink/internal/pgtest"
	"github.com/idemsink/idemsink/internal/waittest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

const records = 20

// The daemon as released (no build tags) passes every fault point with
// IDEMSINK_FAULT asking for a crash at each of them with certainty: it
// applies every record, keeps running and stops cleanly on SIGTERM. The
// same daemon built with -tags faultinject dies at the first point, which
// shows that the run does reach the points the release build ignores.
func TestReleaseBinaryIgnoresFaultEnv(t *testing.T) {
	spec := strings.Join(fault.Points, "=1,") + "=1"
	cases := []struct {
		name  string
		tags  []string
		crash bool
	}{
		{name: "release", crash: false},
		{name: "faultinject", tags: []string{"-tags", "faultinject"}, crash: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			bin := build(t, tc.tags...)
			k := kafkatest.New(t)
			topic := k.Topic("orders", 1)
			url := pgtest.URL(t)
			for i := range records {
				k.Produce(&kgo.Record{Topic: topic, Key: fmt.Appendf(nil, "%d", i),
					Value: fmt.Appendf(nil, `{"id":%d,"ts":"2026-11-26T10:00:00Z"}`, i)})
			}
			cfg := filepath.Join(t.TempDir(), "idemsink.yaml")
			writeConfig(t, cfg, kafkatest.Name(t, "g"), topic)

			var out syncBuffer
			cmd := exec.Command(bin, "run", "-config", cfg)
			cmd.Env = append(os.Environ(), fault.Env+"="+spec,
				"IDEMSINK_DATABASE_URL="+url, "IDEMSINK_BROKERS="+strings.Join(k.Brokers, ","))
			cmd.Stdout, cmd.Stderr = &out, &out
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			t.Cleanup(func() {
				if cmd.ProcessState == nil {
					_ = cmd.Process.Kill()
					<-done
				}
			})

			if tc.crash {
				select {
				case err := <-done:
					var ee *exec.ExitError
					if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
						t.Fatalf("faultinject build ended with %v, want SIGKILL\n%s", err, out.String())
					}
					if !strings.Contains(out.String(), "fault: crashing at ") {
						t.Fatalf("faultinject build was killed without reaching a fault point:\n%s", out.String())
					}
				case <-time.After(2 * time.Minute):
					t.Fatalf("faultinject build did not crash within 2m:\n%s", out.String())
				}
				return
			}

			waitRows(t, url, done, &out)
			if !strings.Contains(out.String(), "fault: "+fault.Env+" ignored") {
				t.Errorf("release build did not say it ignores %s:\n%s", fault.Env, out.String())
			}
			if strings.Contains(out.String(), "fault: crashing") {
				t.Errorf("release build reached a fault point:\n%s", out.String())
			}
			if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("release build exited with %v after SIGTERM\n%s", err, out.String())
				}
			case <-time.After(time.Minute):
				t.Fatalf("release build did not stop within 1m of SIGTERM\n%s", out.String())
			}
		})
	}
}

// build compiles cmd/consumer with the given go build flags.
func build(t *testing.T, flags ...string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "consumer")
	args := append([]string{"build", "-o", bin}, flags...)
	cmd := exec.Command("go", append(args, "./cmd/consumer")...)
	cmd.Dir = filepath.Join("..", "..")
	// Only the flags given: a -tags in the caller's GOFLAGS would turn the
	// release build into the faultinject one.
	cmd.Env = append(os.Environ(), "GOFLAGS=")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(cmd.Args[1:], " "), err, out)
	}
	return bin
}

func writeConfig(t *testing.T, path, group, topic string) {
	t.Helper()
	doc := fmt.Sprintf(`group: %s
start_offset: earliest
shutdown_timeout: 10s
pipelines:
  - name: orders
    topics: [%s]
    table: orders
    key: [id]
    columns:
      - {name: id, type: bigint}
    date: {field: ts}
    batch: {max_records: 5, linger: 20ms}
`, group, topic)
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
}

// waitRows waits until the table holds every record, failing at once if
// the daemon exits.
func waitRows(t *testing.T, url string, done <-chan error, out *syncBuffer) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var n int
	waittest.Describe(t, 2*time.Minute, func() bool {
		select {
		case err := <-done:
			t.Fatalf("release build exited (%v) before applying every record:\n%s", err, out.String())
		default:
		}
		// The table appears when the daemon has migrated.
		err := conn.QueryRow(ctx, `SELECT count(*) FROM orders`).Scan(&n)
		return err == nil && n == records
	}, func() string { return fmt.Sprintf("%d of %d rows:\n%s", n, records, out.String()) })
}

// syncBuffer collects a child's output, written from exec's copy goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
