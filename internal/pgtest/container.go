package pgtest

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/testcontainers/testcontainers-go"
	"github.com/testcontainers/testcontainers-go/modules/postgres"
)

// Environment of the testcontainers tier.
const (
	// EnvContainers switches the harness to containers: "1" or "true".
	// It is never inferred from an engine being around, so that a test run
	// is what its environment says.
	EnvContainers = "IDEMSINK_TESTCONTAINERS"
	// EnvPostgresImage overrides DefaultPostgresImage.
	EnvPostgresImage = "IDEMSINK_POSTGRES_IMAGE"
	// DefaultPostgresImage is the public image users pull.
	DefaultPostgresImage = "postgres:15"
)

// Label is set on every container the harness starts, so that a run killed
// before Main could clean up (a test timeout panics) leaves containers that
// `podman ps -a --filter label=org.idemsink.harness` finds.
const Label = "org.idemsink.harness"

// Containers reports whether IDEMSINK_TESTCONTAINERS asks for containers.
// When it does, it also checks once per test binary that a
// Docker-compatible engine answers, and fails t when none does, or when the
// variable is not a boolean.
func Containers(t testing.TB) bool {
	t.Helper()
	use, err := containersWanted()
	if err == nil && use {
		err = engine()
	}
	if err != nil {
		t.Fatal(err)
	}
	return use
}

func containersWanted() (bool, error) {
	v := os.Getenv(EnvContainers)
	if v == "" {
		return false, nil
	}
	use, err := strconv.ParseBool(v)
	if err != nil {
		return false, fmt.Errorf("%s=%q: want a boolean, 1 or 0", EnvContainers, v)
	}
	return use, nil
}

var (
	engineOnce sync.Once
	engineErr  error
)

// engine checks once that the engine testcontainers would use answers.
func engine() error {
	engineOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		engineErr = pingEngine(ctx)
		if engineErr != nil {
			engineErr = fmt.Errorf("%s=%s but no Docker-compatible engine answers (DOCKER_HOST=%q): %w; start one (scripts/containers service prints the environment to export) or unset %[1]s",
				EnvContainers, os.Getenv(EnvContainers), os.Getenv("DOCKER_HOST"), engineErr)
		}
	})
	return engineErr
}

func pingEngine(ctx context.Context) (err error) {
	// testcontainers panics on some broken setups instead of returning.
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("testcontainers: %v", r)
		}
	}()
	p, err := testcontainers.NewDockerProvider()
	if err != nil {
		return err
	}
	defer func() { _ = p.Close() }()
	return p.Health(ctx)
}

// startContainer runs the PostgreSQL container, registered with AtExit
// before it starts, and returns its base URL.
func startContainer() (string, error) {
	if err := engine(); err != nil {
		return "", err
	}
	image := os.Getenv(EnvPostgresImage)
	if image == "" {
		image = DefaultPostgresImage
	}
	var ctr *postgres.PostgresContainer
	err := AtExit(func() error {
		if ctr == nil {
			return nil
		}
		if err := testcontainers.TerminateContainer(ctr); err != nil {
			return fmt.Errorf("PostgreSQL container %s: %w", ctr.GetContainerID(), err)
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	start := time.Now()
	ctr, err = postgres.Run(ctx, image,
		postgres.WithDatabase("postgres"),
		postgres.WithUsername("postgres"),
		postgres.WithPassword("postgres"),
		postgres.BasicWaitStrategies(),
		// The same no-durability settings as pglocal's throwaway server,
		// and room for parallel tests and their pools.
		testcontainers.WithCmdArgs(
			"-c", "synchronous_commit=off",
			"-c", "full_page_writes=off",
			"-c", "max_connections=200",
		),
		testcontainers.WithLabels(map[string]string{Label: "pgtest"}),
	)
	if err != nil {
		// Run returns the container it created even on failure.
		return "", fmt.Errorf("PostgreSQL container from %s: %w", image, err)
	}
	u, err := ctr.ConnectionString(ctx, "sslmode=disable")
	if err != nil {
		return "", fmt.Errorf("PostgreSQL container from %s: %w", image, err)
	}
	if testing.Verbose() {
		fmt.Fprintf(os.Stderr, "pgtest: PostgreSQL container from %s ready in %s\n", image, time.Since(start).Round(time.Millisecond))
	}
	return u, nil
}
