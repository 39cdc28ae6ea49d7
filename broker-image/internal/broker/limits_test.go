package broker_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	pahov3 "github.com/eclipse/paho.mqtt.golang"

	"github.com/mqtt-operator/mqtt-operator/broker-image/internal/broker"
	"github.com/mqtt-operator/mqtt-operator/internal/brokerconfig"
)

// closedWithin reports whether the server closes conn within d.
func closedWithin(conn net.Conn, d time.Duration) bool {
	_ = conn.SetReadDeadline(time.Now().Add(d))
	buf := make([]byte, 64)
	for {
		_, err := conn.Read(buf)
		if err == nil {
			continue
		}
		var ne net.Error
		return !(errors.As(err, &ne) && ne.Timeout())
	}
}

func TestOversizedFrameIsRefusedBeforeAllocation(t *testing.T) {
	tb := startBroker(t, testConfig(t.TempDir()), testBundle(t, 1))
	bob := mustV5(t, tb.tcp, "bob", bobPassword)
	bob.subscribe(t, "devices/alice/#", 0)

	// Before any CONNECT: a header announcing 200 MB.
	conn, err := net.Dial("tcp", tb.tcp)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = conn.Write([]byte{0x10, 0xff, 0xff, 0xff, 0x5f})
	if !closedWithin(conn, 2*time.Second) {
		t.Error("a 200 MB CONNECT header did not close the connection")
	}

	// After CONNECT: a PUBLISH above the 64 KiB limit.
	alice := mustV5(t, tb.tcp, "alice", alicePassword)
	_ = alice.publish(t, "devices/alice/big", strings.Repeat("x", 100*1024), 0, false)
	select {
	case <-alice.closed:
	case <-time.After(2 * time.Second):
		t.Error("an oversized PUBLISH did not close the connection")
	}
	if n := tb.Stats().PacketTooLarge; n != 2 {
		t.Errorf("packet-too-large closes counted %d, want 2", n)
	}
	// Nobody else noticed.
	alice2 := mustV5(t, tb.tcp, "alice", alicePassword)
	_ = alice2.publish(t, "devices/alice/temp", "still-fine", 0, false)
	bob.expect(t, "still-fine")
}

// Hostile byte streams close their own connection; the broker keeps serving.
func TestMalformedStreamsNeverTakeTheBrokerDown(t *testing.T) {
	tb := startBroker(t, testConfig(t.TempDir()), testBundle(t, 1))
	r := rand.New(rand.NewPCG(7, 7))
	streams := [][]byte{
		{0x10, 0x80, 0x80, 0x80, 0x80, 0x01},                     // five-byte remaining length
		{0x10, 0x02, 0x00, 0x04},                                 // CONNECT cut short
		{0x30, 0x05, 0x00, 0x01, 'a', 'b', 'c'},                  // PUBLISH before CONNECT
		{0x10, 0x0a, 0x00, 0x04, 'M', 'Q', 'T', 'X', 5, 0, 0, 0}, // wrong protocol name
		[]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
	}
	for range 50 {
		junk := make([]byte, 1+r.IntN(200))
		for i := range junk {
			junk[i] = byte(r.UintN(256))
		}
		streams = append(streams, junk)
	}
	for _, s := range streams {
		conn, err := net.Dial("tcp", tb.tcp)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = conn.Write(s)
		_ = conn.Close()
	}
	c := mustV5(t, tb.tcp, "alice", alicePassword)
	if code := c.subscribe(t, "commands/alice/#", 1); code >= 0x80 {
		t.Errorf("broker misbehaves after hostile input: subscribe 0x%02x", code)
	}
	if tb.Stats().Panics != 0 {
		t.Errorf("%d panics recovered", tb.Stats().Panics)
	}
}

func TestConnectDeadline(t *testing.T) {
	old := broker.ConnectTimeout
	broker.ConnectTimeout = 300 * time.Millisecond
	t.Cleanup(func() { broker.ConnectTimeout = old })
	tb := startBroker(t, testConfig(t.TempDir()), testBundle(t, 1))
	conn, err := net.Dial("tcp", tb.tcp)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if !closedWithin(conn, 3*time.Second) {
		t.Fatal("a connection that never sent CONNECT stayed open")
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("closed after %v, want about 300ms", d)
	}
}

func TestMaxConnectionsReloadsInPlace(t *testing.T) {
	cfg := testConfig(t.TempDir())
	cfg.Limits.MaxConnections = 3
	tb := startBroker(t, cfg, testBundle(t, 1))
	for range 3 {
		mustV5(t, tb.tcp, "alice", alicePassword)
	}
	if _, err := connectV5(t, tb.tcp, v5opts{user: "bob", password: bobPassword}); err == nil {
		t.Fatal("a fourth connection was accepted with maxConnections 3")
	}
	if tb.Stats().ConnectionsRefused == 0 {
		t.Error("refusal not counted")
	}
	cfg.Limits.MaxConnections = 10
	data, _ := brokerconfig.Marshal(cfg)
	if err := tb.ApplyConfig(data); err != nil {
		t.Fatal(err)
	}
	mustV5(t, tb.tcp, "bob", bobPassword)

	// A listener change cannot be applied in place, and is refused.
	cfg.Listeners = cfg.Listeners[:1]
	data, _ = brokerconfig.Marshal(cfg)
	if err := tb.ApplyConfig(data); err == nil {
		t.Error("a listener change was applied without a restart")
	}
}

func TestPublishRateLimit(t *testing.T) {
	cfg := testConfig(t.TempDir())
	cfg.Limits.PublishRatePerClient = 5
	tb := startBroker(t, cfg, testBundle(t, 1))
	alice := mustV5(t, tb.tcp, "alice", alicePassword)
	// Publish as fast as the client can for up to 3 s: far above 5/s even
	// on a loaded machine.
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) && alice.publish(t, "devices/alice/fast", "x", 0, false) == nil {
		select {
		case d := <-alice.disconnect:
			if d.ReasonCode != 0x96 {
				t.Errorf("reason 0x%02x, want 0x96 message rate too high", d.ReasonCode)
			}
			return
		default:
		}
	}
	select {
	case d := <-alice.disconnect:
		if d.ReasonCode != 0x96 {
			t.Errorf("reason 0x%02x, want 0x96 message rate too high", d.ReasonCode)
		}
	case <-time.After(2 * time.Second):
		t.Error("publishing flat out with a limit of 5/s did not disconnect")
	}
}

func TestSubscriptionQuota(t *testing.T) {
	cfg := testConfig(t.TempDir())
	cfg.Limits.MaxSubscriptionsPerClient = 2
	tb := startBroker(t, cfg, testBundle(t, 1))
	bob := mustV5(t, tb.tcp, "bob", bobPassword)
	codes := []byte{bob.subscribe(t, "devices/alice/#", 0), bob.subscribe(t, "devices/+/status", 0), bob.subscribe(t, "commands/bob/#", 0)}
	if codes[0] >= 0x80 || codes[1] >= 0x80 || codes[2] != 0x97 {
		t.Errorf("SUBACK codes %x, want two grants then 0x97 (quota exceeded)", codes)
	}
	if code := bob.subscribe(t, "devices/alice/#", 1); code >= 0x80 {
		t.Errorf("re-subscribing to an existing filter counted against the quota: 0x%02x", code)
	}
}

func TestKeepaliveIsCapped(t *testing.T) {
	tb := startBroker(t, testConfig(t.TempDir()), testBundle(t, 1))
	c, err := connectV5(t, tb.tcp, v5opts{user: "alice", password: alicePassword, keepAlive: 0})
	if err != nil {
		t.Fatal(err)
	}
	if p := c.connack.Properties; p == nil || p.ServerKeepAlive == nil || *p.ServerKeepAlive != 60 {
		t.Errorf("CONNACK server keepalive %+v, want 60 for a client asking for none", p)
	}
}

func TestWebSocket(t *testing.T) {
	tb := startBroker(t, testConfig(t.TempDir()), testBundle(t, 1))
	got := make(chan string, 1)
	bob, err := connectV3("ws://"+tb.ws+"/mqtt", "bob", bobPassword, "bob-ws")
	if err != nil {
		t.Fatal(err)
	}
	defer bob.Disconnect(10)
	bob.Subscribe("devices/alice/#", 1, func(_ pahov3.Client, m pahov3.Message) { got <- string(m.Payload()) }).Wait()
	alice := mustV5(t, tb.tcp, "alice", alicePassword)
	_ = alice.publish(t, "devices/alice/temp", "over-websocket", 1, false)
	select {
	case m := <-got:
		if m != "over-websocket" {
			t.Errorf("got %q", m)
		}
	case <-time.After(3 * time.Second):
		t.Error("no message over WebSocket")
	}
	if _, err := connectV3("ws://"+tb.ws+"/mqtt", "bob", "wrong", "bob-ws-2"); err == nil {
		t.Error("a wrong password was accepted over WebSocket")
	}
}

func TestDrain(t *testing.T) {
	tb := startBroker(t, testConfig(t.TempDir()), testBundle(t, 1))
	clients := []*v5{mustV5(t, tb.tcp, "alice", alicePassword), mustV5(t, tb.tcp, "bob", bobPassword)}
	start := time.Now()
	tb.Drain(context.Background(), 600*time.Millisecond)
	if d := time.Since(start); d < 400*time.Millisecond {
		t.Errorf("drain finished in %v; disconnects should spread over the 600ms period", d)
	}
	for _, c := range clients {
		select {
		case d := <-c.disconnect:
			if d.ReasonCode != 0x9C {
				t.Errorf("reason 0x%02x, want 0x9C use another server", d.ReasonCode)
			}
		case <-time.After(time.Second):
			t.Error("client not told to go elsewhere")
		}
	}
	if err := tb.Ready(); err == nil || !strings.Contains(err.Error(), "draining") {
		t.Errorf("Ready() = %v during drain", err)
	}
	if conn, err := net.DialTimeout("tcp", tb.tcp, time.Second); err == nil {
		_, rerr := conn.Read(make([]byte, 1))
		if !errors.Is(rerr, io.EOF) && rerr == nil {
			t.Error("a drained broker accepted a new connection")
		}
		_ = conn.Close()
	}
}

// A connection accepted before a drain began whose CONNECT arrives during
// it is refused with "use another server" (MQTT 5) or "server unavailable"
// (3.1.1): the drain's client list was taken already, so it would be cut
// off by the final close instead of sent elsewhere (a persistent session
// moved here would go with the pod; seen on kind scaling 5 to 2).
func TestLoginDuringADrainIsSentElsewhere(t *testing.T) {
	tb := startBroker(t, testConfig(t.TempDir()), testBundle(t, 1))
	_ = mustV5(t, tb.tcp, "alice", alicePassword) // the drain waits a step for it
	var early [2]net.Conn
	for i := range early {
		conn, err := net.Dial("tcp", tb.tcp)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		early[i] = conn
	}
	// Accepted by the broker, not only by the kernel: the drain's close of
	// the listener resets connections still in its backlog.
	for deadline := time.Now().Add(5 * time.Second); tb.Stats().ConnectionsOpen < 3; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the broker accepted %d of 3 connections", tb.Stats().ConnectionsOpen)
		}
	}
	drained := make(chan struct{})
	go func() { defer close(drained); tb.Drain(context.Background(), 4*time.Second) }()
	for deadline := time.Now().Add(5 * time.Second); tb.Ready() == nil; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the broker did not turn not-ready when its drain began")
		}
	}
	_, _ = early[0].Write(mqttConnectV5("late-v5", "bob", bobPassword))
	if ack := readPacket(t, early[0]); ack[0] != 0x20 || ack[3] != 0x9C {
		t.Errorf("MQTT 5 login during the drain: CONNACK % x, want reason 0x9c", ack)
	}
	_, _ = early[1].Write(mqttConnect("late-v3", "bob", bobPassword, false))
	if ack := readPacket(t, early[1]); ack[0] != 0x20 || ack[3] != 0x03 {
		t.Errorf("MQTT 3.1.1 login during the drain: CONNACK % x, want return code 0x03", ack)
	}
	if _, ok := tb.Server().Clients.Get("late-v3"); ok {
		t.Error("the refused persistent session was kept")
	}
	<-drained
}

func TestPersistentSessionsAndRetainedMessagesSurviveRestart(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(dir)
	cfg.Storage.Persistent = true
	first := startBroker(t, cfg, testBundle(t, 1))
	bob, err := connectV5(t, first.tcp, v5opts{user: "bob", password: bobPassword, clientID: "bob-persistent", sessionExpiry: 3600, keepAlive: 30})
	if err != nil {
		t.Fatal(err)
	}
	bob.subscribe(t, "devices/alice/#", 1)
	_ = bob.Disconnect(&paho.Disconnect{})
	alice := mustV5(t, first.tcp, "alice", alicePassword)
	if err := alice.publish(t, "devices/alice/status", "retained-online", 1, true); err != nil {
		t.Fatal(err)
	}
	if err := alice.publish(t, "devices/alice/temp", "while-bob-was-away", 1, false); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	first.Drain(ctx, 0)

	second := startBroker(t, cfg, testBundle(t, 1))
	bob2, err := connectV5(t, second.tcp, v5opts{user: "bob", password: bobPassword, clientID: "bob-persistent", sessionExpiry: 3600, keepAlive: 30})
	if err != nil {
		t.Fatal(err)
	}
	if !bob2.connack.SessionPresent {
		t.Error("the persistent session did not survive the restart")
	}
	bob2.expect(t, "while-bob-was-away")
	viewer := mustV5(t, second.tcp, "alice", alicePassword)
	viewer.subscribe(t, "devices/+/status", 1)
	viewer.expect(t, "retained-online")
}

// The QoS 1 redelivery promise: a message acknowledged to the publisher but
// not yet acknowledged by a subscriber that drops is delivered again, with
// the DUP flag, when it comes back.
func TestQoS1RedeliveryAfterReconnect(t *testing.T) {
	tb := startBroker(t, testConfig(t.TempDir()), testBundle(t, 1))
	conn, err := net.Dial("tcp", tb.tcp)
	if err != nil {
		t.Fatal(err)
	}
	// A hand-driven MQTT 3.1.1 subscriber that never sends PUBACK.
	bobConnect := mqttConnect("bob-raw", "bob", bobPassword, false)
	_, _ = conn.Write(bobConnect)
	readPacket(t, conn) // CONNACK
	_, _ = conn.Write([]byte{0x82, byte(2 + 2 + len("devices/alice/#") + 1), 0, 1, 0, byte(len("devices/alice/#"))})
	_, _ = conn.Write([]byte("devices/alice/#"))
	_, _ = conn.Write([]byte{1})
	readPacket(t, conn) // SUBACK
	alice := mustV5(t, tb.tcp, "alice", alicePassword)
	if err := alice.publish(t, "devices/alice/temp", "must-arrive-twice", 1, false); err != nil {
		t.Fatal(err)
	}
	if p := readPacket(t, conn); p[0]&0xf0 != 0x30 || !strings.Contains(string(p), "must-arrive-twice") {
		t.Fatalf("first delivery: %x", p)
	}
	_ = conn.Close() // drop without PUBACK

	conn2, err := net.Dial("tcp", tb.tcp)
	if err != nil {
		t.Fatal(err)
	}
	defer conn2.Close()
	_, _ = conn2.Write(bobConnect)
	if p := readPacket(t, conn2); p[2]&1 != 1 {
		t.Fatalf("CONNACK without session present: %x", p)
	}
	p := readPacket(t, conn2)
	if p[0]&0xf0 != 0x30 || p[0]&0x08 == 0 || !strings.Contains(string(p), "must-arrive-twice") {
		t.Errorf("redelivery: %x, want PUBLISH with DUP", p)
	}
}

func TestMaxQoSIsAdvertisedGrantedAndEnforced(t *testing.T) {
	cfg := testConfig(t.TempDir())
	cfg.Limits.MaxQoS = 1
	tb := startBroker(t, cfg, testBundle(t, 1))
	bob := mustV5(t, tb.tcp, "bob", bobPassword)
	if p := bob.connack.Properties; p == nil || p.MaximumQoS == nil || *p.MaximumQoS != 1 {
		t.Errorf("CONNACK maximum QoS %+v, want 1", p)
	}
	if granted := bob.subscribe(t, "devices/alice/#", 2); granted != 1 {
		t.Errorf("a QoS 2 subscription was granted QoS %d, want 1", granted)
	}
	alice := mustV5(t, tb.tcp, "alice", alicePassword)
	if err := alice.publish(t, "devices/alice/temp", "qos1-ok", 1, false); err != nil {
		t.Fatal(err)
	}
	bob.expect(t, "qos1-ok")

	// paho refuses to send above the advertised maximum, so a raw MQTT
	// 3.1.1 client does (3.1.1 has no way to learn the maximum).
	conn := rawPublish(t, tb.tcp, 0x04, 9, "devices/alice/temp", "qos2-refused")
	if !closedWithin(conn, 2*time.Second) {
		t.Error("a QoS 2 publish above maxQoS 1 did not close the connection")
	}
	_ = alice.publish(t, "devices/alice/temp", "marker", 0, false)
	bob.expectNoneBefore(t, "qos2-refused", "marker")
	if n := tb.Stats().QoSRefused; n != 1 {
		t.Errorf("%d QoS refusals counted, want 1", n)
	}
}

func TestRetainOffRefusesRetainedPublishes(t *testing.T) {
	cfg := testConfig(t.TempDir())
	cfg.Limits.RetainAvailable = false
	tb := startBroker(t, cfg, testBundle(t, 1))
	alice := mustV5(t, tb.tcp, "alice", alicePassword)
	if p := alice.connack.Properties; p == nil || p.RetainAvailable {
		t.Errorf("CONNACK does not say retain is unavailable: %+v", p)
	}
	// paho then refuses to send a retained message, so a raw MQTT 3.1.1
	// client does.
	conn := rawPublish(t, tb.tcp, 0x01, 0, "devices/alice/status", "online")
	if !closedWithin(conn, 2*time.Second) {
		t.Error("a retained publish with retain off did not close the connection")
	}
	if n := tb.Stats().RetainRefused; n != 1 {
		t.Errorf("%d retain refusals counted, want 1", n)
	}
	if n := tb.Stats().Retained; n != 0 {
		t.Errorf("%d retained messages stored with retain off", n)
	}
}

// maxQueuedMessages bounds what one offline persistent session holds; the
// overflow is dropped and counted, the queued ones are delivered on return.
func TestQueueBoundForOfflineSessions(t *testing.T) {
	cfg := testConfig(t.TempDir())
	cfg.Limits.MaxQueuedMessages = 5
	tb := startBroker(t, cfg, testBundle(t, 1))
	bob, err := connectV5(t, tb.tcp, v5opts{user: "bob", password: bobPassword, clientID: "bob-queue", sessionExpiry: 600, keepAlive: 30})
	if err != nil {
		t.Fatal(err)
	}
	bob.subscribe(t, "devices/alice/#", 1)
	_ = bob.Disconnect(&paho.Disconnect{})
	waitOffline(t, tb, "bob-queue")
	alice := mustV5(t, tb.tcp, "alice", alicePassword)
	for i := range 8 {
		if err := alice.publish(t, "devices/alice/seq", fmt.Sprintf("q-%d", i), 1, false); err != nil {
			t.Fatal(err)
		}
	}
	// mochi acknowledges before it fans out, so the last drop may trail the
	// last PUBACK a little.
	deadline := time.Now().Add(2 * time.Second)
	for tb.Stats().QueueFullDropped < 3 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if d := tb.Stats().QueueFullDropped; d != 3 {
		t.Errorf("%d messages counted as dropped, want 3 (8 sent, queue of 5)", d)
	}
	back, err := connectV5(t, tb.tcp, v5opts{user: "bob", password: bobPassword, clientID: "bob-queue", sessionExpiry: 600, keepAlive: 30})
	if err != nil {
		t.Fatal(err)
	}
	// In the order they were published: MQTT's ordering guarantee.
	for i := range 5 {
		select {
		case m := <-back.messages:
			if want := fmt.Sprintf("q-%d", i); string(m.Payload) != want {
				t.Fatalf("message %d of the resumed session is %q, want %q", i, m.Payload, want)
			}
		case <-time.After(3 * time.Second):
			t.Fatalf("message q-%d not delivered", i)
		}
	}
}

// waitOffline waits until the broker has finished disconnecting a client
// (its session kept, or gone).
func waitOffline(t *testing.T, tb *testBroker, clientID string) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for {
		if cl, ok := tb.Server().Clients.Get(clientID); !ok || cl.Closed() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("client %s still connected", clientID)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestSessionExpiryIsCapped(t *testing.T) {
	cfg := testConfig(t.TempDir()) // sessionExpiry 3600 s
	tb := startBroker(t, cfg, testBundle(t, 1))
	c, err := connectV5(t, tb.tcp, v5opts{user: "bob", password: bobPassword, sessionExpiry: 86400, keepAlive: 30})
	if err != nil {
		t.Fatal(err)
	}
	if p := c.connack.Properties; p == nil || p.SessionExpiryInterval == nil || *p.SessionExpiryInterval != 3600 {
		t.Errorf("CONNACK session expiry %+v, want the 3600 s cap for a client asking for a day", p)
	}
}

// maxInflight is the MQTT 5 receive maximum the broker announces: how many
// QoS 1/2 publishes a client may have unacknowledged towards it.
func TestMaxInflightIsTheAnnouncedReceiveMaximum(t *testing.T) {
	cfg := testConfig(t.TempDir())
	cfg.Limits.MaxInflight = 7
	tb := startBroker(t, cfg, testBundle(t, 1))
	c := mustV5(t, tb.tcp, "alice", alicePassword)
	if p := c.connack.Properties; p == nil || p.ReceiveMaximum == nil || *p.ReceiveMaximum != 7 {
		t.Errorf("CONNACK receive maximum %+v, want 7", p)
	}
}
