// Package kafka is the one recipe for a Kafka client of the configured
// cluster: seed brokers, TLS, SASL and logging, shared by the daemon and
// every admin command, so that a command connects wherever the daemon does.
package kafka

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/idemsink/idemsink/internal/config"
)

// Opts returns the options every client of the cluster needs: the seed
// brokers, TLS and SASL as configured, and log at warnings and errors.
func Opts(cfg *config.Config, log *slog.Logger) []kgo.Opt {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	// The client id names idemsink in the broker's logs and in the group's member ids.
	opts := []kgo.Opt{kgo.SeedBrokers(cfg.Brokers...), kgo.ClientID("idemsink"), kgo.WithLogger(logger{log})}
	if cfg.SASL != nil {
		opts = append(opts, kgo.SASL(mechanism(cfg.SASL)))
	}
	if cfg.TLS.Enabled {
		opts = append(opts, kgo.Dialer(tlsDialer(cfg.TLS)))
	}
	return opts
}

// NewClient returns a client of the configured cluster with extra options
// (consuming, producing) added to the recipe.
func NewClient(cfg *config.Config, log *slog.Logger, extra ...kgo.Opt) (*kgo.Client, error) {
	cl, err := kgo.NewClient(append(Opts(cfg, log), extra...)...)
	if err != nil {
		return nil, fmt.Errorf("kafka client: %w", err)
	}
	return cl, nil
}

// NewAdmin returns an admin client of the configured cluster and the
// function that closes it.
func NewAdmin(cfg *config.Config, log *slog.Logger) (*kadm.Client, func(), error) {
	cl, err := NewClient(cfg, log)
	if err != nil {
		return nil, nil, err
	}
	return kadm.NewClient(cl), cl.Close, nil
}

// logger routes the Kafka client's logs into slog, at its warnings and
// errors only: its info level is chatty at every rebalance.
type logger struct{ log *slog.Logger }

func (l logger) Level() kgo.LogLevel { return kgo.LogLevelWarn }

func (l logger) Log(level kgo.LogLevel, msg string, keyvals ...any) {
	lvl := slog.LevelWarn
	if level == kgo.LogLevelError {
		lvl = slog.LevelError
	}
	l.log.Log(context.Background(), lvl, "kafka: "+msg, keyvals...)
}
