package integration

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/mqtt-operator/mqtt-operator/api/v1alpha1"
	"github.com/mqtt-operator/mqtt-operator/test/mqtttest"
	"github.com/mqtt-operator/mqtt-operator/test/secretscan"
)

// TLS end to end on local pods: the operator issues the certificates, the
// broker serves them from its mounted Secret, and applications connect
// with nothing but their connection Secret.

type tlsDeployment struct {
	ns, host        string // host: the pod's loopback IP
	serverName      string // what clients verify: the client Service's name
	app, device     *corev1.Secret
	tlsAddr, wssURL string
}

func deployTLS(t *testing.T) *tlsDeployment {
	t.Helper()
	ns := newNamespace(t)
	ctx := context.Background()
	b := &v1alpha1.MQTTBroker{ObjectMeta: metav1.ObjectMeta{Name: "telemetry", Namespace: ns}}
	b.Spec.Listeners.TLS = v1alpha1.TLSListener{Enabled: true, Port: 8883}
	b.Spec.Listeners.SecureWebSocket = v1alpha1.SecureWebSocketListener{Enabled: true, Port: 8084}
	objs := []client.Object{b,
		&v1alpha1.MQTTUser{ObjectMeta: metav1.ObjectMeta{Name: "app", Namespace: ns},
			Spec: v1alpha1.MQTTUserSpec{BrokerRef: v1alpha1.BrokerReference{Name: "telemetry"}}},
		&v1alpha1.MQTTUser{ObjectMeta: metav1.ObjectMeta{Name: "device", Namespace: ns},
			Spec: v1alpha1.MQTTUserSpec{BrokerRef: v1alpha1.BrokerReference{Name: "telemetry"}, Authentication: v1alpha1.AuthenticationClientCertificate}},
		&v1alpha1.TopicACL{ObjectMeta: metav1.ObjectMeta{Name: "own-topics", Namespace: ns},
			Spec: v1alpha1.TopicACLSpec{BrokerRef: v1alpha1.BrokerReference{Name: "telemetry"},
				Subjects: v1alpha1.ACLSubjects{AllAuthenticated: true},
				Rules:    []v1alpha1.ACLRule{{Topic: "devices/%u/#", Access: v1alpha1.AccessPublishSubscribe}}}},
	}
	for _, o := range objs {
		if err := k8s.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if err := pods.WaitReady(wctx, ns, "telemetry", 1); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"app", "device"} {
		eventually(t, 30*time.Second, "user "+name+" enforced", func() error {
			reason, err := readyReason(t, ns, name, &v1alpha1.MQTTUser{})
			if err == nil && reason != "Enforced" {
				err = fmt.Errorf("Ready reason %s", reason)
			}
			return err
		})
	}
	host := pods.PodAddr(ns, "telemetry-0")
	d := &tlsDeployment{ns: ns, host: host, serverName: "telemetry." + ns + ".svc",
		tlsAddr: host + ":8883", wssURL: "wss://" + host + ":8084/mqtt"}
	d.app, d.device = secretOf(t, ns, "app-mqtt"), secretOf(t, ns, "device-mqtt")
	return d
}

func secretOf(t *testing.T, ns, name string) *corev1.Secret {
	t.Helper()
	s := &corev1.Secret{}
	if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, s); err != nil {
		t.Fatal(err)
	}
	return s
}

// clientTLS is what an application builds from its connection Secret:
// the CA to verify the server by, and its client certificate if it has one.
func (d *tlsDeployment) clientTLS(t *testing.T, conn *corev1.Secret) *tls.Config {
	t.Helper()
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(conn.Data["ca.crt"]) {
		t.Fatalf("connection Secret %s has no usable ca.crt", conn.Name)
	}
	cfg := &tls.Config{RootCAs: roots, ServerName: d.serverName, MinVersion: tls.VersionTLS12}
	if len(conn.Data["tls.crt"]) > 0 {
		pair, err := tls.X509KeyPair(conn.Data["tls.crt"], conn.Data["tls.key"])
		if err != nil {
			t.Fatal(err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return cfg
}

func (d *tlsDeployment) dialTLS(t *testing.T, conn *corev1.Secret, c credentials, clientID string) (*mqtttest.Client, *tls.Conn, error) {
	t.Helper()
	raw, err := tls.DialWithDialer(&net.Dialer{Timeout: 3 * time.Second}, "tcp", d.tlsAddr, d.clientTLS(t, conn))
	if err != nil {
		return nil, nil, err
	}
	m, err := mqtttest.Connect(t, raw, c, clientID, mqtttest.Session{})
	return m, raw, err
}

func TestTLSWithTheConnectionSecret(t *testing.T) {
	d := deployTLS(t)
	app := credentials{Username: string(d.app.Data["username"]), Password: string(d.app.Data["password"])}
	if string(d.app.Data["tlsPort"]) != "8883" || !strings.HasPrefix(string(d.app.Data["uri"]), "mqtts://") {
		t.Errorf("app connection Secret: tlsPort %q, uri scheme %q", d.app.Data["tlsPort"], strings.SplitN(string(d.app.Data["uri"]), ":", 2)[0])
	}

	// A password user over TLS, verifying the server with ca.crt.
	sub, _, err := d.dialTLS(t, d.app, app, "app-sub")
	if err != nil {
		t.Fatalf("password user over TLS: %v", err)
	}
	if code := sub.Subscribe(t, "devices/app/#"); code > 2 {
		t.Fatalf("subscribe refused: 0x%02x", code)
	}
	// The same user over secure WebSocket.
	ws := d.dialWSS(t, d.app)
	pub, err := mqtttest.Connect(t, ws, app, "app-ws", mqtttest.Session{})
	if err != nil {
		t.Fatalf("password user over secure WebSocket: %v", err)
	}
	if code := pub.Publish(t, "devices/app/temperature", "21.5"); code != 0 {
		t.Fatalf("publish over wss refused: 0x%02x", code)
	}
	if got := sub.Next(t); got != "21.5" {
		t.Fatalf("received %q", got)
	}

	// Without the CA the server is not trusted.
	if _, err := tls.Dial("tcp", d.tlsAddr, &tls.Config{ServerName: d.serverName, MinVersion: tls.VersionTLS12}); err == nil {
		t.Error("a client without the broker's CA verified the server")
	}
}

func TestCertificateUserAndRevocation(t *testing.T) {
	d := deployTLS(t)
	device, _, err := d.dialTLS(t, d.device, credentials{}, "device-1")
	if err != nil {
		t.Fatalf("certificate user without a password: %v", err)
	}
	if code := device.Publish(t, "devices/device/state", "on"); code != 0 {
		t.Errorf("the certificate user may not publish on its own topic (%%u): 0x%02x", code)
	}
	if code := device.Publish(t, "devices/app/state", "on"); code != 0x87 {
		t.Errorf("the certificate user published on another user's topic: 0x%02x", code)
	}
	// The certificate is the credential: a password login as that user fails.
	if _, err := mqtttest.Dial(t, d.host+":1883", credentials{Username: "device", Password: "anything"}, "device-pw"); err == nil {
		t.Error("a certificate user logged in with a password")
	}

	// Deleting the user ends its session and refuses its certificate.
	u := &v1alpha1.MQTTUser{}
	if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: d.ns, Name: "device"}, u); err != nil {
		t.Fatal(err)
	}
	if err := k8s.Delete(context.Background(), u); err != nil {
		t.Fatal(err)
	}
	select {
	case <-device.Disconnected:
	case <-time.After(10 * time.Second):
		t.Fatal("the deleted certificate user's session is still open")
	}
	eventually(t, 10*time.Second, "the certificate refused", func() error {
		if _, _, err := d.dialTLS(t, d.device, credentials{}, "device-2"); err == nil {
			return errors.New("a deleted user's certificate still logs in")
		}
		return nil
	})
}

func TestForcedRotationKeepsConnectionsAndServesTheNewCertificate(t *testing.T) {
	d := deployTLS(t)
	app := credentials{Username: string(d.app.Data["username"]), Password: string(d.app.Data["password"])}
	before, conn, err := d.dialTLS(t, d.app, app, "long-lived")
	if err != nil {
		t.Fatal(err)
	}
	oldSerial := conn.ConnectionState().PeerCertificates[0].SerialNumber

	// Forced rotation: delete the pods' TLS Secret; the operator issues a
	// new certificate and the broker reloads it from its files.
	tlsSecret := secretOf(t, d.ns, "telemetry-tls")
	if err := k8s.Delete(context.Background(), tlsSecret); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "new handshakes get the new certificate", func() error {
		raw, err := tls.Dial("tcp", d.tlsAddr, d.clientTLS(t, d.app))
		if err != nil {
			return err
		}
		defer raw.Close()
		if serial := raw.ConnectionState().PeerCertificates[0].SerialNumber; serial.Cmp(oldSerial) == 0 {
			return errors.New("still the old certificate")
		}
		return nil
	})
	// The connection made before the rotation is still up and working.
	if code := before.Subscribe(t, "devices/app/#"); code > 2 {
		t.Fatalf("the pre-rotation connection cannot subscribe: 0x%02x", code)
	}
	select {
	case <-before.Disconnected:
		t.Fatal("the rotation dropped an established connection")
	default:
	}
	if n := restartCount(t, d.ns); n != 0 {
		t.Errorf("the rotation restarted the broker %d times", n)
	}
}

// dialWSS opens a secure WebSocket with subprotocol mqtt, as a browser
// client would, and returns it as a byte stream for the MQTT client.
func (d *tlsDeployment) dialWSS(t *testing.T, conn *corev1.Secret) net.Conn {
	t.Helper()
	dialer := websocket.Dialer{TLSClientConfig: d.clientTLS(t, conn), Subprotocols: []string{"mqtt"}, HandshakeTimeout: 5 * time.Second}
	ws, _, err := dialer.Dial(d.wssURL, nil)
	if err != nil {
		t.Fatalf("secure WebSocket: %v", err)
	}
	return &wsStream{Conn: ws.NetConn(), ws: ws}
}

// wsStream reads and writes MQTT bytes as binary WebSocket messages.
// The MQTT client writes from more than one goroutine (its pinger, too),
// and a WebSocket connection takes one writer at a time.
type wsStream struct {
	net.Conn
	ws      *websocket.Conn
	reader  io.Reader
	writeMu sync.Mutex
}

func (s *wsStream) Read(p []byte) (int, error) {
	for {
		if s.reader == nil {
			_, r, err := s.ws.NextReader()
			if err != nil {
				return 0, err
			}
			s.reader = r
		}
		n, err := s.reader.Read(p)
		if errors.Is(err, io.EOF) {
			s.reader = nil
			if n > 0 {
				return n, nil
			}
			continue
		}
		return n, err
	}
}

func (s *wsStream) Write(p []byte) (int, error) {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	if err := s.ws.WriteMessage(websocket.BinaryMessage, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (s *wsStream) Close() error { return s.ws.Close() }

// Private keys live only in their Secrets: the CA's, the pods' TLS Secret
// and a certificate user's connection Secret. Never in a log, event,
// status, ConfigMap or pod spec.
func TestPrivateKeysAppearNowhereElse(t *testing.T) {
	d := deployTLS(t)
	if _, _, err := d.dialTLS(t, d.device, credentials{}, "device-scan"); err != nil {
		t.Fatal(err)
	}
	keys := map[string][]byte{
		"server key":        secretOf(t, d.ns, "telemetry-tls").Data["tls.key"],
		"CA key":            secretOf(t, d.ns, "telemetry-ca").Data["tls.key"],
		"client key":        d.device.Data["tls.key"],
		"app password":      d.app.Data["password"],
		"a PEM private key": []byte("PRIVATE KEY-----"),
	}
	places := map[string]string{"operator log": oplog.String(), "broker log": pods.Output(d.ns, "telemetry-0")}
	for name, list := range map[string]client.ObjectList{
		"events": &eventsv1.EventList{}, "configmaps": &corev1.ConfigMapList{}, "pods": &corev1.PodList{},
		"statefulsets": &appsv1.StatefulSetList{}, "brokers": &v1alpha1.MQTTBrokerList{}, "users": &v1alpha1.MQTTUserList{},
	} {
		if err := k8s.List(context.Background(), list, client.InNamespace(d.ns)); err != nil {
			t.Fatal(err)
		}
		data, _ := json.Marshal(list)
		places[name] = string(data)
	}
	if !strings.Contains(places["brokers"], "notAfter") || !strings.Contains(places["operator log"], "TLS Secret") {
		t.Fatal("nothing about TLS to scan: the test would prove nothing")
	}
	for what, key := range keys {
		if len(key) == 0 {
			t.Fatalf("no %s to look for", what)
		}
		needle := strings.TrimSpace(string(key))
		if lines := strings.Split(needle, "\n"); strings.HasPrefix(needle, "-----BEGIN") && len(lines) > 2 {
			needle = lines[1] // the base64 body, in case something re-encoded the PEM
		}
		for where, text := range places {
			secretscan.Absent(t, where, text, map[string]string{"the " + what: needle})
		}
	}
}
