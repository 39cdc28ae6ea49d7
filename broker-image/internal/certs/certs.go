// Package certs serves the broker's TLS certificate and replaces it in place
// when the mounted files change. New handshakes get the new certificate;
// connections already established keep theirs, so a rotation drops nobody.
// A pair that does not load (half-written files, a key that does not match,
// an expired certificate) is refused and the last good one stays in use.
package certs

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Store holds the certificate in use.
type Store struct {
	certFile, keyFile string
	now               func() time.Time

	mu      sync.Mutex // serialises reloads
	lastPEM []byte     // cert+key bytes of the pair in use, to skip no-op reloads
	current atomic.Pointer[tls.Certificate]

	ReloadsOK, ReloadsFailed atomic.Uint64
}

// Load reads the pair; the broker does not start without a valid one.
func Load(certFile, keyFile string) (*Store, error) {
	s := &Store{certFile: certFile, keyFile: keyFile, now: time.Now}
	if _, err := s.Reload(); err != nil {
		return nil, err
	}
	return s, nil
}

// Reload reads the files again and switches to them if they hold a valid
// pair that differs from the one in use. It reports whether it switched.
func (s *Store) Reload() (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	certPEM, err := os.ReadFile(s.certFile)
	if err != nil {
		return false, s.failed(fmt.Errorf("reading TLS certificate: %w", err))
	}
	keyPEM, err := os.ReadFile(s.keyFile)
	if err != nil {
		return false, s.failed(fmt.Errorf("reading TLS key: %w", err))
	}
	joined := append(append([]byte{}, certPEM...), keyPEM...)
	if s.current.Load() != nil && bytes.Equal(joined, s.lastPEM) {
		return false, nil
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		// The error names what is wrong (no PEM, key mismatch) and never
		// includes key material.
		return false, s.failed(fmt.Errorf("loading TLS key pair from %s and %s: %w", s.certFile, s.keyFile, err))
	}
	if pair.Leaf == nil {
		if pair.Leaf, err = x509.ParseCertificate(pair.Certificate[0]); err != nil {
			return false, s.failed(fmt.Errorf("parsing TLS certificate: %w", err))
		}
	}
	if now := s.now(); now.After(pair.Leaf.NotAfter) {
		return false, s.failed(fmt.Errorf("TLS certificate expired at %s", pair.Leaf.NotAfter.UTC().Format(time.RFC3339)))
	}
	s.current.Store(&pair)
	s.lastPEM = joined
	s.ReloadsOK.Add(1)
	return true, nil
}

func (s *Store) failed(err error) error {
	s.ReloadsFailed.Add(1)
	return err
}

// GetCertificate is the tls.Config callback: every handshake reads the pair
// in use at that moment.
func (s *Store) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	c := s.current.Load()
	if c == nil {
		return nil, errors.New("no TLS certificate loaded")
	}
	return c, nil
}

// NotAfter is the expiry of the certificate in use.
func (s *Store) NotAfter() time.Time {
	if c := s.current.Load(); c != nil && c.Leaf != nil {
		return c.Leaf.NotAfter
	}
	return time.Time{}
}

// Files are the paths the store reads, for the caller's file watch.
func (s *Store) Files() (certFile, keyFile string) { return s.certFile, s.keyFile }

// ServerConfig returns the TLS settings of the broker's listeners: TLS 1.2 or
// later and the certificate of the moment.
func (s *Store) ServerConfig() *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: s.GetCertificate}
}
