//go:build realkafka

// Built only with -tags realkafka (scripts/test-kafka): it needs the real
// broker and Kafka's jars.

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/idemsink/idemsink/internal/kafkatest"
)

// On the real broker (make test-kafka), each of Kafka's spellings gives
// the plan kafka-consumer-groups --reset-offsets --dry-run gives for the
// same group: the same new offset per partition. The group has applied
// what it has committed, so where it resumes is Kafka's commit for both.
func TestResetMatchesKafkasTool(t *testing.T) {
	brokers := os.Getenv("KAFKA_BROKERS")
	if brokers == "" {
		t.Fatal("KAFKA_BROKERS is not set: this test compares with Kafka's own tool on the real broker of make test-kafka (scripts/test-kafka)")
	}
	f := newFixture(t, kafkatest.New(t), 2, "")
	for d := 1; d <= 3; d++ {
		f.produceDay(d, 5) // day d at offsets 5(d-1).., hours 1..5 of the day
	}
	f.drain()
	f.produceDay(4, 2) // offsets 15, 16: never applied

	// A duration back to 02:30 on day 2, spelt in days, hours, minutes
	// and seconds: the first record after it is day 2's third, offset 7.
	// The seconds that pass between the two runs do not cross an hour.
	back := time.Since(day(2).Add(150 * time.Minute)).Truncate(time.Second)
	iso := fmt.Sprintf("P%dDT%dH%dM%dS", int(back.Hours())/24, int(back.Hours())%24, int(back.Minutes())%60, int(back.Seconds())%60)
	all := []string{"--topic", f.topic}
	for _, tc := range []struct {
		name     string
		idemsink []string // flags after offsets reset
		kafka    []string // flags after kafka-consumer-groups --reset-offsets
		want     []int64  // the new offsets, partition by partition
	}{
		{"to-datetime zone-less", []string{"--to-datetime", "2026-11-02T00:00:00.000"},
			append([]string{"--to-datetime", "2026-11-02T00:00:00.000"}, all...), []int64{5, 5}},
		{"to-datetime +05:30", []string{"--to-datetime", "2026-11-02T05:30:00.000+05:30", "--dry-run"},
			append([]string{"--to-datetime", "2026-11-02T05:30:00.000+05:30"}, all...), []int64{5, 5}},
		{"to-datetime in the future", []string{"--to-datetime", "2026-12-31T00:00:00.000"},
			append([]string{"--to-datetime", "2026-12-31T00:00:00.000"}, all...), []int64{17, 17}},
		{"by-duration " + iso, []string{"--by-duration", iso, "--all-topics"},
			append([]string{"--by-duration", iso}, all...), []int64{7, 7}},
		{"to-earliest all-topics dry-run", []string{"--to-earliest", "--all-topics", "--dry-run"},
			[]string{"--to-earliest", "--all-topics"}, []int64{0, 0}},
		{"shift-by one partition", []string{"--shift-by", "-3", "--topic", f.topic + ":1"},
			[]string{"--shift-by", "-3", "--topic", f.topic + ":1"}, []int64{-1, 12}},
		{"to-offset clamped", []string{"--to-offset", "999999"},
			append([]string{"--to-offset", "999999"}, all...), []int64{17, 17}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := f.run(append([]string{"offsets", "reset", "--json"}, tc.idemsink...)...)
			var plan resetPlan
			if err != nil || json.Unmarshal([]byte(out), &plan) != nil {
				t.Fatalf("offsets reset %s: %v\n%s", strings.Join(tc.idemsink, " "), err, out)
			}
			ours := slices.Repeat([]int64{-1}, int(f.parts))
			for _, m := range plan.Moves {
				ours[m.Partition] = m.New
			}
			theirs, text := kafkaResetPlan(t, brokers, f.group, f.topic, int(f.parts), tc.kafka)
			t.Logf("idemsink offsets reset %s: new %v, reread %d, skipped %d, clamped %d, notes %q",
				strings.Join(tc.idemsink, " "), ours, plan.ReRead, plan.Skipped, plan.Clamped, plan.Notes)
			t.Logf("kafka-consumer-groups --reset-offsets %s --dry-run: new %v\n%s", strings.Join(tc.kafka, " "), theirs, text)
			if !slices.Equal(ours, theirs) || !slices.Equal(ours, tc.want) {
				t.Errorf("new offsets: idemsink %v, Kafka's tool %v, want %v", ours, theirs, tc.want)
			}
		})
	}
}

// kafkaResetPlan runs Kafka's kafka-consumer-groups --reset-offsets
// --dry-run through scripts/kafka and returns its new offset per
// partition of topic (-1 where it plans none), and its output.
func kafkaResetPlan(t *testing.T, brokers, group, topic string, parts int, flags []string) ([]int64, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	args := append([]string{"tool", "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
		"--bootstrap-server", brokers, "--group", group, "--reset-offsets", "--dry-run"}, flags...)
	cmd := exec.CommandContext(ctx, "../../scripts/kafka", args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("kafka-consumer-groups %s: %v\n%s%s", strings.Join(flags, " "), err, stdout.String(), stderr.String())
	}
	// Kafka's tool exits 0 on an error too; an answer without a line for
	// the group is one.
	got := slices.Repeat([]int64{-1}, parts)
	found := false
	for _, line := range strings.Split(stdout.String(), "\n") {
		fs := strings.Fields(line)
		if len(fs) != 4 || fs[0] != group || fs[1] != topic {
			continue
		}
		p, err1 := strconv.Atoi(fs[2])
		n, err2 := strconv.ParseInt(fs[3], 10, 64)
		if err1 != nil || err2 != nil || p >= parts {
			t.Fatalf("kafka-consumer-groups printed %q", line)
		}
		got[p], found = n, true
	}
	if !found {
		t.Fatalf("kafka-consumer-groups %s planned nothing:\n%s%s", strings.Join(flags, " "), stdout.String(), stderr.String())
	}
	return got, stdout.String() + stderr.String()
}
