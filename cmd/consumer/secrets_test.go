package main

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl/scram"
	"github.com/twmb/franz-go/pkg/sr"
	"github.com/twmb/franz-go/pkg/sr/srfake"

	"github.com/idemsink/idemsink/internal/pglocal"
	"github.com/idemsink/idemsink/internal/pgtest"
	"github.com/idemsink/idemsink/internal/srtest"
	"github.com/idemsink/idemsink/internal/waittest"
)

// The secrets of TestSecretsNeverShown: right and wrong passwords, and
// passwords inside URLs. None may appear in an error, a log line (debug
// included) or anything a command prints.
const (
	kafkaRight  = "kafkaRight-Pa55-q1"
	kafkaWrong  = "kafkaWrong-Pa55-q2"
	pgRight     = "pgRight-Pa55-w1"
	pgWrong     = "pgWrong-Pa55-w2"
	pgInURL     = "pgInURL-Pa55-w3"
	srRight     = "srRight-Pa55-e1"
	srWrong     = "srWrong-Pa55-e2"
	srInURL     = "srInURL-Pa55-e3"
	groupSecret = "secrets"
)

var secrets = []string{kafkaRight, kafkaWrong, pgRight, pgWrong, pgInURL, srRight, srWrong, srInURL}

// checkNoSecret fails the test if any secret, plain or URL-escaped, is in
// the text.
func checkNoSecret(t *testing.T, what, text string) {
	t.Helper()
	for _, s := range secrets {
		if strings.Contains(text, s) || strings.Contains(text, url.QueryEscape(s)) {
			t.Errorf("%s shows the secret %q:\n%s", what, s, text)
		}
	}
}

// Wrong passwords, bad URLs and failed connections to Kafka (SASL), to
// PostgreSQL (password in the URL or the key/value DSN) and to the Schema
// Registry (basic auth, or a password in its URL) fail or are retried
// without a secret in the returned error, the debug log or the output.
func TestSecretsNeverShown(t *testing.T) {
	// Kafka with SASL/SCRAM.
	fc, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.EnableSASL(), kfake.Superuser("SCRAM-SHA-256", "idemsink", kafkaRight))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fc.Close)
	// SASL handshakes, counted so that the test knows the daemon has
	// tried (and failed) to authenticate: it logs nothing about it.
	var handshakes atomic.Int64
	fc.ControlKey(int16(kmsg.SASLHandshake), func(kmsg.Request) (kmsg.Response, error, bool) {
		fc.KeepControl()
		handshakes.Add(1)
		return nil, nil, false
	})
	cl, err := kgo.NewClient(kgo.SeedBrokers(fc.ListenAddrs()...), kgo.ProducerLinger(0), kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.SASL(scram.Auth{User: "idemsink", Pass: kafkaRight}.AsSha256Mechanism()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := kadm.NewClient(cl).CreateTopic(ctx, 1, 1, nil, "orders"); err != nil {
		t.Fatal(err)
	}

	// PostgreSQL with password authentication for the role app.
	s := pgtest.Start(t, pglocal.Options{HBA: []string{"host all app 127.0.0.1/32 scram-sha-256"}})
	superuser(t, s, "", "CREATE ROLE app LOGIN PASSWORD '"+pgRight+"'", "CREATE DATABASE app OWNER app")
	pgURL := func(pass string) string {
		return fmt.Sprintf("postgres://app:%s@127.0.0.1:%d/app?sslmode=disable", pass, s.Port())
	}

	// A Schema Registry with basic auth, and a record framed with a schema
	// it holds.
	reg := srfake.New(srfake.WithAuth("Basic "+base64.StdEncoding.EncodeToString([]byte("sr:"+srRight))), srfake.WithGlobalCompat(sr.CompatNone))
	t.Cleanup(reg.Close)
	id, _, err := reg.RegisterSchema("orders-value", sr.Schema{Type: sr.TypeJSON, Schema: `{"type": "object"}`})
	if err != nil {
		t.Fatal(err)
	}
	if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "orders", Partition: 0,
		Value: srtest.Frame(id, nil, []byte(`{"id": 1, "ts": "2026-11-02T10:00:00Z", "v": 1}`))}).FirstErr(); err != nil {
		t.Fatal(err)
	}

	config := func(format, registryURL string) string {
		c := "group: " + groupSecret + "\nsasl: {mechanism: scram-sha-256, user: idemsink}\n"
		if registryURL != "" {
			c += "schema_registry: {url: '" + registryURL + "', user: sr, timeout: 2s}\n"
		}
		return writeConfig(t, c+strings.Replace(secPipeline("orders"), "    date:", "    format: "+format+"\n    date:", 1))
	}
	jsonCfg := config("json", "")
	good := map[string]string{
		"IDEMSINK_BROKERS": strings.Join(fc.ListenAddrs(), ","), "IDEMSINK_SASL_PASSWORD": kafkaRight,
		"IDEMSINK_DATABASE_URL": pgURL(pgRight), "IDEMSINK_SCHEMA_REGISTRY_PASSWORD": srRight,
	}
	with := func(kv ...string) map[string]string {
		env := map[string]string{}
		for k, v := range good {
			env[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			env[kv[i]] = kv[i+1]
		}
		return env
	}
	// The configuration works: migrate succeeds with the right secrets.
	if out, err := runCmd(good, time.Minute, "migrate", "-config", jsonCfg, "-log-level", "debug"); err != nil {
		t.Fatalf("migrate with the right secrets: %v\n%s", err, out)
	}

	// Commands that fail: their error and everything they printed.
	for _, c := range []struct {
		name string
		env  map[string]string
		args []string
		want string // in the error: it failed for the reason meant
	}{
		// kfake closes the connection on a failed SASL authentication:
		// the error is EOF.
		{"kafka wrong SASL password", with("IDEMSINK_SASL_PASSWORD", kafkaWrong), []string{"offsets", "-config", jsonCfg}, "list log start offsets"},
		{"kafka unreachable with SASL", with("IDEMSINK_BROKERS", "127.0.0.1:1"), []string{"offsets", "-config", jsonCfg}, "127.0.0.1:1"},
		{"postgres wrong password, migrate", with("IDEMSINK_DATABASE_URL", pgURL(pgWrong)), []string{"migrate", "-config", jsonCfg}, "password authentication failed"},
		{"postgres wrong password, run", with("IDEMSINK_DATABASE_URL", pgURL(pgWrong)), []string{"run", "-config", jsonCfg}, "password authentication failed"},
		{"postgres wrong password, offsets", with("IDEMSINK_DATABASE_URL", pgURL(pgWrong)), []string{"offsets", "-config", jsonCfg}, "password authentication failed"},
		{"postgres wrong password, key/value", with("IDEMSINK_DATABASE_URL", fmt.Sprintf("host=127.0.0.1 port=%d user=app password=%s dbname=app sslmode=disable", s.Port(), pgWrong)),
			[]string{"migrate", "-config", jsonCfg}, "password authentication failed"},
		{"postgres bad port in URL", with("IDEMSINK_DATABASE_URL", "postgres://app:"+pgInURL+"@127.0.0.1:port/app"), []string{"migrate", "-config", jsonCfg}, "cannot parse"},
		{"postgres bad URL", with("IDEMSINK_DATABASE_URL", "postgres://app:"+pgInURL+"@[127.0.0.1/app"), []string{"run", "-config", jsonCfg}, "cannot parse"},
		{"postgres bad key/value", with("IDEMSINK_DATABASE_URL", "host=127.0.0.1 port=x user=app password="+pgInURL), []string{"migrate", "-config", jsonCfg}, "cannot parse"},
		{"postgres bad key/value, quoted", with("IDEMSINK_DATABASE_URL", "host=127.0.0.1 port=x user=app password='"+pgInURL+"'"), []string{"migrate", "-config", jsonCfg}, "cannot parse"},
		{"postgres refused", with("IDEMSINK_DATABASE_URL", "postgres://app:"+pgInURL+"@127.0.0.1:1/app"), []string{"migrate", "-config", jsonCfg}, "connect"},
		{"registry URL not http", with(), []string{"run", "-config", config("json_schema", "ftp://sr:"+srInURL+"@127.0.0.1:1")}, "schema_registry.url"},
		{"registry URL unparsable", with(), []string{"run", "-config", config("json_schema", "http://sr:"+srInURL+"@127.0.0.1:port")}, "schema_registry.url"},
	} {
		t.Run(c.name, func(t *testing.T) {
			out, err := runCmd(c.env, 30*time.Second, append(c.args, "-log-level", "debug")...)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %v, want one containing %q", err, c.want)
			}
			if err != nil {
				checkNoSecret(t, "the error", err.Error())
				t.Logf("error: %v", err)
			}
			checkNoSecret(t, "the output", out)
		})
	}

	// The daemon retries what it cannot reach: its log, until it has
	// logged the failure, and the error it returns when stopped.
	t.Run("daemon, kafka wrong SASL password", func(t *testing.T) {
		d := startRun(t, jsonCfg, with("IDEMSINK_SASL_PASSWORD", kafkaWrong), "-log-level", "debug")
		from := handshakes.Load()
		waittest.For(t, 60*time.Second, "three failed SASL handshakes", func() bool { return d.running(t) && handshakes.Load()-from >= 3 })
		if err := d.stop(); err != nil {
			checkNoSecret(t, "the error", err.Error())
		}
		checkNoSecret(t, "the log", d.stderr.String())
		t.Logf("%d SASL handshakes; the log:\n%s", handshakes.Load()-from, d.stderr)
	})
	for _, c := range []struct {
		name, cfg string
		env       map[string]string
		logged    string
	}{
		{"daemon, registry wrong password", config("json_schema", reg.URL()), with("IDEMSINK_SCHEMA_REGISTRY_PASSWORD", srWrong), "schema registry unavailable"},
		{"daemon, registry unreachable, password in URL", config("json_schema", "http://sr:"+srInURL+"@127.0.0.1:1"), with(), "schema registry unavailable"},
	} {
		t.Run(c.name, func(t *testing.T) {
			d := startRun(t, c.cfg, c.env, "-log-level", "debug")
			waittest.For(t, 60*time.Second, "run to log "+c.logged, func() bool {
				return d.running(t) && strings.Contains(d.stderr.String(), c.logged)
			})
			err := d.stop()
			if err != nil {
				checkNoSecret(t, "the error", err.Error())
			}
			log := d.stderr.String()
			checkNoSecret(t, "the log", log)
			for _, l := range strings.Split(log, "\n") {
				if strings.Contains(l, c.logged) {
					t.Logf("logged: %s", l)
					break
				}
			}
		})
	}
}
