package broker_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	pahov3 "github.com/eclipse/paho.mqtt.golang"

	"github.com/mqtt-operator/mqtt-operator/internal/brokerconfig"
)

// testCA issues server certificates for 127.0.0.1.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newTestCA(t testing.TB) *testCA {
	t.Helper()
	return newNamedCA(t, "test CA")
}

func newNamedCA(t testing.TB, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool}
}

// issue writes a server certificate with the serial and validity to dir.
func (ca *testCA) issue(t testing.TB, dir string, serial int64, notAfter time.Time) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "broker"},
		NotBefore: time.Now().Add(-2 * time.Hour), NotAfter: notAfter,
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(key)
	writeFile(t, filepath.Join(dir, "tls.crt"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	writeFile(t, filepath.Join(dir, "tls.key"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}))
}

func writeFile(t testing.TB, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func tlsConfig(dir string) *brokerconfig.Config {
	cfg := testConfig(dir)
	cfg.Listeners = append(cfg.Listeners,
		brokerconfig.Listener{Name: "mqtts", Protocol: brokerconfig.ProtocolTLS, Address: "127.0.0.1:0"},
		brokerconfig.Listener{Name: "wss", Protocol: brokerconfig.ProtocolSecureWebSocket, Address: "127.0.0.1:0", Path: "/mqtt"})
	cfg.TLS = &brokerconfig.TLS{CertFile: filepath.Join(dir, "tls.crt"), KeyFile: filepath.Join(dir, "tls.key")}
	return cfg
}

// servedSerial completes a verified handshake and returns the serial of the
// certificate the broker presented.
func servedSerial(t *testing.T, addr string, pool *x509.CertPool) int64 {
	t.Helper()
	conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})
	if err != nil {
		t.Fatalf("TLS handshake: %v", err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].SerialNumber.Int64()
}

func TestTLSAndSecureWebSocketWithCertificateRotation(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t)
	ca.issue(t, dir, 100, time.Now().Add(time.Hour))
	tb := startBroker(t, tlsConfig(dir), testBundle(t, 1))
	mqtts, wss := tb.ListenerAddress("mqtts"), tb.ListenerAddress("wss")
	clientTLS := &tls.Config{RootCAs: ca.pool, ServerName: "127.0.0.1"}

	// A verified MQTT-over-TLS subscriber and a secure WebSocket publisher.
	got := make(chan string, 10)
	sub, err := connectV3TLS("ssl://"+mqtts, "bob", bobPassword, "bob-tls", clientTLS)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Disconnect(10)
	sub.Subscribe("devices/alice/#", 1, func(_ pahov3.Client, m pahov3.Message) { got <- string(m.Payload()) }).Wait()
	pub, err := connectV3TLS("wss://"+wss+"/mqtt", "alice", alicePassword, "alice-wss", clientTLS)
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Disconnect(10)
	publishAndReceive := func(payload string) {
		t.Helper()
		pub.Publish("devices/alice/temp", 1, false, payload).Wait()
		select {
		case m := <-got:
			if m != payload {
				t.Fatalf("got %q, want %q", m, payload)
			}
		case <-time.After(3 * time.Second):
			t.Fatalf("%q not delivered over TLS", payload)
		}
	}
	publishAndReceive("before-rotation")
	if s := servedSerial(t, mqtts, ca.pool); s != 100 {
		t.Fatalf("serial %d served, want 100", s)
	}

	// Rotate: new handshakes see the new certificate, live connections stay.
	ca.issue(t, dir, 200, time.Now().Add(2*time.Hour))
	if err := tb.ReloadCertificate(); err != nil {
		t.Fatal(err)
	}
	if s := servedSerial(t, mqtts, ca.pool); s != 200 {
		t.Errorf("after rotation serial %d served on tls, want 200", s)
	}
	if s := servedSerial(t, wss, ca.pool); s != 200 {
		t.Errorf("after rotation serial %d served on wss, want 200", s)
	}
	if !sub.IsConnectionOpen() || !pub.IsConnectionOpen() {
		t.Fatal("a rotation dropped a connected client")
	}
	publishAndReceive("after-rotation")

	// A broken pair is refused and the good one stays in use.
	writeFile(t, filepath.Join(dir, "tls.key"), []byte("-----BEGIN EC PRIVATE KEY-----\nbm90IGEga2V5\n-----END EC PRIVATE KEY-----\n"))
	if err := tb.ReloadCertificate(); err == nil {
		t.Error("a broken key pair was accepted")
	}
	if s := servedSerial(t, mqtts, ca.pool); s != 200 {
		t.Errorf("after a refused rotation serial %d served, want 200 (the last good one)", s)
	}
	// So is an expired certificate.
	ca.issue(t, dir, 300, time.Now().Add(-time.Minute))
	if err := tb.ReloadCertificate(); err == nil {
		t.Error("an expired certificate was accepted")
	}
	if s := servedSerial(t, mqtts, ca.pool); s != 200 {
		t.Errorf("after an expired rotation serial %d served, want 200", s)
	}
	publishAndReceive("after-refusals")
}

func TestTLSListenerRefusesPlainMQTT(t *testing.T) {
	dir := t.TempDir()
	newTestCA(t).issue(t, dir, 1, time.Now().Add(time.Hour))
	tb := startBroker(t, tlsConfig(dir), testBundle(t, 1))
	if _, err := connectV3("tcp://"+tb.ListenerAddress("mqtts"), "alice", alicePassword, "plain-on-tls"); err == nil {
		t.Error("plain MQTT was accepted on the TLS listener")
	}
	if _, err := connectV3TLS("ssl://"+tb.ListenerAddress("mqtts"), "alice", alicePassword, "unverified", &tls.Config{ServerName: "127.0.0.1"}); err == nil {
		t.Error("a client that does not trust the CA connected: the test CA is not being used")
	}
}

func connectV3TLS(addr, user, password, clientID string, cfg *tls.Config) (pahov3.Client, error) {
	o := pahov3.NewClientOptions().AddBroker(addr).SetClientID(clientID).SetUsername(user).SetPassword(password).
		SetAutoReconnect(false).SetConnectRetry(false).SetConnectTimeout(3 * time.Second).SetProtocolVersion(4).SetTLSConfig(cfg)
	c := pahov3.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(5 * time.Second) {
		return nil, errTimeout
	}
	return c, tok.Error()
}
