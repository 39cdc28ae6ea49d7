package main

import (
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/mqtt-operator/mqtt-operator/internal/pki"
)

// benchPKI is what both brokers serve and what the clients trust: a CA and
// a server certificate for 127.0.0.1 and localhost, issued the way the
// operator issues a broker's (internal/pki: ECDSA P-256).
type benchPKI struct {
	caFile, certFile, keyFile string
	pool                      *x509.CertPool
}

func newPKI(dir string) (*benchPKI, error) {
	now := time.Now()
	ca, err := pki.NewCA("bench-tls CA", now, 24*time.Hour)
	if err != nil {
		return nil, err
	}
	pair, err := ca.Issue(pki.Request{CommonName: "localhost", DNSNames: []string{"localhost"},
		IPs: []net.IP{net.IPv4(127, 0, 0, 1)}, Validity: 24 * time.Hour}, now)
	if err != nil {
		return nil, err
	}
	p := &benchPKI{
		caFile:   filepath.Join(dir, "ca.crt"),
		certFile: filepath.Join(dir, "tls.crt"),
		keyFile:  filepath.Join(dir, "tls.key"),
		pool:     x509.NewCertPool(),
	}
	p.pool.AddCert(ca.Cert)
	for path, data := range map[string][]byte{p.caFile: ca.CertPEM, p.certFile: pair.CertPEM, p.keyFile: pair.KeyPEM} {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			return nil, err
		}
	}
	return p, nil
}
