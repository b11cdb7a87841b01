// Package configtest builds the configurations of unit tests: a pipeline
// validated inside an otherwise minimal configuration, so that a test never
// runs on a pipeline the daemon would refuse. Production code never imports
// it.
package configtest

import (
	"testing"

	"github.com/idemsink/idemsink/internal/config"
)

// Pipeline validates p inside an otherwise minimal configuration and
// returns it with defaults applied; a name, table and topic are filled in
// when p has none.
func Pipeline(t testing.TB, p config.Pipeline) *config.Pipeline {
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

// Col is a non-nullable column whose field is its name.
func Col(name, typ string) config.Column { return config.Column{Name: name, Type: typ} }

// Nullable is a nullable column whose field is its name.
func Nullable(name, typ string) config.Column {
	return config.Column{Name: name, Type: typ, Nullable: true}
}
