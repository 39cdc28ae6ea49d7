package broker_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/mqtt-operator/mqtt-operator/internal/brokerconfig"
)

// limitedBundle is testBundle with bob's spec.limits.
func limitedBundle(t testing.TB, generation int64, bob *brokerconfig.UserLimits) *brokerconfig.AuthBundle {
	b := testBundle(t, generation)
	for i := range b.Users {
		if b.Users[i].Username == "bob" {
			b.Users[i].Limits = bob
		}
	}
	return b
}

func refusedWith(err error) byte {
	var r *refusedError
	if errors.As(err, &r) {
		return r.code
	}
	return 0
}

// maxConnections: the user's logins past it are refused (MQTT 5 0x97,
// 3.1.1 return code 3), a login taking over its own client ID does not
// count twice, a connection that ends frees its place, other users are not
// bound by it, and a new bundle changes it at once.
func TestUserMaxConnections(t *testing.T) {
	tb := startBroker(t, testConfig(t.TempDir()), limitedBundle(t, 1, &brokerconfig.UserLimits{MaxConnections: 2}))
	bob := func(id string) (*v5, error) {
		return connectV5(t, tb.tcp, v5opts{user: "bob", password: bobPassword, clientID: id, keepAlive: 30})
	}
	first, err := bob("bob-1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob("bob-2"); err != nil {
		t.Fatal(err)
	}
	if _, err := bob("bob-3"); refusedWith(err) != 0x97 {
		t.Fatalf("bob's third connection: %v, want CONNACK 0x97 (quota exceeded)", err)
	}
	if c, err := connectV3(tb.tcp, "bob", bobPassword, "bob-v3"); err == nil || !strings.Contains(strings.ToLower(err.Error()), "unavailable") {
		if c != nil && err == nil {
			c.Disconnect(0)
		}
		t.Fatalf("bob's third connection over MQTT 3.1.1: %v, want return code 3 (server unavailable)", err)
	}
	// Taking over its own client ID replaces that connection.
	again, err := bob("bob-1")
	if err != nil {
		t.Fatalf("bob taking over his own client ID at the limit: %v", err)
	}
	select {
	case <-first.closed:
	case <-time.After(3 * time.Second):
		t.Fatal("the taken-over connection stayed")
	}
	for i := range 3 {
		_ = mustV5(t, tb.tcp, "alice", alicePassword) // alice has no limit
		_ = i
	}
	// A connection that ends frees its place.
	_ = again.Disconnect(&paho.Disconnect{})
	deadline := time.Now().Add(3 * time.Second)
	early := 0 // tries before the broker saw the connection end
	for {
		if _, err := bob("bob-4"); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("bob after one of his two connections ended: %v", err)
		}
		early++
		time.Sleep(50 * time.Millisecond)
	}
	// Raised live: one more gets in; then none past the new limit.
	tb.apply(t, limitedBundle(t, 2, &brokerconfig.UserLimits{MaxConnections: 3}))
	if _, err := bob("bob-5"); err != nil {
		t.Fatalf("bob's third connection after the limit went to 3: %v", err)
	}
	if _, err := bob("bob-6"); refusedWith(err) != 0x97 {
		t.Fatalf("bob's fourth connection with a limit of 3: %v, want 0x97", err)
	}
	if got := tb.Policy.UserQuotas.ConnectionsRefused.Load(); got != uint64(3+early) {
		t.Errorf("ConnectionsRefused = %d, want %d", got, 3+early)
	}
	// Lifted: no limit.
	tb.apply(t, limitedBundle(t, 3, nil))
	if _, err := bob("bob-7"); err != nil {
		t.Fatalf("bob with no limit: %v", err)
	}
}

// maxSubscriptions: a filter past the user's limit is refused with 0x97
// (MQTT 5) while the rest of the SUBSCRIBE proceeds; raising it applies to
// the connection already open.
func TestUserMaxSubscriptions(t *testing.T) {
	tb := startBroker(t, testConfig(t.TempDir()), limitedBundle(t, 1, &brokerconfig.UserLimits{MaxSubscriptions: 1}))
	bob := mustV5(t, tb.tcp, "bob", bobPassword)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	sa, err := bob.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{
		{Topic: "devices/alice/#", QoS: 1}, {Topic: "devices/+/status", QoS: 1},
	}})
	if err != nil && sa == nil {
		t.Fatal(err)
	}
	if len(sa.Reasons) != 2 || sa.Reasons[0] != 1 || sa.Reasons[1] != 0x97 {
		t.Fatalf("SUBACK %x, want a grant then 0x97 (quota exceeded)", sa.Reasons)
	}
	// The broker's own subscription quota answers 0x97 too (10 here).
	tb.apply(t, limitedBundle(t, 2, &brokerconfig.UserLimits{MaxSubscriptions: 3}))
	if code := bob.subscribe(t, "devices/+/status", 1); code != 1 {
		t.Fatalf("a second subscription after the limit went to 3: 0x%02x", code)
	}
	if got := tb.Policy.UserQuotas.SubscriptionsRefused.Load(); got != 1 {
		t.Errorf("SubscriptionsRefused = %d, want 1", got)
	}
	// MQTT 3.1.1: 0x80.
	conn, err := net.Dial("tcp", tb.tcp)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, _ = conn.Write(mqttConnect("bob-raw", "bob", bobPassword, true))
	readPacket(t, conn)
	sub := func(id byte, topic string) byte {
		body := append([]byte{0, id, 0, byte(len(topic))}, topic...)
		_, _ = conn.Write(append([]byte{0x82, byte(len(body) + 1)}, append(body, 1)...))
		ack := readPacket(t, conn)
		return ack[len(ack)-1]
	}
	for i, topic := range []string{"devices/alice/#", "devices/+/status", "commands/bob/#"} {
		if code := sub(byte(i+1), topic); code != 1 {
			t.Fatalf("MQTT 3.1.1 subscription %d: 0x%02x", i+1, code)
		}
	}
	if code := sub(4, "commands/bob/x"); code != 0x80 {
		t.Fatalf("MQTT 3.1.1 subscription over the limit: 0x%02x, want 0x80", code)
	}
}

// publishRate: a client above it is slowed, never disconnected, and gets
// every message through; another client publishing meanwhile is not held
// back. The rate is read from the bundle in force.
func TestUserPublishRateSlowsTheClient(t *testing.T) {
	tb := startBroker(t, testConfig(t.TempDir()), limitedBundle(t, 1, &brokerconfig.UserLimits{PublishRate: 20}))
	reader := mustV5(t, tb.tcp, "alice", alicePassword)
	reader.subscribe(t, "devices/+/status", 0)
	bob := mustV5(t, tb.tcp, "bob", bobPassword)
	alice := mustV5(t, tb.tcp, "alice", alicePassword)
	start := time.Now()
	const n = 50 // 20 in the first second's burst, 30 more at 20/s: about 1.5 s
	go func() {
		for i := range n {
			_ = bob.publish(t, "devices/bob/status", fmt.Sprint("bob-", i), 0, false)
		}
	}()
	time.Sleep(300 * time.Millisecond) // bob is being slowed now
	sent := time.Now()
	if err := alice.publish(t, "devices/alice/status", "alice meanwhile", 0, false); err != nil {
		t.Fatal(err)
	}
	gotBob, aliceAfter := 0, time.Duration(0)
	for gotBob < n {
		select {
		case m := <-reader.messages:
			if string(m.Payload) == "alice meanwhile" {
				aliceAfter = time.Since(sent)
			} else {
				gotBob++
			}
		case <-bob.closed:
			t.Fatal("bob was disconnected; he should have been slowed")
		case <-time.After(5 * time.Second):
			t.Fatalf("%d of bob's %d messages arrived", gotBob, n)
		}
	}
	took := time.Since(start)
	if took < 1200*time.Millisecond {
		t.Errorf("bob's %d messages at a limit of 20/s arrived in %v: not slowed", n, took)
	}
	if aliceAfter == 0 || aliceAfter > 500*time.Millisecond {
		t.Errorf("alice's message, published while bob was slowed, took %v", aliceAfter)
	}
	if tb.Policy.UserQuotas.RateSlowed.Load() == 0 || tb.Policy.UserQuotas.SlowedNanos.Load() == 0 {
		t.Error("the slowing was not counted")
	}
	// Lifted live: bob publishes at full speed.
	tb.apply(t, limitedBundle(t, 2, nil))
	start = time.Now()
	for i := range n {
		_ = bob.publish(t, "devices/bob/status", fmt.Sprint("fast-", i), 0, false)
	}
	for range n {
		select {
		case <-reader.messages:
		case <-time.After(3 * time.Second):
			t.Fatal("a message went missing")
		}
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("without a limit bob's %d messages took %v", n, took)
	}
}

// publishBytesPerSecond slows a client by the bytes it publishes.
func TestUserPublishBandwidthSlowsTheClient(t *testing.T) {
	tb := startBroker(t, testConfig(t.TempDir()), limitedBundle(t, 1, &brokerconfig.UserLimits{PublishBytesPerSecond: 8192}))
	reader := mustV5(t, tb.tcp, "alice", alicePassword)
	reader.subscribe(t, "devices/+/status", 0)
	bob := mustV5(t, tb.tcp, "bob", bobPassword)
	payload := strings.Repeat("x", 2000)
	start := time.Now()
	for range 8 { // 16 KB: 8 KiB at once, the rest at 8 KiB/s
		if err := bob.publish(t, "devices/bob/status", payload, 0, false); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 8 {
		select {
		case <-reader.messages:
		case <-time.After(5 * time.Second):
			t.Fatalf("message %d did not arrive", i)
		}
	}
	if took := time.Since(start); took < 800*time.Millisecond {
		t.Errorf("16 KB at 8 KiB/s arrived in %v: not slowed", took)
	}
	if tb.Policy.UserQuotas.BytesSlowed.Load() == 0 {
		t.Error("the slowing was not counted")
	}
}

// maxInflight: an MQTT 5 client is told it as its Receive Maximum, and a
// subscriber gets no more unacknowledged QoS 1 messages than that (MQTT
// 3.1.1 here, which is never told): the next waits for a PUBACK.
func TestUserMaxInflight(t *testing.T) {
	tb := startBroker(t, testConfig(t.TempDir()), limitedBundle(t, 1, &brokerconfig.UserLimits{MaxInflight: 2}))
	bob := mustV5(t, tb.tcp, "bob", bobPassword)
	if p := bob.connack.Properties; p == nil || p.ReceiveMaximum == nil || *p.ReceiveMaximum != 2 {
		t.Errorf("bob's CONNACK Receive Maximum %+v, want 2", p)
	}
	if alice := mustV5(t, tb.tcp, "alice", alicePassword); alice.connack.Properties.ReceiveMaximum != nil && *alice.connack.Properties.ReceiveMaximum == 2 {
		t.Error("alice, who has no limit, was told bob's")
	}
	conn, err := net.Dial("tcp", tb.tcp)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, _ = conn.Write(mqttConnect("bob-raw", "bob", bobPassword, true))
	readPacket(t, conn)
	topic := "devices/alice/x"
	body := append([]byte{0, 1, 0, byte(len(topic))}, topic...)
	_, _ = conn.Write(append([]byte{0x82, byte(len(body) + 1)}, append(body, 1)...))
	readPacket(t, conn) // SUBACK
	alice := mustV5(t, tb.tcp, "alice", alicePassword)
	for i := range 5 {
		if err := alice.publish(t, topic, fmt.Sprint("m", i), 1, false); err != nil {
			t.Fatal(err)
		}
	}
	var ids [][2]byte
	for range 2 {
		p := readPacket(t, conn)
		if p[0]&0xF0 != 0x30 {
			t.Fatalf("got % x, want a PUBLISH", p)
		}
		n := int(p[2])<<8 | int(p[3]) // topic length
		ids = append(ids, [2]byte{p[4+n], p[5+n]})
	}
	_ = conn.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	if n, err := conn.Read(make([]byte, 1)); n > 0 || err == nil {
		t.Fatal("a third unacknowledged message was sent with maxInflight 2")
	}
	_, _ = conn.Write([]byte{0x40, 2, ids[0][0], ids[0][1]}) // PUBACK the first
	if p := readPacket(t, conn); p[0]&0xF0 != 0x30 {
		t.Fatalf("after a PUBACK got % x, want the third PUBLISH", p)
	}
}

// maxConnections counts over every pod of a cluster.
func TestClusterUserMaxConnectionsCountsEveryPod(t *testing.T) {
	pods := startCluster(t, 2, clusterOpts{})
	limited := clusterBundle(t)
	limited.Generation = 2
	for i := range limited.Users {
		if limited.Users[i].Username == "bob" {
			limited.Users[i].Limits = &brokerconfig.UserLimits{MaxConnections: 2}
		}
	}
	for _, p := range pods {
		p.apply(t, limited)
	}
	bobOn := func(p *testBroker, id string) (*v5, error) {
		return connectV5(t, p.tcp, v5opts{user: "bob", password: bobPassword, clientID: id, keepAlive: 30})
	}
	if _, err := bobOn(pods[0], "b1"); err != nil {
		t.Fatal(err)
	}
	b2, err := bobOn(pods[1], "b2")
	if err != nil {
		t.Fatal(err)
	}
	for i, p := range pods {
		if _, err := bobOn(p, fmt.Sprint("b3-", i)); refusedWith(err) != 0x97 {
			t.Fatalf("bob's third connection, on pod-%d: %v, want 0x97", i, err)
		}
	}
	// b1 moving to pod-1 takes its own place.
	if _, err := bobOn(pods[1], "b1"); err != nil {
		t.Fatalf("b1 moving to the other pod at the limit: %v", err)
	}
	_ = b2.Disconnect(&paho.Disconnect{})
	deadline := time.Now().Add(3 * time.Second)
	for {
		if _, err := bobOn(pods[0], "b4"); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("bob after b2 left: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
