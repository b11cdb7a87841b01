package config

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// pemFiles writes a self-signed certificate, its key, a second key that
// does not match it, and a file of garbage into a temporary directory.
func pemFiles(t *testing.T) (dir string) {
	t.Helper()
	dir = t.TempDir()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name, typ string, b []byte) {
		if err := os.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: b}), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	kb, _ := x509.MarshalPKCS8PrivateKey(key)
	ob, _ := x509.MarshalPKCS8PrivateKey(other)
	write("cert.pem", "CERTIFICATE", der)
	write("key.pem", "PRIVATE KEY", kb)
	write("other-key.pem", "PRIVATE KEY", ob)
	if err := os.WriteFile(filepath.Join(dir, "garbage.pem"), []byte("not pem\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "empty"), []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "token"), []byte("eyJhbGciOiJub25lIn0.e30.\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

// Every tls and sasl mistake, with the exact error it gives. Files are
// read and parsed at load, so a missing or bad one stops the start.
func TestBadSecurityConfigs(t *testing.T) {
	d := pemFiles(t)
	f := func(name string) string { return filepath.Join(d, name) }
	for _, tc := range []struct {
		name, yaml string
		want       []string // every error line, in order
	}{
		{"ca file missing", "tls: {ca_file: " + f("nope.pem") + "}",
			[]string{"tls.ca_file: open " + f("nope.pem") + ": no such file or directory"}},
		{"ca file not PEM", "tls: {ca_file: " + f("garbage.pem") + "}",
			[]string{"tls.ca_file: " + f("garbage.pem") + ": not PEM after 0 certificate(s)"}},
		{"ca file empty", "tls: {ca_file: " + f("empty") + "}",
			[]string{"tls.ca_file: " + f("empty") + " holds no PEM certificate"}},
		{"ca file holds a key", "tls: {ca_file: " + f("key.pem") + "}",
			[]string{"tls.ca_file: " + f("key.pem") + ": PEM block 1 is a PRIVATE KEY, not a CERTIFICATE"}},
		{"cert without key", "tls: {cert_file: " + f("cert.pem") + "}",
			[]string{"tls.key_file: required with cert_file"}},
		{"key without cert", "tls: {key_file: " + f("key.pem") + "}",
			[]string{"tls.cert_file: required with key_file"}},
		{"cert file missing", "tls: {cert_file: " + f("nope.pem") + ", key_file: " + f("key.pem") + "}",
			[]string{"tls.cert_file: open " + f("nope.pem") + ": no such file or directory"}},
		{"key file missing", "tls: {cert_file: " + f("cert.pem") + ", key_file: " + f("nope.pem") + "}",
			[]string{"tls.key_file: open " + f("nope.pem") + ": no such file or directory"}},
		{"key does not match cert", "tls: {cert_file: " + f("cert.pem") + ", key_file: " + f("other-key.pem") + "}",
			[]string{"tls.cert_file: " + f("cert.pem") + " and " + f("other-key.pem") + ": tls: private key does not match public key"}},
		{"key not PEM", "tls: {cert_file: " + f("cert.pem") + ", key_file: " + f("garbage.pem") + "}",
			[]string{"tls.cert_file: " + f("cert.pem") + " and " + f("garbage.pem") + ": tls: failed to find any PEM data in key input"}},
		{"cert and key swapped", "tls: {cert_file: " + f("key.pem") + ", key_file: " + f("cert.pem") + "}",
			[]string{"tls.cert_file: " + f("key.pem") + " and " + f("cert.pem") + ": tls: failed to find certificate PEM data in certificate input, but did find a private key; PEM inputs may have been switched"}},

		{"oauthbearer without a token source", "sasl: {mechanism: oauthbearer}",
			[]string{"sasl.oauth: oauthbearer needs token_file or token_url"}},
		{"oauthbearer with a user", "sasl: {mechanism: oauthbearer, user: u, oauth: {token_file: " + f("token") + "}}",
			[]string{"sasl.user: not used by oauthbearer (the token names the principal)"}},
		{"token file missing", "sasl: {mechanism: oauthbearer, oauth: {token_file: " + f("nope") + "}}",
			[]string{"sasl.oauth.token_file: open " + f("nope") + ": no such file or directory"}},
		{"token file empty", "sasl: {mechanism: oauthbearer, oauth: {token_file: " + f("empty") + "}}",
			[]string{"sasl.oauth.token_file: " + f("empty") + " is empty"}},
		{"token file and token url", "sasl: {mechanism: oauthbearer, oauth: {token_file: " + f("token") + ", token_url: https://idp/token}}",
			[]string{"sasl.oauth: token_file and token_url (client_id, client_secret, scopes) exclude each other"}},
		{"client credentials incomplete", "sasl: {mechanism: oauthbearer, oauth: {token_url: idp/token}}",
			[]string{`sasl.oauth.token_url: "idp/token" is not an http(s) URL`,
				"sasl.oauth.client_id: required with token_url",
				"sasl.oauth.client_secret: required with token_url (or set IDEMSINK_SASL_CLIENT_SECRET)"}},
		{"oauth settings under scram", "sasl: {mechanism: scram-sha-256, user: u, oauth: {token_file: " + f("token") + "}}",
			[]string{"sasl.oauth: only for mechanism oauthbearer"}},
		{"aws_msk_iam without tls", "sasl: {mechanism: aws_msk_iam}",
			[]string{"sasl.mechanism: aws_msk_iam needs tls (MSK's IAM listener is TLS only)"}},
		{"aws_msk_iam with a user", "tls: true\nsasl: {mechanism: aws_msk_iam, user: u}",
			[]string{"sasl.user: not used by aws_msk_iam (credentials come from the AWS environment)"}},
		{"mechanism spelt as Kafka does", "sasl: {mechanism: OAUTHBEARER}",
			[]string{`sasl.mechanism: "OAUTHBEARER" is not one of plain, scram-sha-256, scram-sha-512, oauthbearer, aws_msk_iam`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(strings.Replace(base, "group: g\n", "group: g\n"+tc.yaml+"\n", 1)), nil)
			want := "invalid config: " + strings.Join(tc.want, "\n")
			if err == nil || err.Error() != want {
				t.Errorf("Parse error:\n%v\nwant:\n%s", err, want)
			}
		})
	}
}

// tls takes the old bool and the new mapping; the mapping is as strict as
// the rest of the file.
func TestTLSForms(t *testing.T) {
	d := pemFiles(t)
	for _, tc := range []struct {
		name, yaml string
		want       TLS
		err        string
	}{
		{"absent", "", TLS{}, ""},
		{"true", "tls: true", TLS{Enabled: true}, ""},
		{"false", "tls: false", TLS{}, ""},
		{"mapping", "tls: {ca_file: " + d + "/cert.pem, cert_file: " + d + "/cert.pem, key_file: " + d + "/key.pem, server_name: kafka.internal}",
			TLS{Enabled: true, CAFile: d + "/cert.pem", CertFile: d + "/cert.pem", KeyFile: d + "/key.pem", ServerName: "kafka.internal"}, ""},
		{"empty mapping", "tls: {}", TLS{Enabled: true}, ""},
		{"unknown key", "tls:\n  ca_file: x\n  insecure_skip_verify: true", TLS{},
			`parse config: line 6: tls: unknown key "insecure_skip_verify" (want ca_file, cert_file, key_file, server_name)`},
		{"not a bool", "tls: yes please", TLS{},
			`parse config: line 4: tls: "yes please" is not true, false or a mapping of ca_file, cert_file, key_file, server_name`},
		{"a list", "tls: [a]", TLS{},
			"parse config: line 4: tls: want true, false or a mapping of ca_file, cert_file, key_file, server_name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse([]byte(strings.Replace(base, "group: g\n", "group: g\n"+tc.yaml+"\n", 1)), nil)
			if tc.err != "" {
				if err == nil || err.Error() != tc.err {
					t.Fatalf("Parse error:\n%v\nwant:\n%s", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.TLS != tc.want {
				t.Errorf("tls %+v, want %+v", c.TLS, tc.want)
			}
		})
	}
}

// The client secret comes from the environment like the other secrets.
func TestClientSecretFromEnv(t *testing.T) {
	y := strings.Replace(base, "group: g\n", "group: g\nsasl: {mechanism: oauthbearer, oauth: {token_url: 'https://idp/token', client_id: idemsink, scopes: [kafka]}}\n", 1)
	c, err := Parse([]byte(y), func(k string) string {
		if k == EnvSASLClientSecret {
			return "from-env"
		}
		return ""
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := c.SASL.OAuth.ClientSecret; got != "from-env" {
		t.Errorf("client secret %q, want from-env", got)
	}
}
