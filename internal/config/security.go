package config

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net/url"
	"os"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Environment variables for the Kafka security secrets, beside
// EnvSASLPassword.
const (
	// EnvSASLClientSecret overrides sasl.oauth.client_secret.
	EnvSASLClientSecret = "IDEMSINK_SASL_CLIENT_SECRET"
)

// SASL mechanisms, as spelt in sasl.mechanism.
var SASLMechanisms = []string{"plain", "scram-sha-256", "scram-sha-512", "oauthbearer", "aws_msk_iam"}

// SASL configures SASL authentication to the brokers.
type SASL struct {
	// Mechanism is one of SASLMechanisms.
	Mechanism string `yaml:"mechanism"`
	// User and Password are plain's and scram's credentials; prefer
	// IDEMSINK_SASL_PASSWORD for the password.
	User     string `yaml:"user"`
	Password string `yaml:"password"`
	// OAuth says where oauthbearer's tokens come from.
	OAuth *OAuth `yaml:"oauth"`
}

// OAuth is where OAUTHBEARER tokens come from: a file that something else
// keeps fresh (a sidecar, a Kubernetes projected token), re-read at every
// authentication, or the OAuth 2.0 client credentials flow against a token
// endpoint, its tokens cached until shortly before they expire.
type OAuth struct {
	TokenFile string `yaml:"token_file"`

	TokenURL string `yaml:"token_url"`
	ClientID string `yaml:"client_id"`
	// ClientSecret: prefer IDEMSINK_SASL_CLIENT_SECRET.
	ClientSecret string   `yaml:"client_secret"`
	Scopes       []string `yaml:"scopes"`

	// Extensions are SASL extensions sent with the token (Confluent Cloud's
	// logicalCluster and identityPoolId).
	Extensions map[string]string `yaml:"extensions"`
}

// TLS configures TLS to the brokers. `tls: true` verifies the brokers
// against the system's roots; a mapping turns TLS on and may name a CA
// bundle, a client certificate and key (mutual TLS), and the name to
// verify the brokers' certificates against.
type TLS struct {
	// Enabled is set by `tls: true` or by a mapping.
	Enabled bool `yaml:"-"`
	// CAFile is a PEM bundle of the CAs that sign the brokers' certificates,
	// instead of the system's roots.
	CAFile string `yaml:"ca_file"`
	// CertFile and KeyFile are the client's PEM certificate (chain) and
	// private key, both or neither.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ServerName is the name the brokers' certificates must carry, when it
	// is not the host dialled.
	ServerName string `yaml:"server_name"`
}

var tlsKeys = []string{"ca_file", "cert_file", "key_file", "server_name"}

// UnmarshalYAML takes true, false or a mapping of tlsKeys. The mapping's
// keys are checked here: a custom unmarshaler's node.Decode does not
// inherit the strict decoder's KnownFields.
func (t *TLS) UnmarshalYAML(n *yaml.Node) error {
	switch n.Kind {
	case yaml.ScalarNode:
		var on bool
		if err := n.Decode(&on); err != nil {
			return fmt.Errorf("line %d: tls: %q is not true, false or a mapping of %s", n.Line, n.Value, strings.Join(tlsKeys, ", "))
		}
		*t = TLS{Enabled: on}
		return nil
	case yaml.MappingNode:
		for i := 0; i < len(n.Content); i += 2 {
			if k := n.Content[i]; !slices.Contains(tlsKeys, k.Value) {
				return fmt.Errorf("line %d: tls: unknown key %q (want %s)", k.Line, k.Value, strings.Join(tlsKeys, ", "))
			}
		}
		type plain TLS
		var p plain
		if err := n.Decode(&p); err != nil {
			return err
		}
		*t = TLS(p)
		t.Enabled = true
		return nil
	}
	return fmt.Errorf("line %d: tls: want true, false or a mapping of %s", n.Line, strings.Join(tlsKeys, ", "))
}

// validateSecurity checks sasl and tls. The files tls and sasl.oauth name
// are read and parsed here, so that a missing or bad one stops the start
// rather than the first connection.
func (c *Config) validateSecurity(bad func(string, ...any)) {
	if s := c.SASL; s != nil {
		if !slices.Contains(SASLMechanisms, s.Mechanism) {
			bad("sasl.mechanism: %q is not one of %s", s.Mechanism, strings.Join(SASLMechanisms, ", "))
		}
		switch s.Mechanism {
		case "plain", "scram-sha-256", "scram-sha-512":
			if s.User == "" {
				bad("sasl.user: required")
			}
			if s.OAuth != nil {
				bad("sasl.oauth: only for mechanism oauthbearer")
			}
		case "oauthbearer":
			if s.User != "" || s.Password != "" {
				bad("sasl.user: not used by oauthbearer (the token names the principal)")
			}
			s.OAuth.validate(bad)
		case "aws_msk_iam":
			// Credentials come from the AWS SDK's default chain; the
			// cluster's authorizer checks them, over TLS only.
			if s.User != "" || s.Password != "" {
				bad("sasl.user: not used by aws_msk_iam (credentials come from the AWS environment)")
			}
			if s.OAuth != nil {
				bad("sasl.oauth: only for mechanism oauthbearer")
			}
			if !c.TLS.Enabled {
				bad("sasl.mechanism: aws_msk_iam needs tls (MSK's IAM listener is TLS only)")
			}
		}
	}
	c.TLS.validate(bad)
}

func (o *OAuth) validate(bad func(string, ...any)) {
	if o == nil || o.TokenFile == "" && o.TokenURL == "" {
		bad("sasl.oauth: oauthbearer needs token_file or token_url")
		return
	}
	if o.TokenFile != "" {
		if o.TokenURL != "" || o.ClientID != "" || o.ClientSecret != "" || len(o.Scopes) > 0 {
			bad("sasl.oauth: token_file and token_url (client_id, client_secret, scopes) exclude each other")
		}
		if b, err := os.ReadFile(o.TokenFile); err != nil {
			bad("sasl.oauth.token_file: %v", err)
		} else if strings.TrimSpace(string(b)) == "" {
			bad("sasl.oauth.token_file: %s is empty", o.TokenFile)
		}
		return
	}
	if u, err := url.Parse(o.TokenURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		bad("sasl.oauth.token_url: %q is not an http(s) URL", o.TokenURL)
	}
	if o.ClientID == "" {
		bad("sasl.oauth.client_id: required with token_url")
	}
	if o.ClientSecret == "" {
		bad("sasl.oauth.client_secret: required with token_url (or set %s)", EnvSASLClientSecret)
	}
}

func (t *TLS) validate(bad func(string, ...any)) {
	if !t.Enabled {
		return
	}
	if t.CAFile != "" {
		if _, err := LoadCA(t.CAFile); err != nil {
			bad("tls.ca_file: %v", err)
		}
	}
	switch {
	case t.CertFile != "" && t.KeyFile == "":
		bad("tls.key_file: required with cert_file")
	case t.KeyFile != "" && t.CertFile == "":
		bad("tls.cert_file: required with key_file")
	case t.CertFile != "":
		errC, errK := readable(t.CertFile), readable(t.KeyFile)
		if errC != nil {
			bad("tls.cert_file: %v", errC)
		}
		if errK != nil {
			bad("tls.key_file: %v", errK)
		}
		if errC == nil && errK == nil {
			if _, err := LoadKeyPair(t.CertFile, t.KeyFile); err != nil {
				bad("tls.cert_file: %v", err)
			}
		}
	}
}

// LoadCA reads a PEM bundle of CA certificates. It fails on a file with
// anything but certificates in it, or none.
func LoadCA(path string) (*x509.CertPool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	n := 0
	for rest := b; ; {
		var blk *pem.Block
		if blk, rest = pem.Decode(rest); blk == nil {
			if strings.TrimSpace(string(rest)) != "" {
				return nil, fmt.Errorf("%s: not PEM after %d certificate(s)", path, n)
			}
			break
		}
		if blk.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("%s: PEM block %d is a %s, not a CERTIFICATE", path, n+1, blk.Type)
		}
		cert, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: certificate %d: %w", path, n+1, err)
		}
		pool.AddCert(cert)
		n++
	}
	if n == 0 {
		return nil, fmt.Errorf("%s holds no PEM certificate", path)
	}
	return pool, nil
}

// LoadKeyPair reads a PEM client certificate (chain) and its private key.
func LoadKeyPair(certFile, keyFile string) (tls.Certificate, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("%s and %s: %w", certFile, keyFile, err)
	}
	return cert, nil
}

// readable opens and closes path, to name the one of two files that
// cannot be read.
func readable(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	return f.Close()
}
