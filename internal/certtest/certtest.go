// Package certtest makes the certificates of TLS tests: a CA, and server
// and client certificates it signs, written as the PEM files idemsink and
// Kafka's PEM key stores take.
package certtest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// CA is a certificate authority of a test.
type CA struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
}

// NewCA returns a new self-signed CA named cn, valid for a day.
func NewCA(cn string) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := template(cn)
	tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
	tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("create CA %s: %w", cn, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, Key: key}, nil
}

// LoadCA reads a CA written by WriteCA.
func LoadCA(certFile, keyFile string) (*CA, error) {
	cb, err := os.ReadFile(certFile)
	if err != nil {
		return nil, err
	}
	kb, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, err
	}
	cblk, _ := pem.Decode(cb)
	kblk, _ := pem.Decode(kb)
	if cblk == nil || kblk == nil {
		return nil, errors.New("load CA: no PEM")
	}
	cert, err := x509.ParseCertificate(cblk.Bytes)
	if err != nil {
		return nil, err
	}
	key, err := x509.ParsePKCS8PrivateKey(kblk.Bytes)
	if err != nil {
		return nil, err
	}
	ek, ok := key.(*ecdsa.PrivateKey)
	if !ok {
		return nil, errors.New("load CA: not an ECDSA key")
	}
	return &CA{Cert: cert, Key: ek}, nil
}

func template(cn string) *x509.Certificate {
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	return &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour)}
}

// Issue returns a certificate and its key, both PEM, for cn: a server
// certificate for hosts (names and IP addresses) or, with no hosts, a
// client certificate.
func (ca *CA) Issue(cn string, hosts ...string) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := template(cn)
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	if len(hosts) > 0 {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		return nil, nil, fmt.Errorf("issue %s: %w", cn, err)
	}
	kb, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb}), nil
}

// CertPEM is the CA's certificate, PEM.
func (ca *CA) CertPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Cert.Raw})
}

// WriteCA writes the CA's certificate and key as ca.pem and ca-key.pem.
func (ca *CA) WriteCA(dir string) error {
	kb, err := x509.MarshalPKCS8PrivateKey(ca.Key)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "ca.pem"), ca.CertPEM(), 0o600); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "ca-key.pem"), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb}), 0o600)
}

// WriteBroker writes what scripts/kafka's TLS listener needs into dir: a
// new CA (ca.pem, ca-key.pem, from which a test issues client
// certificates) and a broker key store for 127.0.0.1 and localhost
// (broker.pem: key then certificate, Kafka's PEM key store file).
func WriteBroker(dir string) error {
	ca, err := NewCA("idemsink test CA")
	if err != nil {
		return err
	}
	if err := ca.WriteCA(dir); err != nil {
		return err
	}
	cert, key, err := ca.Issue("broker", "127.0.0.1", "localhost")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "broker.pem"), append(key, cert...), 0o600)
}

// Files is a CA of one test whose certificates are PEM files in the
// test's temporary directory: what a test hands to PostgreSQL, libpq-style
// connection strings and exporter-toolkit's web config.
type Files struct {
	// CertFile is the CA certificate.
	CertFile string
	ca       *CA
	dir      string
	t        testing.TB
}

// Pair is a certificate and its private key, as PEM files.
type Pair struct {
	CertFile, KeyFile string
}

// New creates a CA named name for t and writes its certificate.
func New(t testing.TB, name string) *Files {
	t.Helper()
	ca, err := NewCA(name)
	if err != nil {
		t.Fatal(err)
	}
	f := &Files{ca: ca, dir: t.TempDir(), t: t}
	f.CertFile = f.write(name+"-ca.crt", ca.CertPEM())
	return f
}

// Server issues a server certificate for 127.0.0.1, ::1 and localhost.
func (f *Files) Server(name string) Pair {
	f.t.Helper()
	return f.issue(name, "127.0.0.1", "::1", "localhost")
}

// Client issues a client certificate whose common name is user.
func (f *Files) Client(user string) Pair {
	f.t.Helper()
	return f.issue(user)
}

func (f *Files) issue(name string, hosts ...string) Pair {
	f.t.Helper()
	cert, key, err := f.ca.Issue(name, hosts...)
	if err != nil {
		f.t.Fatal(err)
	}
	return Pair{CertFile: f.write(name+".crt", cert), KeyFile: f.write(name+".key", key)}
}

// write writes a PEM file readable by its owner only: libpq and
// PostgreSQL refuse a private key that others can read.
func (f *Files) write(name string, pemBytes []byte) string {
	f.t.Helper()
	path := filepath.Join(f.dir, name)
	if err := os.WriteFile(path, pemBytes, 0o600); err != nil {
		f.t.Fatal(err)
	}
	return path
}
