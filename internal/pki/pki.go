// Package pki issues and checks the certificates the operator manages: one
// certificate authority per broker, the broker's server certificate and the
// client certificates of MQTTUsers that log in with one. Keys are ECDSA P-256:
// small, and the cheapest TLS handshake for the broker to serve.
//
// Every function takes the time it should consider "now"; nothing here reads
// the clock, so renewal and rollover are tested without waiting.
package pki

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"slices"
	"time"
)

// backdate is how far before "now" a certificate starts, so a node whose
// clock runs slightly behind the operator's still accepts it.
const backdate = 5 * time.Minute

// CA is a certificate authority that can sign.
type CA struct {
	Cert    *x509.Certificate
	Key     crypto.Signer
	CertPEM []byte
	KeyPEM  []byte
}

// Pair is an issued certificate and its key, PEM-encoded.
type Pair struct {
	CertPEM, KeyPEM []byte
	Cert            *x509.Certificate
}

// NewCA creates a self-signed CA valid for validity from now.
func NewCA(commonName string, now time.Time, validity time.Duration) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating a CA key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: commonName, Organization: []string{"mqtt-operator"}},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(validity),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("signing the CA certificate: %w", err)
	}
	cert, _ := x509.ParseCertificate(der) // just created
	keyPEM, err := encodeKey(key)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, Key: key, CertPEM: encodeCert(der), KeyPEM: keyPEM}, nil
}

// ParseCA loads a CA from PEM, checking that the key matches and the
// certificate may sign.
func ParseCA(certPEM, keyPEM []byte) (*CA, error) {
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("loading the CA: %w", err)
	}
	cert, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("parsing the CA certificate: %w", err)
	}
	if !cert.IsCA || cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, errors.New("the CA certificate is not allowed to sign certificates")
	}
	signer, ok := pair.PrivateKey.(crypto.Signer)
	if !ok {
		return nil, errors.New("the CA key cannot sign")
	}
	return &CA{Cert: cert, Key: signer, CertPEM: certPEM, KeyPEM: keyPEM}, nil
}

// Request describes a certificate to issue.
type Request struct {
	CommonName string
	DNSNames   []string
	IPs        []net.IP
	// Client asks for a client-authentication certificate, otherwise a
	// server one.
	Client bool
	// Peer asks for a certificate good for both (a cluster route, which
	// either side may dial); it overrides Client.
	Peer     bool
	Validity time.Duration
}

// Issue signs a certificate for req with a fresh key. It never outlives the
// CA: a certificate valid longer than its issuer would fail anyway.
func (ca *CA) Issue(req Request, now time.Time) (*Pair, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating a key: %w", err)
	}
	usages := []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	switch {
	case req.Peer:
		usages = append(usages, x509.ExtKeyUsageClientAuth)
	case req.Client:
		usages = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	notAfter := now.Add(req.Validity)
	if notAfter.After(ca.Cert.NotAfter) {
		notAfter = ca.Cert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: req.CommonName},
		DNSNames:              req.DNSNames,
		IPAddresses:           req.IPs,
		NotBefore:             now.Add(-backdate),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           usages,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		return nil, fmt.Errorf("signing the certificate: %w", err)
	}
	cert, _ := x509.ParseCertificate(der) // just created
	keyPEM, err := encodeKey(key)
	if err != nil {
		return nil, err
	}
	return &Pair{CertPEM: encodeCert(der), KeyPEM: keyPEM, Cert: cert}, nil
}

// ParsePair loads a certificate and key from PEM and checks what a broker
// needs to serve it: the key matches, and the certificate is valid at now.
// Errors name the problem and never contain key material.
func ParsePair(certPEM, keyPEM []byte, now time.Time) (*x509.Certificate, error) {
	if len(bytes.TrimSpace(certPEM)) == 0 {
		return nil, errors.New("tls.crt is empty")
	}
	if len(bytes.TrimSpace(keyPEM)) == 0 {
		return nil, errors.New("tls.key is empty")
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("tls.crt and tls.key are not a usable pair: %w", err)
	}
	cert, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("tls.crt: %w", err)
	}
	switch {
	case now.Before(cert.NotBefore):
		return nil, fmt.Errorf("the certificate is not valid before %s", cert.NotBefore.UTC().Format(time.RFC3339))
	case now.After(cert.NotAfter):
		return nil, fmt.Errorf("the certificate expired at %s", cert.NotAfter.UTC().Format(time.RFC3339))
	}
	return cert, nil
}

// ParseCertificates decodes every CERTIFICATE block in data.
func ParseCertificates(data []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return out, nil
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parsing a certificate: %w", err)
		}
		out = append(out, cert)
	}
}

// ParseCertificate decodes the first certificate in data.
func ParseCertificate(data []byte) (*x509.Certificate, error) {
	certs, err := ParseCertificates(data)
	if err != nil {
		return nil, err
	}
	if len(certs) == 0 {
		return nil, errors.New("no PEM certificate found")
	}
	return certs[0], nil
}

// Bundle concatenates PEM certificates, skipping repeats, in order.
func Bundle(certs ...[]byte) []byte {
	var out []byte
	var seen [][]byte
	for _, c := range certs {
		c = bytes.TrimSpace(c)
		if len(c) == 0 || slices.ContainsFunc(seen, func(s []byte) bool { return bytes.Equal(s, c) }) {
			continue
		}
		seen = append(seen, c)
		out = append(append(out, c...), '\n')
	}
	return out
}

// SignedBy reports whether ca signed cert.
func SignedBy(cert, ca *x509.Certificate) bool {
	return cert.CheckSignatureFrom(ca) == nil
}

// DueForRenewal reports whether cert should be replaced at now: within
// renewBefore of its expiry (or past it).
func DueForRenewal(cert *x509.Certificate, renewBefore time.Duration, now time.Time) bool {
	return !now.Before(RenewalTime(cert, renewBefore))
}

// RenewalTime is when cert becomes due for renewal.
func RenewalTime(cert *x509.Certificate, renewBefore time.Duration) time.Time {
	return cert.NotAfter.Add(-renewBefore)
}

// Covers reports whether cert carries exactly the DNS names in want (in any
// order), so a changed Service or replica count reissues it.
func Covers(cert *x509.Certificate, want []string) bool {
	have := slices.Clone(cert.DNSNames)
	w := slices.Clone(want)
	slices.Sort(have)
	slices.Sort(w)
	return slices.Equal(slices.Compact(have), slices.Compact(w))
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127)) // crypto/rand does not fail on supported platforms
	return n.Add(n, big.NewInt(1))
}

func encodeCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func encodeKey(key *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encoding the key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}
