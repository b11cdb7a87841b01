package kafkatest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	"github.com/testcontainers/testcontainers-go"
	"github.com/testcontainers/testcontainers-go/wait"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/idemsink/idemsink/internal/pgtest"
)

const (
	// EnvKafkaImage overrides DefaultKafkaImage.
	EnvKafkaImage = "IDEMSINK_KAFKA_IMAGE"
	// DefaultKafkaImage is the public image users pull.
	DefaultKafkaImage = "apache/kafka:4.1.1"
)

// One Kafka container per test binary, stopped by pgtest.Main.
var (
	ctrOnce    sync.Once
	ctrBrokers []string
	ctrErr     error
)

func containerBrokers(t testing.TB) []string {
	t.Helper()
	ctrOnce.Do(func() { ctrBrokers, ctrErr = startContainer() })
	if ctrErr != nil {
		t.Fatalf("Kafka for tests: %v", ctrErr)
	}
	return ctrBrokers
}

// startContainer runs a single-node KRaft broker and returns its address.
//
// The broker must advertise the address the test process dials: the host
// port the container's 9092 is published on. To know it before the start,
// and configure the broker through the apache/kafka image's KAFKA_*
// variables only (which our local image honours as well), the harness picks
// a free port and publishes 9092 on it. Another process may take the port
// in between; the start is then retried on a new one.
func startContainer() ([]string, error) {
	image := os.Getenv(EnvKafkaImage)
	if image == "" {
		image = DefaultKafkaImage
	}
	var ctr *testcontainers.DockerContainer
	err := pgtest.AtExit(func() error {
		if err := testcontainers.TerminateContainer(ctr); err != nil {
			return fmt.Errorf("kafka container %s: %w", ctr.GetContainerID(), err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	host, err := daemonHost(ctx)
	if err != nil {
		return nil, fmt.Errorf("container engine address: %w", err)
	}
	start := time.Now()
	var broker string
	for attempt := 1; ; attempt++ {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		broker = net.JoinHostPort(host, strconv.Itoa(port))
		ctr, err = run(ctx, image, broker, port)
		if err == nil {
			break
		}
		err = fmt.Errorf("kafka container from %s: %w%s", image, err, logTail(ctr))
		if terr := testcontainers.TerminateContainer(ctr); terr != nil {
			err = errors.Join(err, terr)
		}
		ctr = nil
		if attempt == 3 || !portTaken(err) {
			return nil, err
		}
	}
	if err := ready(ctx, broker); err != nil {
		return nil, fmt.Errorf("kafka container from %s at %s: %w%s", image, broker, err, logTail(ctr))
	}
	if testing.Verbose() {
		fmt.Fprintf(os.Stderr, "kafkatest: Kafka container from %s ready at %s in %s\n", image, broker, time.Since(start).Round(time.Millisecond))
	}
	return []string{broker}, nil
}

func run(ctx context.Context, image, broker string, port int) (*testcontainers.DockerContainer, error) {
	return testcontainers.Run(ctx, image,
		testcontainers.WithExposedPorts("9092/tcp"),
		testcontainers.WithHostConfigModifier(func(hc *container.HostConfig) {
			hc.PortBindings = network.PortMap{
				network.MustParsePort("9092/tcp"): {{HostPort: strconv.Itoa(port)}},
			}
		}),
		// The apache/kafka image's convention for a single-node combined
		// broker and controller; these variables replace its defaults.
		testcontainers.WithEnv(map[string]string{
			"KAFKA_NODE_ID":                                  "1",
			"KAFKA_PROCESS_ROLES":                            "broker,controller",
			"KAFKA_LISTENERS":                                "PLAINTEXT://:9092,CONTROLLER://:9093",
			"KAFKA_ADVERTISED_LISTENERS":                     "PLAINTEXT://" + broker,
			"KAFKA_CONTROLLER_LISTENER_NAMES":                "CONTROLLER",
			"KAFKA_LISTENER_SECURITY_PROTOCOL_MAP":           "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
			"KAFKA_CONTROLLER_QUORUM_VOTERS":                 "1@localhost:9093",
			"KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR":         "1",
			"KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "1",
			"KAFKA_TRANSACTION_STATE_LOG_MIN_ISR":            "1",
			"KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS":         "0",
		}),
		testcontainers.WithLabels(map[string]string{pgtest.Label: "kafkatest"}),
		// Logged by the broker itself (KafkaRaftServer), so by both images.
		testcontainers.WithWaitStrategyAndDeadline(2*time.Minute, wait.ForLog("Kafka Server started")),
	)
}

// ready waits until the broker answers a metadata request through the
// published port, which the log line alone does not prove.
func ready(ctx context.Context, broker string) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(broker))
	if err != nil {
		return err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	for {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		m, err := adm.BrokerMetadata(rctx)
		cancel()
		if err == nil && len(m.Brokers) > 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("no metadata from the broker: %w (last error: %w)", ctx.Err(), err)
		case <-time.After(100 * time.Millisecond): // polling interval of a readiness wait
		}
	}
}

// daemonHost is the address at which the engine publishes ports, as
// testcontainers computes it (TESTCONTAINERS_HOST_OVERRIDE first).
func daemonHost(ctx context.Context) (string, error) {
	p, err := testcontainers.NewDockerProvider()
	if err != nil {
		return "", err
	}
	defer func() { _ = p.Close() }()
	host, err := p.DaemonHost(ctx)
	if host == "localhost" {
		// Kafka clients would resolve it and might try ::1 first, where
		// the engine may publish nothing.
		host = "127.0.0.1"
	}
	return host, err
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", ":0")
	if err != nil {
		return 0, fmt.Errorf("pick a free port: %w", err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	if err := l.Close(); err != nil {
		return 0, fmt.Errorf("release port %d: %w", port, err)
	}
	return port, nil
}

// portTaken reports whether the engine could not publish the port.
func portTaken(err error) bool {
	msg := err.Error()
	return strings.Contains(msg, "address already in use") || strings.Contains(msg, "port is already allocated")
}

// logTail returns the end of the container's log, for error messages.
func logTail(ctr *testcontainers.DockerContainer) string {
	if ctr == nil {
		return ""
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rc, err := ctr.Logs(ctx)
	if err != nil {
		return ""
	}
	defer func() { _ = rc.Close() }()
	b, _ := io.ReadAll(rc)
	lines := bytes.Split(bytes.TrimSpace(b), []byte("\n"))
	if len(lines) > 30 {
		lines = lines[len(lines)-30:]
	}
	return "\ncontainer log (end):\n" + string(bytes.Join(lines, []byte("\n")))
}
