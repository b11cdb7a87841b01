package consume_test

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/idemsink/idemsink/internal/consume"
	"github.com/idemsink/idemsink/internal/kafkatest"
	"github.com/idemsink/idemsink/internal/waittest"
)

// Records produced by kcat, a client nobody here wrote (librdkafka), are
// consumed like any other.
func TestOutsideProducerKcat(t *testing.T) {
	t.Parallel()
	kcat, err := exec.LookPath("kcat")
	if err != nil {
		t.Fatal("kcat is needed as an outside producer: apt-get install -y kcat")
	}
	k := kafkatest.New(t)
	topic := k.Topic("kcat", 3)
	e := newEnv(t, k, simplePipeline("p", topic, "items", true))
	var in strings.Builder
	for i := range 60 {
		fmt.Fprintf(&in, "key-%d|{\"id\":%d,\"status\":\"s%d\",\"qty\":%d,\"ts\":\"2026-03-0%dT12:00:00+01:00\",\"v\":%d}\n", i%20, i%20, i, i, 1+i%3, i)
	}
	cmd := exec.CommandContext(context.Background(), kcat, "-P", "-b", strings.Join(k.Brokers, ","), "-t", topic, "-K", "|", "-X", "api.version.request=true")
	cmd.Stdin = strings.NewReader(in.String())
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("kcat: %v: %s", err, out)
	}
	waittest.For(t, 30*time.Second, "kcat's records to arrive", func() bool {
		n := int64(0)
		for _, end := range k.Ends(topic) {
			n += end
		}
		return n == 60
	})
	mb := e.start(e.cfg, consume.Options{})
	e.waitApplied(e.cfg.Group, topic)
	if err := mb.stop(); err != nil {
		t.Fatal(err)
	}
	if n := e.count("SELECT count(*) FROM items"); n != 20 {
		t.Errorf("%d rows, want 20 keys", n)
	}
	// Each key's newest version is the last of its 3 records.
	if n := e.count("SELECT count(*) FROM items WHERE v = id + 40 AND status = 's' || v"); n != 20 {
		t.Errorf("%d rows hold their newest version, want 20", n)
	}
}
