//go:build realkafka

// The tests of this file need the real broker of make test-kafka with its
// SSL and OAUTHBEARER listeners (scripts/test-kafka builds them with -tags
// realkafka); without them they fail.

package main

import (
	"context"
	"encoding/base64"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/idemsink/idemsink/internal/certtest"
	"github.com/idemsink/idemsink/internal/config"
	"github.com/idemsink/idemsink/internal/kafkatest"
	"github.com/idemsink/idemsink/internal/waittest"
)

// The security tests need scripts/kafka's secure listeners (KAFKA_SECURE=1,
// which scripts/test-kafka sets): SSL requiring a client certificate, and
// SASL_PLAINTEXT with OAUTHBEARER checked by Kafka's unsecured JWS
// validator.
type secureKafka struct {
	k           *kafkatest.Cluster // the plaintext listener: topics, producing
	ssl, oauth  string
	ca          *certtest.CA // signs the broker's certificate, and trusted for clients
	caFile, dir string
}

// needSecureKafka returns the secure listeners of the real-Kafka tier. The
// tier (KAFKA_BROKERS set) without them fails; without a real broker at all
// (the kfake tier of make test, which has no TLS or OAUTHBEARER) the test
// is skipped, for make test-kafka runs it.
func needSecureKafka(t *testing.T) *secureKafka {
	t.Helper()
	ssl, oauth, dir := os.Getenv("KAFKA_SSL_BROKERS"), os.Getenv("KAFKA_OAUTH_BROKERS"), os.Getenv("KAFKA_TLS_DIR")
	if ssl == "" || oauth == "" || dir == "" {
		t.Fatal("KAFKA_SSL_BROKERS, KAFKA_OAUTH_BROKERS or KAFKA_TLS_DIR is not set: start the broker with KAFKA_SECURE=1 scripts/kafka start (scripts/test-kafka does)")
	}
	ca, err := certtest.LoadCA(filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	return &secureKafka{k: kafkatest.New(t), ssl: ssl, oauth: oauth, ca: ca, caFile: filepath.Join(dir, "ca.pem"), dir: t.TempDir()}
}

// write writes b into the test's directory and returns the path.
func (s *secureKafka) write(t *testing.T, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(s.dir, name)
	// Written aside and renamed, as a secret rotation does: a reader never
	// sees half a file.
	if err := os.WriteFile(p+".tmp", b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(p+".tmp", p); err != nil {
		t.Fatal(err)
	}
	return p
}

// client issues a client certificate from ca and writes it and its key.
func (s *secureKafka) client(t *testing.T, ca *certtest.CA, name string) (certFile, keyFile string) {
	t.Helper()
	cert, key, err := ca.Issue(name)
	if err != nil {
		t.Fatal(err)
	}
	return s.write(t, name+".pem", cert), s.write(t, name+"-key.pem", key)
}

// jws is an unsecured JWS (alg none) for sub, as Kafka's unsecured
// validator accepts until exp.
func jws(sub string, exp time.Time) string {
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"none"}`)) + "." +
		enc(fmt.Appendf(nil, `{"sub":%q,"iat":%d,"exp":%d}`, sub, time.Now().Add(-time.Minute).Unix(), exp.Unix())) + "."
}

// secureFixture is the fixture with its configuration's extra keys and
// the daemon and commands pointed at a secure listener.
func secureFixture(t *testing.T, s *secureKafka, extra, brokers string, env map[string]string) *fixture {
	t.Helper()
	f := newFixture(t, s.k, 2, extra)
	f.env["IDEMSINK_BROKERS"] = brokers
	maps.Copy(f.env, env)
	cfg, err := config.Load(f.cfgPath, f.getenv)
	if err != nil {
		t.Fatal(err)
	}
	f.cfg = cfg
	return f
}

// daemon runs `consumer run` until the returned stop is called; stop
// returns the daemon's error and logs.
func (f *fixture) daemon() (stop func() (error, string)) {
	f.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var logs syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"run", "-config", f.cfgPath}, f.getenv, &logs, &logs)
	}()
	stopped := false
	stop = func() (error, string) {
		if stopped {
			return nil, ""
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			return err, logs.String()
		case <-time.After(60 * time.Second):
			return fmt.Errorf("daemon did not stop within 60s"), logs.String()
		}
	}
	f.t.Cleanup(func() { stop() })
	return stop
}

// roundTrip produces a day of records, runs the daemon until they are
// applied, and runs the commands that talk to Kafka: each must succeed
// over the secure listener.
func roundTrip(t *testing.T, f *fixture) {
	t.Helper()
	f.produceDay(2, 3)
	stop := f.daemon()
	f.waitApplied()
	if err, logs := stop(); err != nil {
		t.Fatalf("daemon: %v\n%s", err, logs)
	}
	var rows int
	if err := f.pool.QueryRow(context.Background(), "SELECT count(*) FROM orders").Scan(&rows); err != nil {
		t.Fatal(err)
	}
	if rows != 6 {
		t.Errorf("%d rows, want 6", rows)
	}
	out, err := f.run("offsets")
	if err != nil {
		t.Fatalf("offsets: %v", err)
	}
	for p := range 2 {
		if want := fmt.Sprintf("%s  %d          3", f.topic, p); !strings.Contains(out, want) {
			t.Errorf("offsets printed\n%s\nwant a line with %q (committed at 3)", out, want)
		}
	}
	for _, args := range [][]string{
		{"offsets", "reset", "--to-earliest"}, // a dry run
		{"replay", "--from", "2026-11-02"},
		{"verify", "--date", "2026-11-02"},
	} {
		if out, err := f.run(args...); err != nil {
			t.Errorf("%s: %v\n%s", strings.Join(args, " "), err, out)
		} else if args[0] == "offsets" && !strings.Contains(out, "dry run") {
			t.Errorf("offsets reset printed\n%s\nwant a dry run", out)
		}
	}
}

// failOffsets runs `consumer offsets` with cfg's tls/sasl keys replaced by
// extra and returns its error, which must mention every one of want.
func failOffsets(t *testing.T, f *fixture, extra string, want ...string) {
	t.Helper()
	y, err := os.ReadFile(f.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	head, rest, _ := strings.Cut(string(y), "pipelines:\n")
	lines := strings.Split(head, "\n")
	kept := lines[:0]
	for _, l := range lines {
		if !strings.HasPrefix(l, "tls:") && !strings.HasPrefix(l, "sasl:") {
			kept = append(kept, l)
		}
	}
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(bad, []byte(strings.Join(kept, "\n")+extra+"\npipelines:\n"+rest), 0o644); err != nil {
		t.Fatal(err)
	}
	var out, errOut strings.Builder
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = run(ctx, []string{"offsets", "-config", bad}, f.getenv, &out, &errOut)
	if err == nil {
		t.Fatalf("offsets with %s succeeded:\n%s", extra, out.String())
	}
	t.Logf("offsets with %s: %v", strings.TrimSpace(extra), err)
	for _, secret := range []string{"s3cret", "wrong-secret"} {
		if strings.Contains(err.Error()+errOut.String(), secret) {
			t.Errorf("offsets with %s: the secret %q is in its error or log", extra, secret)
		}
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("offsets with %s: error %q does not mention %q", extra, err, w)
		}
	}
}

// mTLS: the daemon and the commands over a listener that requires a
// client certificate from the CA; a missing one, or one from another CA,
// is refused with an error that says so.
func TestKafkaMutualTLS(t *testing.T) {
	s := needSecureKafka(t)
	cert, key := s.client(t, s.ca, "idemsink")
	tlsYAML := fmt.Sprintf("tls: {ca_file: %s, cert_file: %s, key_file: %s}\n", s.caFile, cert, key)
	f := secureFixture(t, s, tlsYAML, s.ssl, nil)
	roundTrip(t, f)

	other, err := certtest.NewCA("another CA")
	if err != nil {
		t.Fatal(err)
	}
	wcert, wkey := s.client(t, other, "intruder")
	failOffsets(t, f, fmt.Sprintf("tls: {ca_file: %s}\n", s.caFile), "remote error: tls: bad certificate")
	failOffsets(t, f, fmt.Sprintf("tls: {ca_file: %s, cert_file: %s, key_file: %s}\n", s.caFile, wcert, wkey), "remote error: tls: bad certificate")
	// The broker's certificate checked too: without the test CA, the
	// system's roots do not know it.
	failOffsets(t, f, fmt.Sprintf("tls: {cert_file: %s, key_file: %s}\n", cert, key), "certificate signed by unknown authority")
	// A name the certificate does not carry.
	failOffsets(t, f, fmt.Sprintf("tls: {ca_file: %s, cert_file: %s, key_file: %s, server_name: kafka.example}\n", s.caFile, cert, key),
		"kafka.example")
}

// OAUTHBEARER with a token file: the daemon and the commands; the file is
// read at every authentication, so a token rotated on disk is used by a
// daemon already running once its old token has expired; a bad token is
// refused with the broker's reason.
func TestKafkaOAuthTokenFile(t *testing.T) {
	s := needSecureKafka(t)
	// The first token expires soon after the first day is applied; the
	// broker ends each session at its token's expiry (scripts/kafka sets
	// connections.max.reauth.ms), so every connection must authenticate
	// again, and only the second token, read from the file, is valid then.
	exp1 := time.Now().Add(15 * time.Second)
	tokenFile := s.write(t, "token", []byte(jws("idemsink", exp1)+"\n"))
	f := secureFixture(t, s, "sasl: {mechanism: oauthbearer, oauth: {token_file: "+tokenFile+"}}\n", s.oauth, nil)

	f.produceDay(2, 3)
	stop := f.daemon()
	f.waitApplied()
	s.write(t, "token", []byte(jws("idemsink", time.Now().Add(time.Hour))))
	// The one condition here is the clock: the first token's expiry is
	// what forces the re-authentication.
	waittest.For(t, 30*time.Second, "the first token to expire", func() bool { return time.Now().After(exp1.Add(time.Second)) })
	f.produceDay(3, 3)
	f.waitApplied()
	if err, logs := stop(); err != nil {
		t.Fatalf("daemon: %v\n%s", err, logs)
	}
	var rows int
	if err := f.pool.QueryRow(context.Background(), "SELECT count(*) FROM orders").Scan(&rows); err != nil {
		t.Fatal(err)
	}
	if rows != 12 {
		t.Errorf("%d rows, want 12 (two days after the token rotation)", rows)
	}
	if out, err := f.run("offsets"); err != nil || !strings.Contains(out, fmt.Sprintf("%s  1          6", f.topic)) {
		t.Errorf("offsets: %v\n%s\nwant partition 1 committed at 6", err, out)
	}
	if out, err := f.run("offsets", "reset", "--to-earliest"); err != nil || !strings.Contains(out, "dry run") {
		t.Errorf("offsets reset dry run: %v\n%s", err, out)
	}

	expired := s.write(t, "expired", []byte(jws("idemsink", time.Now().Add(-time.Minute))))
	failOffsets(t, f, "sasl: {mechanism: oauthbearer, oauth: {token_file: "+expired+"}}\n", "SASL_AUTHENTICATION_FAILED", `{"status":"invalid_token"}`)
	garbage := s.write(t, "garbage", []byte("not-a-jws"))
	failOffsets(t, f, "sasl: {mechanism: oauthbearer, oauth: {token_file: "+garbage+"}}\n", "SASL_AUTHENTICATION_FAILED", `{"status":"invalid_token"}`)
}

// OAUTHBEARER with the client credentials flow: a token endpoint in the
// test issues unsecured JWS tokens the broker accepts; the daemon and the
// commands run with them, one token per process however many connections
// it opens; a wrong secret is refused by the endpoint and named.
func TestKafkaOAuthClientCredentials(t *testing.T) {
	s := needSecureKafka(t)
	var issued atomic.Int64
	idp := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, secret, ok := r.BasicAuth()
		if err := r.ParseForm(); err != nil || r.Form.Get("grant_type") != "client_credentials" || !ok || id != "idemsink" ||
			secret != "s3cret" || r.Form.Get("scope") != "kafka" {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprint(w, `{"error":"invalid_client"}`)
			return
		}
		issued.Add(1)
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"access_token":%q,"token_type":"bearer","expires_in":3600}`, jws(id, time.Now().Add(time.Hour)))
	}))
	t.Cleanup(idp.Close)
	// The secret in the file is overridden by IDEMSINK_SASL_CLIENT_SECRET:
	// the endpoint takes only the latter.
	cc := "sasl: {mechanism: oauthbearer, oauth: {token_url: '" + idp.URL + "/token', client_id: idemsink, client_secret: in-the-file, scopes: [kafka]}}\n"
	f := secureFixture(t, s, cc, s.oauth, map[string]string{"IDEMSINK_SASL_CLIENT_SECRET": "s3cret"})

	f.produceDay(2, 3)
	stop := f.daemon()
	f.waitApplied()
	if err, logs := stop(); err != nil {
		t.Fatalf("daemon: %v\n%s", err, logs)
	}
	// The daemon opened a connection per broker role (group, fetch,
	// metadata) and an admin client for its backlog log; its token is
	// cached per client.
	t.Logf("the daemon fetched %d token(s)", issued.Load())
	if n := issued.Load(); n < 1 || n > 2 {
		t.Errorf("the daemon fetched %d tokens, want 1 per client (2 at most)", n)
	}
	before := issued.Load()
	if out, err := f.run("offsets"); err != nil || !strings.Contains(out, fmt.Sprintf("%s  0          3", f.topic)) {
		t.Errorf("offsets: %v\n%s", err, out)
	}
	if out, err := f.run("offsets", "reset", "--to-earliest"); err != nil || !strings.Contains(out, "dry run") {
		t.Errorf("offsets reset dry run: %v\n%s", err, out)
	}
	if n := issued.Load() - before; n != 2 {
		t.Errorf("two commands fetched %d tokens, want 2", n)
	}

	f.env["IDEMSINK_SASL_CLIENT_SECRET"] = "wrong-secret"
	failOffsets(t, f, cc, "sasl.oauth.token_url", "invalid_client")
}
