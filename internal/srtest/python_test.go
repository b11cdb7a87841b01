package srtest_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/idemsink/idemsink/internal/config"
	"github.com/idemsink/idemsink/internal/consume"
	"github.com/idemsink/idemsink/internal/kafkatest"
	"github.com/idemsink/idemsink/internal/metrics"
)

// python returns the interpreter of the producer's venv, installing it
// (scripts/python-producer, from PyPI) when needed.
func python(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("python3"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("python3 is not installed; CI runs the Python producer")
		}
		t.Skip("python3 is not installed")
	}
	script, err := filepath.Abs(filepath.Join("..", "..", "scripts", "python-producer"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, script)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s: %v\n%s", script, err, stderr.String())
	}
	return strings.TrimSpace(string(out))
}

// Confluent's Python serializers write the records (Avro with decimal and
// timestamp-micros; Protobuf with a message index of [1], a well-known
// import and the schema registered as a base64 descriptor), the daemon's
// consumer applies them, tombstone included.
func TestConfluentPythonProducer(t *testing.T) {
	t.Parallel()
	py := python(t)
	h := newHarness(t)
	var pipelines []config.Pipeline
	for _, format := range []string{"avro", "protobuf"} {
		topic := h.k.Topic("py-"+format, 1)
		p := ordersPipeline("py_"+format, topic, format)
		pipelines = append(pipelines, p)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		out, err := exec.CommandContext(ctx, py, filepath.Join("..", "..", "scripts", "produce", "produce.py"),
			"--bootstrap", h.k.Brokers[0], "--registry", h.reg.URL(), "--topic", topic, "--format", format).CombinedOutput()
		cancel()
		if err != nil {
			t.Fatalf("produce %s: %v\n%s", format, err, out)
		}
		t.Logf("%s", bytes.TrimSpace(out))
	}
	res := h.run(h.config(kafkatest.Name(t, "g"), pipelines...), consume.Options{}, metrics.New(nil))
	// A tombstone and the rows of its key are in one transaction: it
	// supersedes them there, nothing is deleted from the table.
	if res.Deleted != 0 || res.DeadLettered != 0 {
		t.Errorf("totals %+v: want 0 deleted (superseded in the transaction), none dead-lettered", res)
	}
	if n := h.query(`SELECT count(*) FROM idemsink.tombstones`); n != "2" {
		t.Errorf("%s tombstones kept, want 2", n)
	}
	for _, p := range pipelines {
		got := h.query(fmt.Sprintf(`SELECT string_agg(format('%%s:%%s:%%s:%%s', id, amount, qty, at = '2026-03-01T10:00:00.123456Z'), ' ' ORDER BY id) FROM %s`, p.Table))
		if want := "1:1.25:1:t 2:2.25:20:t 4:4.25:4:t 5:5.25:5:t"; got != want {
			t.Logf("dead letters: %s", h.query(`SELECT string_agg(DISTINCT reason, '; ') FROM idemsink.dead_letters`))
			t.Errorf("%s: rows %s, want %s", p.Name, got, want)
		}
	}
}
