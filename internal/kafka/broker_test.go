//go:build realkafka

// The tests of this file need the real broker of make test-kafka
// (scripts/test-kafka builds them with -tags realkafka); without its
// listeners they fail.

package kafka

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/idemsink/idemsink/internal/config"
)

// A broker without AWS_MSK_IAM (the test broker's OAUTHBEARER listener)
// refuses the mechanism. franz-go drops the list of mechanisms the broker
// offers, so the error cannot name them.
func TestAWSMSKIAMRefusedByBroker(t *testing.T) {
	brokers := os.Getenv("KAFKA_OAUTH_BROKERS")
	if brokers == "" {
		t.Fatal("KAFKA_OAUTH_BROKERS is not set: start the broker with KAFKA_SECURE=1 scripts/kafka start (scripts/test-kafka does)")
	}
	awsEnv(t, true)
	// Not through config.Validate, which wants TLS for aws_msk_iam: the
	// test broker's SASL listener is plaintext.
	adm, closeAdm, err := NewAdmin(&config.Config{Brokers: strings.Split(brokers, ","), SASL: &config.SASL{Mechanism: "aws_msk_iam"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer closeAdm()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err = adm.ListTopics(ctx)
	t.Logf("aws_msk_iam against an OAUTHBEARER listener: %v", err)
	if err == nil || !strings.Contains(err.Error(), "UNSUPPORTED_SASL_MECHANISM: The broker does not support the requested SASL mechanism") {
		t.Errorf("error %v, want UNSUPPORTED_SASL_MECHANISM", err)
	}
}
