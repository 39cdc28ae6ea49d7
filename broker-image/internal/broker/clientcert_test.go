package broker_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	pahov3 "github.com/eclipse/paho.mqtt.golang"

	"github.com/mqtt-operator/mqtt-operator/internal/brokerconfig"
)

// sensor is the certificate user of these tests; alice and bob of
// testBundle log in with passwords.
const sensor = "sensor-7"

// badCredentials is the CONNACK reason mochi sends whenever the policy hook
// refuses a CONNECT (MQTT 5 0x86, "bad user name or password").
const badCredentials = 0x86

// pem encodes the CA certificate, as a client CA file holds it.
func (ca *testCA) pem() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.cert.Raw})
}

// issueClient returns a client certificate with the common name, for client
// authentication unless other key usages are given.
func (ca *testCA) issueClient(t *testing.T, cn string, usages ...x509.ExtKeyUsage) tls.Certificate {
	t.Helper()
	if len(usages) == 0 {
		usages = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: usages,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func fingerprint(c tls.Certificate) string {
	return brokerconfig.CertificateFingerprint(c.Certificate[0])
}

// certBundle is testBundle plus the certificate user sensor-7, who may
// present the given certificates.
func certBundle(t *testing.T, generation int64, certs ...tls.Certificate) *brokerconfig.AuthBundle {
	t.Helper()
	b := testBundle(t, generation)
	u := brokerconfig.User{Username: sensor}
	for _, c := range certs {
		u.CertificateSHA256 = append(u.CertificateSHA256, fingerprint(c))
	}
	b.Users = append(b.Users, u)
	return b
}

// certBroker is a broker with TLS listeners whose server certificate comes
// from one CA and whose client certificates must chain to another.
type certBroker struct {
	*testBroker
	serverCA, clientCA *testCA
	clientCAFile       string
	mqtts, wss         string
}

func startCertBroker(t *testing.T, clientCA *testCA, bundle func(*testCA) *brokerconfig.AuthBundle) *certBroker {
	t.Helper()
	dir := t.TempDir()
	cb := &certBroker{serverCA: newNamedCA(t, "server CA"), clientCA: clientCA, clientCAFile: filepath.Join(dir, "client-ca.crt")}
	cb.serverCA.issue(t, dir, 1, time.Now().Add(time.Hour))
	writeFile(t, cb.clientCAFile, clientCA.pem())
	cfg := tlsConfig(dir)
	cfg.TLS.ClientCAFile = cb.clientCAFile
	cb.testBroker = startBroker(t, cfg, bundle(clientCA))
	cb.mqtts, cb.wss = cb.ListenerAddress("mqtts"), cb.ListenerAddress("wss")
	return cb
}

// tlsWith is a client TLS config that trusts the broker and presents cert
// (none when cert is nil). It presents cert whatever CAs the broker asks
// for: Go's client would otherwise quietly send none when the issuer is not
// among them, and the broker would never see a foreign certificate.
func (cb *certBroker) tlsWith(cert *tls.Certificate) *tls.Config {
	cfg := &tls.Config{RootCAs: cb.serverCA.pool, ServerName: "127.0.0.1"}
	if cert != nil {
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }
	}
	return cfg
}

// connectCert connects over MQTT 5 and TLS with cert and the username, and
// no password.
func (cb *certBroker) connectCert(t *testing.T, cert tls.Certificate, user, clientID string) (*v5, error) {
	t.Helper()
	return connectV5(t, cb.mqtts, v5opts{user: user, clientID: clientID, keepAlive: 30, tls: cb.tlsWith(&cert)})
}

func (cb *certBroker) mustConnectCert(t *testing.T, cert tls.Certificate, clientID string) *v5 {
	t.Helper()
	c, err := cb.connectCert(t, cert, "", clientID)
	if err != nil {
		t.Fatalf("%s could not log in with its certificate: %v", clientID, err)
	}
	return c
}

// wantRefused checks that the broker answered the CONNECT and refused it.
func wantRefused(t *testing.T, what string, err error) {
	t.Helper()
	var refused *refusedError
	switch {
	case err == nil:
		t.Errorf("%s: logged in", what)
	case !errors.As(err, &refused):
		t.Errorf("%s: %v, want a CONNACK refusal", what, err)
	case refused.code != badCredentials:
		t.Errorf("%s: reason 0x%02x, want 0x%02x", what, refused.code, badCredentials)
	}
}

// wantHandshakeRefused checks that the broker refuses cert in the TLS
// handshake, before any MQTT. With TLS 1.2 the server verifies the client
// before it finishes, so the handshake itself fails with the alert. With
// TLS 1.3 the client finishes first and learns of the alert only when it
// reads; whether its CONNECT write or its read fails first is a race, so all
// that is certain is that no CONNACK ever came.
func (cb *certBroker) wantHandshakeRefused(t *testing.T, what string, cert tls.Certificate, alert string) {
	t.Helper()
	cfg := cb.tlsWith(&cert)
	cfg.MaxVersion = tls.VersionTLS12
	conn, err := tls.Dial("tcp", cb.mqtts, cfg)
	switch {
	case err == nil:
		_ = conn.Close()
		t.Errorf("%s: the TLS 1.2 handshake completed", what)
	case !strings.Contains(err.Error(), alert):
		t.Errorf("%s: TLS 1.2 handshake: %v, want the alert %q", what, err, alert)
	}
	_, err = cb.connectCert(t, cert, "", "handshake-refused")
	var refused *refusedError
	switch {
	case err == nil:
		t.Errorf("%s: logged in over TLS 1.3", what)
	case errors.As(err, &refused):
		t.Errorf("%s: the TLS 1.3 handshake passed and MQTT refused it (%v); want the handshake refused", what, err)
	}
}

// roundTrip publishes on the user's status topic and waits for the message
// to come back: proof that the session is up and acts as that user. The
// client must have subscribed to devices/+/status.
func (c *v5) roundTrip(t *testing.T, user, payload string) {
	t.Helper()
	if err := c.publish(t, "devices/"+user+"/status", payload, 1, false); err != nil {
		t.Fatalf("publish as %s: %v", user, err)
	}
	c.expect(t, payload)
}

// wantRevoked waits for the broker's DISCONNECT with reason 0x87.
func (c *v5) wantRevoked(t *testing.T, who string) {
	t.Helper()
	select {
	case d := <-c.disconnect:
		if d.ReasonCode != 0x87 {
			t.Errorf("%s: disconnected with reason 0x%02x, want 0x87 not authorized", who, d.ReasonCode)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("%s still connected after its certificate was revoked", who)
	}
}

func TestClientCertificateLogin(t *testing.T) {
	clientCA := newNamedCA(t, "client CA")
	sensorCert := clientCA.issueClient(t, sensor)
	otherCA := newNamedCA(t, "other CA")
	foreign := otherCA.issueClient(t, sensor)                                 // right name, wrong CA
	serverOnly := clientCA.issueClient(t, sensor, x509.ExtKeyUsageServerAuth) // right CA, not for clients
	unlisted := clientCA.issueClient(t, sensor)                               // right CA and name, not in the bundle
	aliceCert := clientCA.issueClient(t, "alice")                             // names a password user
	cb := startCertBroker(t, clientCA, func(*testCA) *brokerconfig.AuthBundle {
		// The foreign and server-only certificates are listed too: only
		// the handshake can be what refuses them.
		return certBundle(t, 1, sensorCert, foreign, serverOnly)
	})

	t.Run("certificate user over TLS, its ACL applies", func(t *testing.T) {
		c := cb.mustConnectCert(t, sensorCert, "sensor-tls")
		for filter, ok := range map[string]bool{"devices/+/status": true, "commands/sensor-7/#": true, "commands/alice/#": false} {
			if code := c.subscribe(t, filter, 1); (code < 0x80) != ok {
				t.Errorf("subscribe %s: reason 0x%02x, want allowed=%v", filter, code, ok)
			}
		}
		c.roundTrip(t, sensor, "from-the-sensor") // devices/%u/# allows publishing as sensor-7
		if err := c.publish(t, "devices/alice/status", "forged", 1, false); err == nil {
			t.Error("the sensor's publish to alice's prefix was acknowledged as a success")
		}
		_ = c.publish(t, "devices/sensor-7/status", "marker", 1, false)
		c.expectNoneBefore(t, "forged", "marker")
		// Naming itself is the same login.
		if _, err := cb.connectCert(t, sensorCert, sensor, "sensor-named"); err != nil {
			t.Errorf("certificate with its own username refused: %v", err)
		}
	})

	t.Run("certificate user over secure WebSocket", func(t *testing.T) {
		c, err := connectV3TLS("wss://"+cb.wss+"/mqtt", "", "", "sensor-wss", cb.tlsWith(&sensorCert))
		if err != nil {
			t.Fatalf("certificate login over wss: %v", err)
		}
		defer c.Disconnect(10)
		got := make(chan string, 10)
		for filter, want := range map[string]byte{"commands/alice/#": 0x80, "devices/+/status": 1} {
			tok := c.Subscribe(filter, 1, func(_ pahov3.Client, m pahov3.Message) { got <- string(m.Payload()) }).(*pahov3.SubscribeToken)
			tok.Wait()
			if code := tok.Result()[filter]; code != want {
				t.Errorf("wss SUBACK for %s: 0x%02x, want 0x%02x", filter, code, want)
			}
		}
		// QoS 0: mochi drops a denied one silently, but disconnects an
		// MQTT 3.1.1 client for a denied QoS 1 publish.
		c.Publish("devices/alice/status", 0, false, "forged").Wait()
		c.Publish("devices/sensor-7/status", 1, false, "over-wss").Wait()
		select {
		case m := <-got:
			if m != "over-wss" {
				t.Errorf("got %q first, want over-wss (the forged publish must be dropped)", m)
			}
		case <-time.After(5 * time.Second):
			t.Error("the sensor's own message did not come back over wss")
		}
		if _, err := connectV3TLS("wss://"+cb.wss+"/mqtt", "", "", "foreign-wss", cb.tlsWith(&foreign)); err == nil {
			t.Error("a certificate of another CA logged in over wss")
		}
	})

	t.Run("certificates the handshake refuses", func(t *testing.T) {
		cb.wantHandshakeRefused(t, "certificate of another CA", foreign, "unknown certificate authority")
		cb.wantHandshakeRefused(t, "certificate without client authentication usage", serverOnly, "bad certificate")
	})

	t.Run("certificates that name no certificate user are refused", func(t *testing.T) {
		_, err := cb.connectCert(t, aliceCert, "", "alice-cert")
		wantRefused(t, "certificate named after a password user", err)
		_, err = cb.connectCert(t, unlisted, "", "unlisted")
		wantRefused(t, "certificate whose fingerprint is not listed", err)
		_, err = cb.connectCert(t, sensorCert, "alice", "sensor-as-alice")
		wantRefused(t, "certificate of sensor-7 claiming to be alice", err)
		// A certificate that proves nothing leaves the password to decide.
		if _, err := connectV5(t, cb.mqtts, v5opts{user: "alice", password: alicePassword, clientID: "alice-with-cert", tls: cb.tlsWith(&sensorCert)}); err != nil {
			t.Errorf("alice with her password and someone else's certificate: %v", err)
		}
	})

	t.Run("a certificate user never logs in with a password", func(t *testing.T) {
		for _, password := range []string{"", alicePassword} {
			_, err := connectV5(t, cb.tcp, v5opts{user: sensor, password: password, clientID: "sensor-password"})
			wantRefused(t, "sensor-7 with a password over TCP", err)
			_, err = connectV5(t, cb.mqtts, v5opts{user: sensor, password: password, clientID: "sensor-password-tls", tls: cb.tlsWith(nil)})
			wantRefused(t, "sensor-7 with a password over TLS", err)
		}
	})

	t.Run("a password user still logs in over TLS without a certificate", func(t *testing.T) {
		if _, err := connectV5(t, cb.mqtts, v5opts{user: "alice", password: alicePassword, clientID: "alice-tls", tls: cb.tlsWith(nil)}); err != nil {
			t.Errorf("alice over TLS: %v", err)
		}
		c, err := connectV3TLS("wss://"+cb.wss+"/mqtt", "bob", bobPassword, "bob-wss", cb.tlsWith(nil))
		if err != nil {
			t.Fatalf("bob over wss: %v", err)
		}
		c.Disconnect(10)
	})

	// Two certificate logins over TLS, one over wss.
	if n := cb.Stats().AuthCertificate; n != 3 {
		t.Errorf("%d certificate logins counted, want 3", n)
	}
}

func TestCertificateSessionsFollowTheBundle(t *testing.T) {
	clientCA := newNamedCA(t, "client CA")
	oldCert, newCert := clientCA.issueClient(t, sensor), clientCA.issueClient(t, sensor)
	cb := startCertBroker(t, clientCA, func(*testCA) *brokerconfig.AuthBundle { return certBundle(t, 1, oldCert) })
	alice := mustV5(t, cb.tcp, "alice", alicePassword)
	alice.subscribe(t, "devices/+/status", 1)
	old := cb.mustConnectCert(t, oldCert, "sensor-old")
	old.subscribe(t, "devices/+/status", 1)

	// Renewal: the new certificate is listed next to the old one. Nobody is
	// dropped, and the new certificate logs in too.
	cb.apply(t, certBundle(t, 2, oldCert, newCert))
	old.roundTrip(t, sensor, "old-after-overlap")
	renewed := cb.mustConnectCert(t, newCert, "sensor-new")
	renewed.subscribe(t, "devices/+/status", 1)

	// The old fingerprint is removed: its session goes at once, the
	// renewed one and alice's stay, and the old certificate is refused.
	cb.apply(t, certBundle(t, 3, newCert))
	old.wantRevoked(t, "session of the removed fingerprint")
	renewed.roundTrip(t, sensor, "renewed-after-removal")
	alice.roundTrip(t, "alice", "alice-after-removal")
	_, err := cb.connectCert(t, oldCert, "", "sensor-old-again")
	wantRefused(t, "removed fingerprint", err)

	// The user switches to a password: certificate sessions go.
	toPassword := testBundle(t, 4)
	toPassword.Users = append(toPassword.Users, brokerconfig.User{Username: sensor, PasswordHash: toPassword.Users[0].PasswordHash})
	cb.apply(t, toPassword)
	renewed.wantRevoked(t, "certificate session of a user now on a password")
	withPassword, err := connectV5(t, cb.tcp, v5opts{user: sensor, password: alicePassword, clientID: "sensor-password", keepAlive: 30})
	if err != nil {
		t.Fatalf("sensor-7 with its new password: %v", err)
	}

	// And back to certificates: the password session goes.
	cb.apply(t, certBundle(t, 5, newCert))
	withPassword.wantRevoked(t, "password session of a user now on certificates")

	// The user is deleted: its certificate session goes.
	last := cb.mustConnectCert(t, newCert, "sensor-last")
	cb.apply(t, testBundle(t, 6))
	last.wantRevoked(t, "certificate session of a deleted user")
	alice.roundTrip(t, "alice", "alice-at-the-end")

	if n := cb.Stats().SessionsRevoked; n != 4 {
		t.Errorf("%d sessions revoked, want 4", n)
	}
}

func TestClientCAFileReloadsInPlace(t *testing.T) {
	ca1, ca2 := newNamedCA(t, "client CA 1"), newNamedCA(t, "client CA 2")
	cert1, cert2 := ca1.issueClient(t, sensor), ca2.issueClient(t, sensor)
	cb := startCertBroker(t, ca1, func(*testCA) *brokerconfig.AuthBundle { return certBundle(t, 1, cert1, cert2) })
	if files := cb.CertificateFiles(); !slices.Contains(files, cb.clientCAFile) {
		t.Errorf("watched TLS files %v lack the client CA file", files)
	}
	established := cb.mustConnectCert(t, cert1, "sensor-ca1")
	established.subscribe(t, "devices/+/status", 1)
	cb.wantHandshakeRefused(t, "certificate of a CA not yet trusted", cert2, "unknown certificate authority")

	reload := func(ca []byte) {
		t.Helper()
		writeFile(t, cb.clientCAFile, ca)
		if err := cb.ReloadCertificate(); err != nil {
			t.Fatalf("reloading a valid client CA file: %v", err)
		}
	}
	// Overlap: both CAs are trusted.
	reload(append(ca1.pem(), ca2.pem()...))
	cb.mustConnectCert(t, cert1, "sensor-ca1-overlap")
	cb.mustConnectCert(t, cert2, "sensor-ca2-overlap")

	// Only the new CA: new handshakes verify against it, the session
	// established under the old one stays.
	reload(ca2.pem())
	cb.wantHandshakeRefused(t, "certificate of a CA no longer trusted", cert1, "unknown certificate authority")
	cb.mustConnectCert(t, cert2, "sensor-ca2")
	established.roundTrip(t, sensor, "established-after-ca-change")

	// Broken files are refused and the last good CA stays in use.
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: []byte("not really a key")})
	failed := cb.Stats().TLSReloadsFailed
	for name, data := range map[string][]byte{
		"empty":     nil,
		"not PEM":   []byte("hello"),
		"truncated": ca1.pem()[:len(ca1.pem())/2],
		"a key":     keyPEM,
	} {
		writeFile(t, cb.clientCAFile, data)
		if err := cb.ReloadCertificate(); err == nil {
			t.Errorf("%s client CA file accepted", name)
		} else if strings.Contains(err.Error(), "not really a key") {
			t.Errorf("the refusal quotes the file: %v", err)
		}
	}
	if got := cb.Stats().TLSReloadsFailed - failed; got != 4 {
		t.Errorf("%d failed TLS reloads counted, want 4", got)
	}
	cb.mustConnectCert(t, cert2, "sensor-ca2-after-refusals")
	cb.wantHandshakeRefused(t, "certificate of the CA replaced before the refusals", cert1, "unknown certificate authority")
	established.roundTrip(t, sensor, "established-at-the-end")
}
