package metrics_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/crypto/bcrypt"

	"github.com/idemsink/idemsink/internal/certtest"
	"github.com/idemsink/idemsink/internal/metrics"
)

// serve starts a metrics server on a free port with the web config file
// ("" for none) and returns its address; it stops when the test ends.
func serve(t *testing.T, webConfig string, ready func() bool) string {
	t.Helper()
	reg := prometheus.NewRegistry()
	metrics.New(reg).Ready.Set(1)
	srv, err := metrics.Listen("127.0.0.1:0", webConfig, metrics.Handler(reg, ready), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve() }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return srv.Addr().String()
}

// get returns the status and body of a GET, with basic auth unless user
// is "".
func get(t *testing.T, cl *http.Client, url, user, pass string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if user != "" {
		req.SetBasicAuth(user, pass)
	}
	resp, err := cl.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// Without a web config file the endpoint is plain HTTP without auth, as
// before: the default.
func TestMetricsServerPlain(t *testing.T) {
	var ready atomic.Bool
	addr := serve(t, "", ready.Load)
	for _, c := range []struct {
		path string
		code int
		body string
	}{
		{"/metrics", 200, "idemsink_ready 1"},
		{"/healthz", 200, "ok"},
		{"/readyz", 503, "not ready"},
	} {
		code, body := get(t, http.DefaultClient, "http://"+addr+c.path, "", "")
		if code != c.code || !strings.Contains(body, c.body) {
			t.Errorf("GET %s: %d %q, want %d with %q", c.path, code, body, c.code, c.body)
		}
	}
	ready.Store(true)
	if code, _ := get(t, http.DefaultClient, "http://"+addr+"/readyz", "", ""); code != 200 {
		t.Errorf("GET /readyz when ready: %d, want 200", code)
	}
}

// With a web config of TLS and bcrypt basic auth, every path needs the
// credentials over TLS: /metrics, and the probes too (as Prometheus' own
// /-/healthy and /-/ready under the same file).
func TestMetricsServerTLSAndBasicAuth(t *testing.T) {
	webConfig, ca := writeWebConfig(t, "prometheus", "scrape-Pa55")
	addr := serve(t, webConfig, func() bool { return true })

	pool := x509.NewCertPool()
	pem, err := os.ReadFile(ca)
	if err != nil {
		t.Fatal(err)
	}
	pool.AppendCertsFromPEM(pem)
	cl := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	base := "https://" + addr

	for _, path := range []string{"/metrics", "/healthz", "/readyz"} {
		if code, _ := get(t, cl, base+path, "", ""); code != http.StatusUnauthorized {
			t.Errorf("GET %s without credentials: %d, want 401", path, code)
		}
		if code, _ := get(t, cl, base+path, "prometheus", "wrong"); code != http.StatusUnauthorized {
			t.Errorf("GET %s with a wrong password: %d, want 401", path, code)
		}
		if code, _ := get(t, cl, base+path, "intruder", "scrape-Pa55"); code != http.StatusUnauthorized {
			t.Errorf("GET %s as an unknown user: %d, want 401", path, code)
		}
	}
	code, body := get(t, cl, base+"/metrics", "prometheus", "scrape-Pa55")
	if code != 200 || !strings.Contains(body, "idemsink_ready 1") {
		t.Errorf("GET /metrics with credentials: %d %.200q, want 200 with idemsink_ready 1", code, body)
	}
	for _, path := range []string{"/healthz", "/readyz"} {
		if code, _ := get(t, cl, base+path, "prometheus", "scrape-Pa55"); code != 200 {
			t.Errorf("GET %s with credentials: %d, want 200", path, code)
		}
	}

	// Plain HTTP to the TLS port is refused, and so is a client that does
	// not trust the CA.
	if code, body := get(t, http.DefaultClient, "http://"+addr+"/metrics", "prometheus", "scrape-Pa55"); code != http.StatusBadRequest {
		t.Errorf("plain HTTP to the TLS port: %d %q, want 400", code, body)
	}
	_, err = http.Get(base + "/metrics")
	var unknown x509.UnknownAuthorityError
	if !errors.As(err, &unknown) {
		t.Errorf("GET with the system roots: %v, want an unknown authority error", err)
	}
}

// A bad web config file stops the server before it listens, with the
// toolkit's reason.
func TestMetricsServerBadWebConfig(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct{ name, content, want string }{
		{"missing cert", "tls_server_config:\n  cert_file: nope.crt\n  key_file: nope.key\n", "nope.crt"},
		{"plain password", "basic_auth_users:\n  prometheus: not-a-bcrypt-hash\n", "bcrypt"},
		{"unknown key", "tls_server_confg: {}\n", "tls_server_confg"},
	} {
		path := filepath.Join(dir, strings.ReplaceAll(c.name, " ", "-")+".yml")
		if err := os.WriteFile(path, []byte(c.content), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := metrics.Listen("127.0.0.1:0", path, http.NotFoundHandler(), slog.New(slog.DiscardHandler))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error naming %q", c.name, err, c.want)
		}
	}
}

// writeWebConfig writes a CA, a server certificate and a web config file
// with TLS and one bcrypt basic auth user, and returns the file and the
// CA certificate.
func writeWebConfig(t *testing.T, user, pass string) (string, string) {
	t.Helper()
	ca := certtest.New(t, "metrics")
	srv := ca.Server("metrics")
	hash, err := bcrypt.GenerateFromPassword([]byte(pass), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "web.yml")
	content := fmt.Sprintf("tls_server_config:\n  cert_file: %s\n  key_file: %s\nbasic_auth_users:\n  %s: %s\n", srv.CertFile, srv.KeyFile, user, hash)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path, ca.CertFile
}
