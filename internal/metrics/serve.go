package metrics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/exporter-toolkit/web"
)

// Handler serves /metrics from g, /healthz (the process answers) and
// /readyz (200 when ready reports true, else 503).
func Handler(g prometheus.Gatherer, ready func() bool) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !ready() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	return mux
}

// Server is the metrics HTTP server. With a web configuration file (the
// --web.config.file of every Prometheus exporter, read by
// github.com/prometheus/exporter-toolkit/web) it serves TLS and checks
// basic auth on every path, the probes included, as Prometheus does for
// its own /-/healthy and /-/ready; without one it serves plain HTTP.
type Server struct {
	ln        net.Listener
	srv       *http.Server
	webConfig string
	log       *slog.Logger
}

// Listen binds addr, so that Addr is known before Serve, and checks the
// web configuration file ("" for none) as the toolkit will read it.
func Listen(addr, webConfigFile string, h http.Handler, log *slog.Logger) (*Server, error) {
	if err := web.Validate(webConfigFile); err != nil {
		return nil, fmt.Errorf("metrics web config %s: %w", webConfigFile, err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics server: %w", err)
	}
	log = log.With("component", "metrics")
	return &Server{
		ln: ln,
		// Failed handshakes (scanners, TCP probes, untrusting clients) are
		// the server's own log lines: debug, through slog, not stderr.
		srv:       &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug)},
		webConfig: webConfigFile,
		log:       log,
	}, nil
}

// Addr is the address the server listens on.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Serve serves until Shutdown; it returns nil after Shutdown. The toolkit
// re-reads the web configuration file (certificates, users) on every new
// connection, so a renewed certificate needs no restart.
func (s *Server) Serve() error {
	wc := s.webConfig
	err := web.Serve(s.ln, s.srv, &web.FlagConfig{WebConfigFile: &wc}, s.log)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return fmt.Errorf("metrics server: %w", err)
}

// Shutdown stops the server, waiting for requests in flight until ctx ends.
func (s *Server) Shutdown(ctx context.Context) error { return s.srv.Shutdown(ctx) }
