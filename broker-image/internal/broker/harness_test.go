package broker_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	pahov3 "github.com/eclipse/paho.mqtt.golang"

	"github.com/mqtt-operator/mqtt-operator/broker-image/internal/broker"
	"github.com/mqtt-operator/mqtt-operator/internal/brokerconfig"
	"github.com/mqtt-operator/mqtt-operator/internal/passwordhash"
	"github.com/mqtt-operator/mqtt-operator/test/secretscan"
)

// These tests run the real broker on loopback and talk to it with real MQTT
// clients: paho for MQTT 5 and for 3.1.1.

const (
	alicePassword = "alice-chose-this-passphrase"
	bobPassword   = "generated-0123456789abcdefghijklmnopqrstuvwxyz" // operator-generated style
)

func testConfig(dir string) *brokerconfig.Config {
	return &brokerconfig.Config{
		Version: brokerconfig.Version,
		Listeners: []brokerconfig.Listener{
			{Name: "mqtt", Protocol: brokerconfig.ProtocolTCP, Address: "127.0.0.1:0"},
			{Name: "ws", Protocol: brokerconfig.ProtocolWebSocket, Address: "127.0.0.1:0", Path: "/mqtt"},
		},
		HealthAddress: "127.0.0.1:9090",
		AdminAddress:  "127.0.0.1:9091",
		Limits: brokerconfig.Limits{
			MaxConnections: 100, MaxPacketSize: 64 * 1024, MaxInflight: 32, MaxQoS: 2, RetainAvailable: true,
			SessionExpirySeconds: 3600, MaxKeepaliveSeconds: 60, MaxSubscriptionsPerClient: 10,
		},
		Storage: brokerconfig.Storage{Path: dir},
	}
}

var (
	hashOnce           sync.Once
	aliceHash, bobHash string
)

func hashes(t testing.TB) (string, string) {
	hashOnce.Do(func() {
		var err error
		if aliceHash, err = passwordhash.HashChosen(alicePassword); err != nil {
			t.Fatal(err)
		}
		if bobHash, err = passwordhash.HashGenerated(bobPassword, []byte("sixteen-byte-salt")); err != nil {
			t.Fatal(err)
		}
	})
	return aliceHash, bobHash
}

// testBundle: alice and bob publish under devices/<username>/, read any
// device's status, and read their own commands. bob may also read alice's
// telemetry.
func testBundle(t testing.TB, generation int64) *brokerconfig.AuthBundle {
	a, b := hashes(t)
	return &brokerconfig.AuthBundle{
		Generation: generation,
		Users:      []brokerconfig.User{{Username: "alice", PasswordHash: a}, {Username: "bob", PasswordHash: b}},
		ACLs: []brokerconfig.ACL{
			{Name: "test/devices", Subjects: brokerconfig.Subjects{AllAuthenticated: true}, Rules: []brokerconfig.Rule{
				{Topic: "devices/%u/#", Access: brokerconfig.AccessPublish, Effect: brokerconfig.EffectAllow},
				{Topic: "devices/+/status", Access: brokerconfig.AccessSubscribe, Effect: brokerconfig.EffectAllow},
				{Topic: "commands/%u/#", Access: brokerconfig.AccessSubscribe, Effect: brokerconfig.EffectAllow},
			}},
			{Name: "test/bob-reads-alice", Subjects: brokerconfig.Subjects{Users: []string{"bob"}}, Rules: []brokerconfig.Rule{
				{Topic: "devices/alice/#", Access: brokerconfig.AccessSubscribe, Effect: brokerconfig.EffectAllow},
			}},
			{Name: "test/guests", Subjects: brokerconfig.Subjects{Anonymous: true}, Rules: []brokerconfig.Rule{
				{Topic: "public/#", Access: brokerconfig.AccessPublishSubscribe, Effect: brokerconfig.EffectAllow},
			}},
		},
	}
}

var errTimeout = errors.New("connect timed out")

type testBroker struct {
	*broker.Broker
	tcp, ws string
	logs    *syncBuffer
	cfg     *brokerconfig.Config
}

type syncBuffer struct {
	mu      sync.Mutex
	b       strings.Builder
	discard bool
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.discard {
		return len(p), nil
	}
	return s.b.Write(p)
}

// discardLogs stops keeping the log, for long fuzz runs.
func (s *syncBuffer) discardLogs() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.discard = true
	s.b.Reset()
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// brokerLogLevel is the level of the brokers tests start. Load tests raise
// it to the broker's default (info): mochi logs every dropped delivery, with
// its payload, at debug, which at debug costs more than the delivery.
var brokerLogLevel = slog.LevelDebug

func startBroker(t testing.TB, cfg *brokerconfig.Config, bundle *brokerconfig.AuthBundle) *testBroker {
	t.Helper()
	logs := &syncBuffer{}
	var out io.Writer = logs
	if os.Getenv("BROKER_TEST_LOGS") != "" {
		out = io.MultiWriter(logs, os.Stderr)
	}
	b, err := broker.New(cfg, slog.New(slog.NewJSONHandler(out, &slog.HandlerOptions{Level: brokerLogLevel})))
	if err != nil {
		t.Fatal(err)
	}
	if bundle != nil {
		data, err := brokerconfig.MarshalBundle(bundle)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := b.ApplyBundle(data, "test"); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	tb := &testBroker{Broker: b, tcp: b.ListenerAddress("mqtt"), ws: b.ListenerAddress("ws"), logs: logs, cfg: cfg}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		b.Drain(ctx, 0)
		if t.Failed() { // what the broker saw, for the failure at hand
			lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
			t.Logf("broker log (last 40 lines):\n%s", strings.Join(lines[max(0, len(lines)-40):], "\n"))
		}
		secretscan.Absent(t, "broker's log", logs.String(), map[string]string{
			"alice's password": alicePassword, "bob's password": bobPassword,
		})
	})
	return tb
}

func (tb *testBroker) apply(t *testing.T, bundle *brokerconfig.AuthBundle) {
	t.Helper()
	data, err := brokerconfig.MarshalBundle(bundle)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tb.ApplyBundle(data, "test"); err != nil {
		t.Fatal(err)
	}
}

// v5 is an MQTT 5 client with the messages it received and how it was
// disconnected.
type v5 struct {
	*paho.Client
	connack    *paho.Connack
	messages   chan *paho.Publish
	disconnect chan *paho.Disconnect
	closed     chan struct{}
	raw        net.Conn // the connection, to drop it without a DISCONNECT
	// dropped counts messages that did not fit in messages (a test that
	// counts deliveries must see none).
	dropped atomic.Int64
}

type v5opts struct {
	user, password, clientID string
	keepAlive                uint16
	cleanStart               bool
	sessionExpiry            uint32
	tls                      *tls.Config // MQTT over TLS when set
	// connectProps, when set, completes the CONNECT's properties.
	connectProps func(*paho.ConnectProperties)
	// will, when set, is the CONNECT's will, delayed by willDelay seconds.
	will      *paho.WillMessage
	willDelay uint32
	// onPublish, when set, is given every message instead of the messages
	// channel (which drops what does not fit): for tests that count.
	onPublish func(*paho.Publish)
}

// refusedError is a CONNACK that refused the client, as opposed to a
// connection that failed before MQTT (a TLS handshake, say).
type refusedError struct{ code byte }

func (e *refusedError) Error() string { return fmt.Sprintf("CONNACK refused: reason 0x%02x", e.code) }

func dial(addr string, cfg *tls.Config) (net.Conn, error) {
	d := &net.Dialer{Timeout: 2 * time.Second}
	if cfg == nil {
		return d.Dial("tcp", addr)
	}
	return (&tls.Dialer{NetDialer: d, Config: cfg}).Dial("tcp", addr)
}

func connectV5(t *testing.T, addr string, o v5opts) (*v5, error) {
	t.Helper()
	conn, err := dial(addr, o.tls)
	if err != nil {
		return nil, err
	}
	c := &v5{messages: make(chan *paho.Publish, 1000), disconnect: make(chan *paho.Disconnect, 1), closed: make(chan struct{}), raw: conn}
	var once sync.Once
	c.Client = paho.NewClient(paho.ClientConfig{
		// One uninterrupted write per packet: paho's pinger would otherwise
		// interleave a PINGREQ with another packet's buffers over TLS.
		Conn: &packetLocked{Conn: conn},
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			if o.onPublish != nil {
				o.onPublish(pr.Packet)
				return true, nil
			}
			select {
			case c.messages <- pr.Packet:
			default: // a flood the test does not read; never block the client
				c.dropped.Add(1)
			}
			return true, nil
		}},
		OnServerDisconnect: func(d *paho.Disconnect) { c.disconnect <- d; once.Do(func() { close(c.closed) }) },
		OnClientError:      func(error) { once.Do(func() { close(c.closed) }) },
	})
	if o.clientID == "" {
		o.clientID = fmt.Sprintf("%s-%d", o.user, time.Now().UnixNano())
	}
	cp := &paho.Connect{ClientID: o.clientID, KeepAlive: o.keepAlive, CleanStart: o.cleanStart || o.sessionExpiry == 0,
		Username: o.user, UsernameFlag: o.user != "", Password: []byte(o.password), PasswordFlag: o.password != ""}
	if o.sessionExpiry > 0 {
		cp.Properties = &paho.ConnectProperties{SessionExpiryInterval: &o.sessionExpiry}
	}
	if o.will != nil {
		cp.WillMessage = o.will
		cp.WillProperties = &paho.WillProperties{WillDelayInterval: &o.willDelay}
	}
	if o.connectProps != nil {
		if cp.Properties == nil {
			cp.Properties = &paho.ConnectProperties{}
		}
		o.connectProps(cp.Properties)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c.connack, err = c.Connect(ctx, cp)
	if err != nil {
		_ = conn.Close()
		if c.connack != nil {
			return nil, &refusedError{code: c.connack.ReasonCode}
		}
		return nil, err
	}
	t.Cleanup(func() { _ = c.Disconnect(&paho.Disconnect{}) })
	return c, nil
}

func mustV5(t *testing.T, addr, user, password string) *v5 {
	t.Helper()
	c, err := connectV5(t, addr, v5opts{user: user, password: password, keepAlive: 30})
	if err != nil {
		t.Fatalf("%s could not connect: %v", user, err)
	}
	return c
}

func (c *v5) subscribe(t *testing.T, filter string, qos byte) byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	sa, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: filter, QoS: qos}}})
	if sa == nil || len(sa.Reasons) != 1 {
		t.Fatalf("subscribe %s: %v", filter, err)
	}
	return sa.Reasons[0]
}

func (c *v5) publish(t *testing.T, topic, payload string, qos byte, retain bool) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := c.Publish(ctx, &paho.Publish{Topic: topic, Payload: []byte(payload), QoS: qos, Retain: retain})
	return err
}

// expect waits for a message with the payload, or fails.
func (c *v5) expect(t *testing.T, payload string) *paho.Publish {
	t.Helper()
	deadline := time.After(3 * time.Second)
	for {
		select {
		case m := <-c.messages:
			if string(m.Payload) == payload {
				return m
			}
		case <-deadline:
			t.Fatalf("message %q not received", payload)
			return nil
		}
	}
}

// expectNone checks that no message arrives while a later marker message,
// sent on a topic the client does receive, gets through: ordering makes the
// absence certain without sleeping.
func (c *v5) expectNoneBefore(t *testing.T, forbidden, marker string) {
	t.Helper()
	deadline := time.After(3 * time.Second)
	for {
		select {
		case m := <-c.messages:
			switch string(m.Payload) {
			case forbidden:
				t.Fatalf("message %q was delivered, but must not be", forbidden)
			case marker:
				return
			}
		case <-deadline:
			t.Fatalf("marker %q not received", marker)
		}
	}
}

func connectV3(addr, user, password, clientID string) (pahov3.Client, error) {
	o := pahov3.NewClientOptions().AddBroker(addr).SetClientID(clientID).SetUsername(user).SetPassword(password).
		SetAutoReconnect(false).SetConnectRetry(false).SetConnectTimeout(3 * time.Second).SetProtocolVersion(4)
	c := pahov3.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(5 * time.Second) {
		return nil, errTimeout
	}
	return c, tok.Error()
}

// packetLocked makes each MQTT packet one uninterrupted write. paho writes a
// packet as several buffers; over TCP they go out in one writev, but a TLS
// connection writes them one by one, and a PINGREQ from paho's pinger could
// land between a SUBSCRIBE's header and body (the broker then rightly closes
// the connection for a malformed packet). paho takes the lock when the
// connection offers one.
type packetLocked struct {
	net.Conn
	sync.Mutex
}
