package kafka

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/idemsink/idemsink/internal/config"
)

// A token file is read at every authentication: what it holds now is what
// is sent.
func TestTokenFileReadEachTime(t *testing.T) {
	p := filepath.Join(t.TempDir(), "token")
	write := func(s string) {
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	fn := tokens(&config.OAuth{TokenFile: p, Extensions: map[string]string{"logicalCluster": "lkc-1"}})
	for _, tok := range []string{"first", "second"} {
		write(tok + "\n")
		a, err := fn(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if a.Token != tok || a.Extensions["logicalCluster"] != "lkc-1" {
			t.Errorf("token %q extensions %v, want %q and logicalCluster lkc-1", a.Token, a.Extensions, tok)
		}
	}
	write(" \n")
	if _, err := fn(context.Background()); err == nil || err.Error() != "sasl.oauth.token_file: "+p+" is empty" {
		t.Errorf("empty token file: %v", err)
	}
	if err := os.Remove(p); err != nil {
		t.Fatal(err)
	}
	if _, err := fn(context.Background()); err == nil || !strings.Contains(err.Error(), "sasl.oauth.token_file: open "+p) {
		t.Errorf("missing token file: %v", err)
	}
}

// Client-credentials tokens are fetched once and reused until a minute
// before they expire; one that lives less than that is fetched again.
func TestClientCredentialsCached(t *testing.T) {
	for _, tc := range []struct {
		expiresIn int
		want      int64
	}{{3600, 1}, {30, 3}} {
		t.Run(fmt.Sprintf("expires in %ds", tc.expiresIn), func(t *testing.T) {
			var n atomic.Int64
			idp := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if id, secret, _ := r.BasicAuth(); id != "client" || secret != "secret" {
					w.WriteHeader(http.StatusUnauthorized)
					return
				}
				n.Add(1)
				w.Header().Set("Content-Type", "application/json")
				fmt.Fprintf(w, `{"access_token":"tok-%d","token_type":"bearer","expires_in":%d}`, n.Load(), tc.expiresIn)
			}))
			defer idp.Close()
			fn := tokens(&config.OAuth{TokenURL: idp.URL, ClientID: "client", ClientSecret: "secret"})
			for range 3 {
				a, err := fn(context.Background())
				if err != nil {
					t.Fatal(err)
				}
				if a.Token != fmt.Sprintf("tok-%d", n.Load()) {
					t.Errorf("token %q, want the latest, tok-%d", a.Token, n.Load())
				}
			}
			if n.Load() != tc.want {
				t.Errorf("%d token requests for 3 authentications, want %d", n.Load(), tc.want)
			}
		})
	}
}

// awsEnv sets the AWS SDK's environment to static keys and no shared
// files (so that the machine's own never count).
func awsEnv(t *testing.T, keys bool) {
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	t.Setenv("AWS_REGION", "eu-west-1")
	t.Setenv("AWS_PROFILE", "")
	for k, v := range map[string]string{"AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": "secret-key", "AWS_SESSION_TOKEN": "session-token"} {
		if !keys {
			v = ""
		}
		t.Setenv(k, v)
	}
}

// challenge is the signed AWS_MSK_IAM first message for a broker.
func challenge(t *testing.T, host string) (map[string]string, error) {
	t.Helper()
	m := mechanism(&config.SASL{Mechanism: "aws_msk_iam"})
	if m.Name() != "AWS_MSK_IAM" {
		t.Fatalf("mechanism %s, want AWS_MSK_IAM", m.Name())
	}
	_, first, err := m.Authenticate(context.Background(), host)
	if err != nil {
		return nil, err
	}
	var msg map[string]string
	if err := json.Unmarshal(first, &msg); err != nil {
		t.Fatalf("AWS_MSK_IAM message %s: %v", first, err)
	}
	return msg, nil
}

// AWS_MSK_IAM signs with the keys and session token of the standard AWS
// variables, for the region in the MSK broker's name.
func TestAWSMSKIAMFromEnv(t *testing.T) {
	awsEnv(t, true)
	msg, err := challenge(t, "b-1.idemsink.abc123.c2.kafka.us-east-1.amazonaws.com:9098")
	if err != nil {
		t.Fatal(err)
	}
	if c := msg["x-amz-credential"]; !strings.HasPrefix(c, "AKIDEXAMPLE/") || !strings.HasSuffix(c, "/us-east-1/kafka-cluster/aws4_request") {
		t.Errorf("x-amz-credential %q, want AKIDEXAMPLE/<date>/us-east-1/kafka-cluster/aws4_request", c)
	}
	for k, want := range map[string]string{"action": "kafka-cluster:Connect", "x-amz-security-token": "session-token",
		"host": "b-1.idemsink.abc123.c2.kafka.us-east-1.amazonaws.com", "user-agent": "idemsink"} {
		if msg[k] != want {
			t.Errorf("%s %q, want %q", k, msg[k], want)
		}
	}
	if len(msg["x-amz-signature"]) != 64 {
		t.Errorf("x-amz-signature %q is not a SHA-256 HMAC", msg["x-amz-signature"])
	}
}

// Credentials from a named profile of the shared credentials file.
func TestAWSMSKIAMFromProfile(t *testing.T) {
	awsEnv(t, false)
	creds := filepath.Join(t.TempDir(), "credentials")
	if err := os.WriteFile(creds, []byte("[msk]\naws_access_key_id = AKIDPROFILE\naws_secret_access_key = profile-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", creds)
	t.Setenv("AWS_PROFILE", "msk")
	msg, err := challenge(t, "127.0.0.1:9098") // not an MSK name: the region comes from AWS_REGION
	if err != nil {
		t.Fatal(err)
	}
	if c := msg["x-amz-credential"]; !strings.HasPrefix(c, "AKIDPROFILE/") || !strings.Contains(c, "/eu-west-1/") {
		t.Errorf("x-amz-credential %q, want AKIDPROFILE/<date>/eu-west-1/...", c)
	}
	if _, ok := msg["x-amz-security-token"]; ok {
		t.Errorf("a session token was sent without one configured: %q", msg["x-amz-security-token"])
	}
}

// No credentials anywhere: the error says so, at authentication.
func TestAWSMSKIAMNoCredentials(t *testing.T) {
	awsEnv(t, false)
	_, err := challenge(t, "127.0.0.1:9098")
	if err == nil || !strings.Contains(err.Error(), "sasl aws_msk_iam: AWS credentials:") {
		t.Errorf("no credentials: %v", err)
	}
}
