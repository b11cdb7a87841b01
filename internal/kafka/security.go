package kafka

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/twmb/franz-go/pkg/sasl"
	awssasl "github.com/twmb/franz-go/pkg/sasl/aws"
	"github.com/twmb/franz-go/pkg/sasl/oauth"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/idemsink/idemsink/internal/config"
)

// dialTimeout is franz-go's default, which a custom dialer replaces.
const dialTimeout = 10 * time.Second

// tlsDialer dials the brokers with TLS as configured. The CA bundle and
// the client certificate are read at every dial, not once: a certificate
// renewed on disk (cert-manager, Vault agent) is used from the next
// connection on, without a restart. Config.Validate has read them once
// already, so a bad file at start stops the start.
func tlsDialer(t config.TLS) func(ctx context.Context, network, host string) (net.Conn, error) {
	nd := &net.Dialer{Timeout: dialTimeout}
	return func(ctx context.Context, network, host string) (net.Conn, error) {
		c := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: t.ServerName}
		if c.ServerName == "" {
			server, _, err := net.SplitHostPort(host)
			if err != nil {
				return nil, fmt.Errorf("tls: split host:port %q: %w", host, err)
			}
			c.ServerName = server
		}
		if t.CAFile != "" {
			pool, err := config.LoadCA(t.CAFile)
			if err != nil {
				return nil, fmt.Errorf("tls.ca_file: %w", err)
			}
			c.RootCAs = pool
		}
		if t.CertFile != "" {
			cert, err := config.LoadKeyPair(t.CertFile, t.KeyFile)
			if err != nil {
				return nil, fmt.Errorf("tls.cert_file: %w", err)
			}
			c.Certificates = []tls.Certificate{cert}
		}
		return (&tls.Dialer{NetDialer: nd, Config: c}).DialContext(ctx, network, host)
	}
}

// mechanism returns the configured SASL mechanism; Config.Validate has
// checked its settings.
func mechanism(s *config.SASL) sasl.Mechanism {
	switch s.Mechanism {
	case "scram-sha-256":
		return scram.Auth{User: s.User, Pass: s.Password}.AsSha256Mechanism()
	case "scram-sha-512":
		return scram.Auth{User: s.User, Pass: s.Password}.AsSha512Mechanism()
	case "oauthbearer":
		return oauth.Oauth(tokens(s.OAuth))
	case "aws_msk_iam":
		return awssasl.ManagedStreamingIAM(awsCredentials())
	}
	return plain.Auth{User: s.User, Pass: s.Password}.AsMechanism()
}

// tokenLeeway is how long before its expiry a cached client-credentials
// token is replaced: long enough that a session authenticated with it
// does not end at once.
const tokenLeeway = time.Minute

// tokens returns OAUTHBEARER's token source, which franz-go calls for
// every new connection and every re-authentication (KIP-368). A token
// file is read at every call, so that a token rotated on disk is the next
// one sent; client-credentials tokens are fetched from the endpoint and
// cached until tokenLeeway before they expire.
func tokens(o *config.OAuth) func(context.Context) (oauth.Auth, error) {
	if o.TokenFile != "" {
		return func(context.Context) (oauth.Auth, error) {
			b, err := os.ReadFile(o.TokenFile)
			if err != nil {
				return oauth.Auth{}, fmt.Errorf("sasl.oauth.token_file: %w", err)
			}
			tok := strings.TrimSpace(string(b))
			if tok == "" {
				return oauth.Auth{}, fmt.Errorf("sasl.oauth.token_file: %s is empty", o.TokenFile)
			}
			return oauth.Auth{Token: tok, Extensions: o.Extensions}, nil
		}
	}
	cc := &clientcredentials.Config{ClientID: o.ClientID, ClientSecret: o.ClientSecret, TokenURL: o.TokenURL, Scopes: o.Scopes}
	src := oauth2.ReuseTokenSourceWithExpiry(nil, fetcher{cc}, tokenLeeway)
	return func(context.Context) (oauth.Auth, error) {
		t, err := src.Token()
		if err != nil {
			return oauth.Auth{}, fmt.Errorf("sasl.oauth.token_url: %w", err)
		}
		return oauth.Auth{Token: t.AccessToken, Extensions: o.Extensions}, nil
	}
}

// fetcher asks the token endpoint for a new token at every call;
// oauth2.ReuseTokenSource caches in front of it.
type fetcher struct{ cc *clientcredentials.Config }

func (f fetcher) Token() (*oauth2.Token, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ctx = context.WithValue(ctx, oauth2.HTTPClient, &http.Client{Timeout: 30 * time.Second})
	return f.cc.Token(ctx)
}

// awsCredentials returns AWS_MSK_IAM's credentials from the AWS SDK's
// default chain: the AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and
// AWS_SESSION_TOKEN variables, AWS_PROFILE in the shared files, web
// identity (EKS IRSA), the ECS task role, the EC2 instance role. The SDK
// caches them and refreshes them before they expire. A chain that fails to
// load is tried again at the next authentication.
func awsCredentials() func(context.Context) (awssasl.Auth, error) {
	var (
		mu    sync.Mutex
		creds aws.CredentialsProvider
	)
	return func(ctx context.Context) (awssasl.Auth, error) {
		mu.Lock()
		if creds == nil {
			c, err := awsconfig.LoadDefaultConfig(ctx)
			if err != nil {
				mu.Unlock()
				return awssasl.Auth{}, fmt.Errorf("sasl aws_msk_iam: load AWS configuration: %w", err)
			}
			creds = c.Credentials
		}
		p := creds
		mu.Unlock()
		if p == nil {
			return awssasl.Auth{}, fmt.Errorf("sasl aws_msk_iam: no AWS credentials found")
		}
		v, err := p.Retrieve(ctx)
		if err != nil {
			return awssasl.Auth{}, fmt.Errorf("sasl aws_msk_iam: AWS credentials: %w", err)
		}
		return awssasl.Auth{AccessKey: v.AccessKeyID, SecretKey: v.SecretAccessKey, SessionToken: v.SessionToken, UserAgent: "idemsink"}, nil
	}
}
