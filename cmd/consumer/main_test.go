package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/idemsink/idemsink/internal/kafkatest"
	"github.com/idemsink/idemsink/internal/pgtest"
	"github.com/idemsink/idemsink/internal/waittest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func TestRunCommands(t *testing.T) {
	for _, tc := range []struct {
		name       string
		args       []string
		env        map[string]string
		wantOut    string
		wantStderr string
		wantErr    string
	}{
		{name: "no command", args: nil, wantErr: "no command given"},
		{name: "unknown command", args: []string{"frobnicate"}, wantErr: `unknown command "frobnicate"`},
		{name: "version", args: []string{"version"}, wantOut: "idemsink "},
		{name: "help", args: []string{"help"}, wantOut: "offsets reset"},
		{name: "missing config", args: []string{"run", "-config", "testdata/nope.yaml"}, wantErr: "read config: open testdata/nope.yaml: no such file"},
		{name: "unknown key", args: []string{"run", "-config", "testdata/unknown.yaml"}, wantErr: "field databse_url not found"},
		{name: "invalid config names every field", args: []string{"migrate", "-config", "testdata/bad.yaml"},
			wantErr: `brokers[0]: "localhost" is not host:port` + "\n" +
				`pipelines[0].table: "orders; DROP TABLE users" must match`},
		{name: "bad log level", args: []string{"run", "-log-level", "loud"}, wantErr: "-log-level"},
		{name: "-h", args: []string{"offsets", "-h"}, wantStderr: "consumer offsets -config idemsink.yaml --json"},
		{name: "reset -h", args: []string{"offsets", "reset", "-h"}, wantStderr: "examples:\n  consumer offsets reset -config idemsink.yaml --to-date"},
		{name: "replay -h", args: []string{"replay", "--help"}, wantStderr: "--from 2026-11-01 --to 2026-11-07"},
		{name: "verify -h", args: []string{"verify", "-h"}, wantStderr: "--date 2026-11-02"},
		{name: "unknown flag", args: []string{"offsets", "--frobnicate"}, wantErr: "flag provided but not defined: -frobnicate"},
		{name: "stray argument", args: []string{"offsets", "-config", "testdata/ok.yaml", "now"}, wantErr: `offsets: unexpected argument "now"`},
		{name: "reset needs a mode", args: []string{"offsets", "reset", "-config", "testdata/ok.yaml"}, wantErr: "give exactly one of --to-earliest"},
		{name: "reset takes one mode", args: []string{"offsets", "reset", "-config", "testdata/ok.yaml", "--to-earliest", "--shift-by", "-5"},
			wantErr: "give exactly one of --to-earliest, --to-latest, --to-offset, --shift-by, --to-datetime, --by-duration, --to-date (got 2)"},
		{name: "reset bad datetime", args: []string{"offsets", "reset", "-config", "testdata/ok.yaml", "--to-datetime", "yesterday"}, wantErr: `--to-datetime "yesterday" is not RFC 3339`},
		{name: "reset bad date", args: []string{"offsets", "reset", "-config", "testdata/ok.yaml", "--to-date", "2026-13-01"}, wantErr: `--to-date "2026-13-01" is not YYYY-MM-DD`},
		{name: "reset bad topic", args: []string{"offsets", "reset", "-config", "testdata/ok.yaml", "--to-earliest", "--topic", "orders:x"}, wantErr: `partition "x" is not a number`},
		{name: "replay needs from", args: []string{"replay", "-config", "testdata/ok.yaml"}, wantErr: "replay: --from is required"},
		{name: "replay backwards", args: []string{"replay", "-config", "testdata/ok.yaml", "--from", "2026-11-05", "--to", "2026-11-01"}, wantErr: "--to 2026-11-01 is before --from 2026-11-05"},
		{name: "verify date and from", args: []string{"verify", "-config", "testdata/ok.yaml", "--date", "2026-11-05", "--from", "2026-11-01"}, wantErr: "give --date or --from/--to, not both"},
		{name: "verify unknown pipeline", args: []string{"verify", "-config", "testdata/ok.yaml", "--date", "2026-11-05", "--pipeline", "nope"}, wantErr: `no pipeline named "nope"`},
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
			if !strings.Contains(stderr.String(), tc.wantStderr) {
				t.Errorf("stderr %q, want it to contain %q", stderr.String(), tc.wantStderr)
			}
		})
	}
}

// offsets lists every partition in order, in a table and as JSON, with
// the ledger beside Kafka; verify's ledger check reports a Kafka commit
// past the ledger.
func TestOffsetsAndLedgerCheck(t *testing.T) {
	f := newFixture(t, kafkatest.New(t), 12, "")
	f.produceDay(1, 2)
	f.drain()
	out, err := f.run("offsets")
	if err != nil {
		t.Fatalf("offsets: %v", err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 13 || !strings.HasPrefix(lines[0], "TOPIC") || !strings.Contains(lines[0], "LEDGER NEXT") {
		t.Fatalf("offsets printed %q, want a header and 12 partitions", out)
	}
	for i, l := range lines[1:] {
		// partition, committed, ledger next, start, end, lag
		want := []string{f.topic, strconv.Itoa(i), "2", "2", "0", "2", "0"}
		if got := strings.Fields(l)[:7]; strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("line %d: %q, want it to start with %q", i+1, l, want)
		}
	}
	out, err = f.run("offsets", "--json")
	if err != nil {
		t.Fatalf("offsets --json: %v", err)
	}
	var ps []position
	if err := json.Unmarshal([]byte(out), &ps); err != nil {
		t.Fatalf("offsets --json printed %q: %v", out, err)
	}
	for i, p := range ps {
		if p.Partition != int32(i) || p.Committed != 2 || p.LedgerNext != 2 || p.End != 2 || p.Lag != 0 || p.LastBatch == nil {
			t.Errorf("partition %d: %+v", i, p)
		}
	}

	// A running member is named as the owner of every partition.
	m := f.start()
	waittest.For(t, 30*time.Second, "the member to own every partition", func() bool {
		out, err := f.run("offsets", "--json")
		if err != nil {
			t.Fatalf("offsets --json: %v", err)
		}
		ps = nil
		if err := json.Unmarshal([]byte(out), &ps); err != nil {
			t.Fatal(err)
		}
		for _, p := range ps {
			if !strings.Contains(p.Member, "@") {
				return false
			}
		}
		return true
	})
	if err := m.stop(); err != nil {
		t.Fatal(err)
	}

	// verify: no commit past the ledger, then one.
	out, err = f.run("verify")
	if err != nil || !strings.Contains(out, "12 partition(s) checked; no Kafka commit passes the ledger") {
		t.Fatalf("verify: %v\n%s", err, out)
	}
	var ahead kadm.Offsets
	ahead.AddOffset(f.topic, 3, 4, -1)
	if _, err := f.k.Admin().CommitOffsets(context.Background(), f.group, ahead); err != nil {
		t.Fatal(err)
	}
	out, err = f.run("verify")
	if err == nil || err.Error() != "verify: 1 partition(s) committed past the ledger" ||
		!strings.Contains(out, f.topic+"/3: Kafka committed 4, ledger applied only up to 1") {
		t.Errorf("verify with Kafka past the ledger: %v\n%s", err, out)
	}
}
