package guard

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"testing"
	"time"
)

// certificate returns a certificate for cn signed by parent (self-signed when
// parent is nil), and its key.
func certificate(t *testing.T, cn string, parent *tls.Certificate, usage x509.ExtKeyUsage) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		ExtKeyUsage: []x509.ExtKeyUsage{usage}, KeyUsage: x509.KeyUsageDigitalSignature,
	}
	signer, signerKey := tmpl, any(key)
	if parent == nil {
		tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
		tmpl.KeyUsage |= x509.KeyUsageCertSign
	} else {
		signer, signerKey = parent.Leaf, parent.PrivateKey
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, &key.PublicKey, signerKey)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

// handshake runs a TLS handshake over a pipe and returns the server's end.
func handshake(t *testing.T, server, client *tls.Config) *tls.Conn {
	t.Helper()
	a, b := net.Pipe()
	t.Cleanup(func() { _ = a.Close(); _ = b.Close() })
	srv, cli := tls.Server(a, server), tls.Client(b, client)
	done := make(chan error, 1)
	go func() { done <- cli.Handshake() }()
	if err := srv.Handshake(); err != nil {
		t.Fatalf("server handshake: %v", err)
	}
	if err := <-done; err != nil {
		t.Fatalf("client handshake: %v", err)
	}
	return srv
}

func TestPeerCertificateIsTheVerifiedLeafOnly(t *testing.T) {
	ca := certificate(t, "ca", nil, x509.ExtKeyUsageAny)
	serverCert := certificate(t, "broker", &ca, x509.ExtKeyUsageServerAuth)
	clientCert := certificate(t, "sensor-7", &ca, x509.ExtKeyUsageClientAuth)
	pool := x509.NewCertPool()
	pool.AddCert(ca.Leaf)
	serverCfg := func(auth tls.ClientAuthType) *tls.Config {
		return &tls.Config{Certificates: []tls.Certificate{serverCert}, ClientCAs: pool, ClientAuth: auth}
	}
	clientCfg := func(cert *tls.Certificate) *tls.Config {
		cfg := &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}
		if cert != nil {
			cfg.Certificates = []tls.Certificate{*cert}
		}
		return cfg
	}

	verified := handshake(t, serverCfg(tls.VerifyClientCertIfGiven), clientCfg(&clientCert))
	// What mochi holds: the guard's wrapper, around a WebSocket for wss.
	for name, c := range map[string]net.Conn{
		"tls":       &conn{Conn: verified},
		"secure ws": &conn{Conn: &wsConn{Conn: verified}},
	} {
		if leaf := PeerCertificate(c); leaf == nil || leaf.Subject.CommonName != "sensor-7" {
			t.Errorf("%s: PeerCertificate = %v, want the sensor-7 certificate", name, leaf)
		}
	}

	none := handshake(t, serverCfg(tls.VerifyClientCertIfGiven), clientCfg(nil))
	if leaf := PeerCertificate(&conn{Conn: none}); leaf != nil {
		t.Errorf("no certificate given, PeerCertificate = %s", leaf.Subject.CommonName)
	}

	// Requested but not verified: the client could have made it up.
	unverified := handshake(t, serverCfg(tls.RequestClientCert), clientCfg(&clientCert))
	if len(unverified.ConnectionState().PeerCertificates) == 0 {
		t.Fatal("the client sent no certificate: the case is not being tested")
	}
	if leaf := PeerCertificate(&conn{Conn: unverified}); leaf != nil {
		t.Errorf("an unverified certificate was returned: %s", leaf.Subject.CommonName)
	}

	plain, other := net.Pipe()
	defer plain.Close()
	defer other.Close()
	if leaf := PeerCertificate(&conn{Conn: plain}); leaf != nil {
		t.Error("a plain connection has a peer certificate")
	}
}
