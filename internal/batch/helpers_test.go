package batch

import (
	"testing"

	"github.com/idemsink/idemsink/internal/config"
)

// pipeline validates p inside an otherwise minimal configuration, so that a
// test never runs on a pipeline the daemon would refuse, and returns it with
// defaults applied.
func pipeline(t testing.TB, p config.Pipeline) *config.Pipeline {
	t.Helper()
	if p.Name == "" {
		p.Name = "p"
	}
	if p.Table == "" {
		p.Table = "t"
	}
	if p.Topics == nil {
		p.Topics = []string{"topic"}
	}
	c := config.Config{Brokers: []string{"localhost:9092"}, Group: "g", DatabaseURL: "postgres://x", Pipelines: []config.Pipeline{p}}
	c.SetDefaults()
	if err := c.Validate(); err != nil {
		t.Fatalf("test pipeline: %v", err)
	}
	return &c.Pipelines[0]
}

// col is a non-nullable column whose field is its name.
func col(name, typ string) config.Column { return config.Column{Name: name, Type: typ} }

// nullable is a nullable column whose field is its name.
func nullable(name, typ string) config.Column {
	return config.Column{Name: name, Type: typ, Nullable: true}
}

// badReason returns the reason of a *BadRecord, failing the test if err is
