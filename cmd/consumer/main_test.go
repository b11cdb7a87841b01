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
		// lines is how many lines the error has: 1 unless a config file
		// has several faults, each on its line.
		lines int
	}{
		{name: "no command", args: nil, wantErr: "no command given"},
		{name: "unknown command", args: []string{"frobnicate"}, wantErr: `unknown command "frobnicate"`},
		{name: "version", args: []string{"version"}, wantOut: "idemsink "},
		{name: "help", args: []string{"help"}, wantOut: "offsets reset"},
		{name: "missing config", args: []string{"run", "-config", "testdata/nope.yaml"}, wantErr: "read config: open testdata/nope.yaml: no such file"},
		{name: "unknown key", args: []string{"run", "-config", "testdata/unknown.yaml"}, wantErr: "field databse_url not found", lines: 2},
		{name: "invalid config names every field", args: []string{"migrate", "-config", "testdata/bad.yaml"},
			wantErr: `brokers[0]: "localhost" is not host:port` + "\n" +
				`pipelines[0].table: "orders; DROP TABLE users" must match`, lines: 3},
		{name: "bad log level", args: []string{"run", "-log-level", "loud"}, wantErr: "-log-level"},
		{name: "-h", args: []string{"offsets", "-h"}, wantOut: "consumer offsets -config idemsink.yaml --json"},
		{name: "reset -h", args: []string{"offsets", "reset", "-h"}, wantOut: "examples:\n  consumer offsets reset -config idemsink.yaml --to-date"},
		{name: "reset --help", args: []string{"offsets", "reset", "--help"}, wantOut: "--shift-by      counts from where the group resumes"},
		{name: "replay -h", args: []string{"replay", "--help"}, wantOut: "--from 2026-11-01 --to 2026-11-07"},
		{name: "verify -h", args: []string{"verify", "-h"}, wantOut: "--date 2026-11-02"},
		{name: "run -h", args: []string{"run", "-h"}, wantOut: "consumer run -config /etc/idemsink.yaml"},
		{name: "migrate -h", args: []string{"migrate", "-h"}, wantOut: "consumer migrate -config idemsink.yaml"},
		{name: "demo -h", args: []string{"demo", "-h"}, wantOut: "usage: consumer demo [flags]"},
		{name: "dlq list -h", args: []string{"dlq", "list", "-h"}, wantOut: "-limit"},
		{name: "dlq replay --help", args: []string{"dlq", "replay", "--help"}, wantOut: "usage: consumer dlq replay [flags]"},
		{name: "unknown flag", args: []string{"offsets", "--frobnicate"}, wantErr: "offsets: flag provided but not defined: -frobnicate (consumer offsets -h for help)"},
		{name: "bad shift", args: []string{"offsets", "reset", "--shift-by", "abc"},
			wantErr: `offsets reset: invalid value "abc" for flag -shift-by: parse error (consumer offsets reset -h for help)`},
		{name: "bad partition", args: []string{"offsets", "reset", "--topic", "t:-1"},
			wantErr: `offsets reset: invalid value "t:-1" for flag -topic: partition "-1" is not a partition number (0 or more) (consumer offsets reset -h for help)`},
		{name: "dlq bad partition", args: []string{"dlq", "list", "-partition", "x"},
			wantErr: `dlq list: invalid value "x" for flag -partition: parse error (consumer dlq list -h for help)`},
		{name: "reset bad duration", args: []string{"offsets", "reset", "-config", "testdata/ok.yaml", "--by-duration", "PT1X"},
			wantErr: `offsets reset: --by-duration "PT1X" is not an ISO 8601 duration as Kafka takes it`},
		{name: "reset months", args: []string{"offsets", "reset", "-config", "testdata/ok.yaml", "--by-duration", "P1M"},
			wantErr: `no years, months or weeks`},
		{name: "reset negative duration", args: []string{"offsets", "reset", "-config", "testdata/ok.yaml", "--by-duration", "-PT1H"},
			wantErr: `offsets reset: --by-duration -PT1H is not positive (a time in the future: use --to-latest)`},
		{name: "reset dry run and execute", args: []string{"offsets", "reset", "-config", "testdata/ok.yaml", "--to-earliest", "--dry-run", "--execute"},
			wantErr: "offsets reset: --dry-run and --execute conflict: give one"},
		{name: "reset all topics and topic", args: []string{"offsets", "reset", "-config", "testdata/ok.yaml", "--to-earliest", "--all-topics", "--topic", "orders"},
			wantErr: "offsets reset: --all-topics and --topic conflict: give one"},
		{name: "stray argument", args: []string{"offsets", "-config", "testdata/ok.yaml", "now"}, wantErr: `offsets: unexpected argument "now"`},
		{name: "reset needs a mode", args: []string{"offsets", "reset", "-config", "testdata/ok.yaml"}, wantErr: "give exactly one of --to-earliest"},
		{name: "reset takes one mode", args: []string{"offsets", "reset", "-config", "testdata/ok.yaml", "--to-earliest", "--shift-by", "-5"},
			wantErr: "give exactly one of --to-earliest, --to-latest, --to-current, --to-offset, --shift-by, --to-datetime, --by-duration, --to-date (got 2)"},
		{name: "reset bad datetime", args: []string{"offsets", "reset", "-config", "testdata/ok.yaml", "--to-datetime", "yesterday"}, wantErr: `--to-datetime "yesterday" is neither RFC 3339`},
		{name: "reset hhmm zone", args: []string{"offsets", "reset", "-config", "testdata/ok.yaml", "--to-datetime", "2026-11-29T12:00:00.000+0530"},
			wantErr: `write the offset as +05:30`},
		{name: "reset bad date", args: []string{"offsets", "reset", "-config", "testdata/ok.yaml", "--to-date", "2026-13-01"}, wantErr: `--to-date "2026-13-01" is not YYYY-MM-DD`},
		{name: "reset bad topic", args: []string{"offsets", "reset", "-config", "testdata/ok.yaml", "--to-earliest", "--topic", "orders:x"}, wantErr: `partition "x" is not a partition number`},
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
			// A bad argument is one line, returned once for main to
			// print: nothing of it on stderr, no usage dump.
			if err != nil && (strings.Count(err.Error(), "\n")+1 != max(tc.lines, 1) ||
				strings.Contains(stderr.String(), "flags:") || strings.Contains(stderr.String(), err.Error())) {
				t.Errorf("error %q with stderr %q: want one line, not repeated", err, stderr.String())
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
