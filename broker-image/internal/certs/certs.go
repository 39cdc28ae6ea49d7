// Package certs serves the broker's TLS certificate, and the CA certificates
// client certificates must chain to, and replaces them in place when the
// mounted files change. New handshakes get the new files; connections already
// established keep what they were verified with, so a rotation drops nobody.
// A pair that does not load (half-written files, a key that does not match,
// an expired certificate) or a CA file that does not parse is refused and the
// last good one stays in use.
package certs

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mqtt-operator/mqtt-operator/broker-image/internal/filewatch"
)

// Store holds the certificate and client CAs in use.
type Store struct {
	certFile, keyFile string
	clientCAFile      string // "" when clients log in with passwords only
	now               func() time.Time

	mu        sync.Mutex     // serialises reloads
	lastPEM   []byte         // cert+key bytes of the pair in use, to skip no-op reloads
	lastCAPEM []byte         // bytes of the client CA file in use
	clientCAs *x509.CertPool // nil without a client CA file
	current   atomic.Pointer[tls.Certificate]
	// config is what every new handshake uses, rebuilt whenever the pair or
	// the client CAs change, so one handshake never sees half of a reload.
	config atomic.Pointer[tls.Config]

	ReloadsOK, ReloadsFailed atomic.Uint64
}

// Load reads the pair and, when clientCAFile is not empty, the CA
// certificates client certificates must chain to. The broker does not start
// without valid ones.
func Load(certFile, keyFile, clientCAFile string) (*Store, error) {
	s := &Store{certFile: certFile, keyFile: keyFile, clientCAFile: clientCAFile, now: time.Now}
	if _, err := s.Reload(); err != nil {
		return nil, err
	}
	return s, nil
}

// Reload reads the files again and switches to those that hold something
// valid and different from what is in use. The pair and the CA file are
// judged apart: they may come from different volumes, and a broken one must
// not hold back a good renewal of the other. It reports whether anything
// switched, and every file it refused.
func (s *Store) Reload() (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	// One coherent read: a Secret update swaps all three files at once, and
	// reading the certificate before the swap and the key after it would
	// refuse a good renewal as a mismatched pair.
	data, errs := filewatch.ReadAll(s.Files()...)
	pairChanged, pairErr := s.reloadPair(data[0], errs[0], data[1], errs[1])
	var caChanged bool
	var caErr error
	if s.clientCAFile != "" {
		caChanged, caErr = s.reloadClientCAs(data[2], errs[2])
	}
	changed := pairChanged || caChanged
	if changed {
		s.config.Store(s.handshakeConfig())
		s.ReloadsOK.Add(1)
	}
	err := errors.Join(pairErr, caErr)
	if err != nil {
		s.ReloadsFailed.Add(1)
	}
	return changed, err
}

func (s *Store) reloadPair(certPEM []byte, certErr error, keyPEM []byte, keyErr error) (bool, error) {
	if certErr != nil {
		return false, fmt.Errorf("reading TLS certificate: %w", certErr)
	}
	if keyErr != nil {
		return false, fmt.Errorf("reading TLS key: %w", keyErr)
	}
	joined := append(append([]byte{}, certPEM...), keyPEM...)
	if s.current.Load() != nil && bytes.Equal(joined, s.lastPEM) {
		return false, nil
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		// The error names what is wrong (no PEM, key mismatch) and never
		// includes key material.
		return false, fmt.Errorf("loading TLS key pair from %s and %s: %w", s.certFile, s.keyFile, err)
	}
	if pair.Leaf == nil {
		if pair.Leaf, err = x509.ParseCertificate(pair.Certificate[0]); err != nil {
			return false, fmt.Errorf("parsing TLS certificate: %w", err)
		}
	}
	if now := s.now(); now.After(pair.Leaf.NotAfter) {
		return false, fmt.Errorf("TLS certificate expired at %s", pair.Leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	s.current.Store(&pair)
	s.lastPEM = joined
	return true, nil
}

func (s *Store) reloadClientCAs(data []byte, readErr error) (bool, error) {
	if readErr != nil {
		return false, fmt.Errorf("reading client CA file: %w", readErr)
	}
	if s.clientCAs != nil && bytes.Equal(data, s.lastCAPEM) {
		return false, nil
	}
	pool, err := parseCAs(data)
	if err != nil {
		return false, fmt.Errorf("client CA file %s: %w", s.clientCAFile, err)
	}
	s.clientCAs, s.lastCAPEM = pool, data
	return true, nil
}

// parseCAs reads PEM CA certificates strictly: at least one, every block a
// certificate that parses. x509.CertPool.AppendCertsFromPEM would skip what
// it cannot read, so a half-written file would silently drop the CA that
// clients chain to, and a CA file pointed at the wrong file (a key, say)
// would trust nothing without a word.
func parseCAs(data []byte) (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	n := 0
	for rest := data; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			// Text around the blocks is allowed (bundles carry comments);
			// a block that starts but does not decode is a truncated file.
			if bytes.Contains(rest, []byte("-----BEGIN")) {
				return nil, fmt.Errorf("PEM block %d does not decode (truncated file?)", n+1)
			}
			break
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("PEM block %d is a %q, want CERTIFICATE", n+1, block.Type)
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d: %w", n+1, err)
		}
		pool.AddCert(cert)
		n++
	}
	if n == 0 {
		return nil, errors.New("no PEM certificate in it")
	}
	return pool, nil
}

// handshakeConfig builds the settings of the handshakes from now on: the
// pair in use and, with a client CA, a request for a client certificate that
// is verified when given. Clients without one still complete the handshake
// and log in with a password.
func (s *Store) handshakeConfig() *tls.Config {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{*s.current.Load()}}
	if s.clientCAs != nil {
		cfg.ClientCAs = s.clientCAs
		cfg.ClientAuth = tls.VerifyClientCertIfGiven
	}
	return cfg
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

// getConfigForClient is the tls.Config callback that hands every handshake
// the settings of that moment.
func (s *Store) getConfigForClient(*tls.ClientHelloInfo) (*tls.Config, error) {
	return s.config.Load(), nil
}

// NotAfter is the expiry of the certificate in use.
func (s *Store) NotAfter() time.Time {
	if c := s.current.Load(); c != nil && c.Leaf != nil {
		return c.Leaf.NotAfter
	}
	return time.Time{}
}

// Files are the paths the store reads, for the caller's file watch.
func (s *Store) Files() []string {
	files := []string{s.certFile, s.keyFile}
	if s.clientCAFile != "" {
		files = append(files, s.clientCAFile)
	}
	return files
}

// ServerConfig returns the TLS settings of the broker's listeners: TLS 1.2 or
// later, the certificate of the moment and, when configured, client
// certificates verified against the CAs of the moment. Session tickets stay
// on: they are encrypted with this config's keys, which reloads leave alone,
// and Go verifies a resumed session's client certificate chain against the
// CAs in use at resumption, so a replaced CA cannot be bypassed that way.
func (s *Store) ServerConfig() *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: s.GetCertificate, GetConfigForClient: s.getConfigForClient}
}
