package broker_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"
)

// Topic aliases (issue 11, item 4).

func aliasProp(a uint16) *paho.PublishProperties { return &paho.PublishProperties{TopicAlias: &a} }

// A client that sets an alias and then publishes with the alias alone is
// judged, and delivered, by the topic the alias stands for.
func TestTopicAliasFromClientIsResolvedBeforeTheACL(t *testing.T) {
	tb := startBroker(t, testConfig(t.TempDir()), testBundle(t, 1))
	bob := mustV5(t, tb.tcp, "bob", bobPassword)
	bob.subscribe(t, "devices/alice/#", 1)
	alice := mustV5(t, tb.tcp, "alice", alicePassword)
	if m := alice.connack.Properties.TopicAliasMaximum; m == nil || *m != 10 {
		t.Fatalf("CONNACK Topic Alias Maximum %v, want 10", m)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for i, topic := range []string{"devices/alice/temp", "", ""} {
		resp, err := alice.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Payload: []byte(fmt.Sprintf("aliased-%d", i)), Properties: aliasProp(3)})
		if err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
		if resp.ReasonCode >= 0x80 {
			t.Fatalf("publish %d with alias 3 (topic %q) refused: PUBACK 0x%02x", i, topic, resp.ReasonCode)
		}
	}
	for i := range 3 {
		if m := bob.expect(t, fmt.Sprintf("aliased-%d", i)); m.Topic != "devices/alice/temp" {
			t.Errorf("message %d arrived on %q, want devices/alice/temp", i, m.Topic)
		}
	}

	// An alias stands for what the ACLs allow, no more: alice may not
	// publish to bob's topics through one.
	resp, err := alice.Publish(ctx, &paho.Publish{Topic: "devices/bob/temp", QoS: 1, Payload: []byte("x"), Properties: aliasProp(4)})
	if resp == nil || resp.ReasonCode != 0x87 {
		t.Fatalf("aliased publish to another user's topic: %v, %+v; want PUBACK 0x87", err, resp)
	}
	resp, err = alice.Publish(ctx, &paho.Publish{QoS: 1, Payload: []byte("x"), Properties: aliasProp(4)})
	if resp == nil || resp.ReasonCode != 0x87 {
		t.Fatalf("publish by an alias for another user's topic: %v, %+v; want PUBACK 0x87", err, resp)
	}
}

// An alias above the advertised maximum, or 0, ends the connection with
// DISCONNECT 0x94; an empty topic with an alias never set, with 0x82.
func TestInvalidTopicAliasesDisconnect(t *testing.T) {
	tb := startBroker(t, testConfig(t.TempDir()), testBundle(t, 1))
	for _, c := range []struct {
		name   string
		topic  string
		alias  uint16
		reason byte
	}{
		{"alias above the maximum", "devices/alice/temp", 11, 0x94},
		{"alias 0", "devices/alice/temp", 0, 0x94},
		{"unknown alias, empty topic", "", 5, 0x82},
	} {
		t.Run(c.name, func(t *testing.T) {
			conn, _ := rawV5(t, tb.tcp, "alice", alicePassword, nil)
			pub := packets.NewControlPacket(packets.PUBLISH)
			p := pub.Content.(*packets.Publish)
			p.Topic, p.Payload, p.Properties.TopicAlias = c.topic, []byte("x"), &c.alias
			if _, err := pub.WriteTo(conn); err != nil {
				t.Fatal(err)
			}
			expectDisconnect(t, conn, c.reason)
		})
	}

	if n := tb.Stats().TopicAliasRefused; n != 3 {
		t.Errorf("%d topic alias refusals counted, want 3", n)
	}

	// With aliases turned off, none is advertised and any is refused.
	cfg := testConfig(t.TempDir())
	off := int32(0)
	cfg.Limits.TopicAliasMaximum = &off
	tb = startBroker(t, cfg, testBundle(t, 1))
	conn, ack := rawV5(t, tb.tcp, "alice", alicePassword, nil)
	if ack.Properties.TopicAliasMaximum != nil {
		t.Errorf("CONNACK advertises %d topic aliases with them off", *ack.Properties.TopicAliasMaximum)
	}
	pub := packets.NewControlPacket(packets.PUBLISH)
	one := uint16(1)
	pub.Content.(*packets.Publish).Topic, pub.Content.(*packets.Publish).Properties.TopicAlias = "devices/alice/temp", &one
	_, _ = pub.WriteTo(conn)
	expectDisconnect(t, conn, 0x94)
}

// aliasResolver follows the aliases the broker sends one connection, as a
// client must, and records how they were used.
type aliasResolver struct {
	t       *testing.T
	max     uint16
	aliases map[uint16]string
	byAlias int // messages that came as their alias alone
}

func (r *aliasResolver) topic(m *paho.Publish) string {
	r.t.Helper()
	if m.Properties == nil || m.Properties.TopicAlias == nil {
		return m.Topic
	}
	a := *m.Properties.TopicAlias
	if a == 0 || a > r.max {
		r.t.Fatalf("broker sent topic alias %d; the client allows 1 to %d", a, r.max)
	}
	if m.Topic != "" {
		r.aliases[a] = m.Topic
		return m.Topic
	}
	topic, ok := r.aliases[a]
	if !ok {
		r.t.Fatalf("broker sent alias %d alone before setting it", a)
	}
	r.byAlias++
	return topic
}

// A client that advertises a Topic Alias Maximum is sent aliases, never
// more than it allows, and every message resolves to its own topic.
func TestTopicAliasesToClientResolveToTheRightTopics(t *testing.T) {
	tb := startBroker(t, testConfig(t.TempDir()), testBundle(t, 1))
	bob, err := connectV5(t, tb.tcp, v5opts{user: "bob", password: bobPassword, keepAlive: 30,
		connectProps: func(p *paho.ConnectProperties) { two := uint16(2); p.TopicAliasMaximum = &two }})
	if err != nil {
		t.Fatal(err)
	}
	bob.subscribe(t, "devices/alice/#", 1)
	alice := mustV5(t, tb.tcp, "alice", alicePassword)
	topics := []string{"devices/alice/a", "devices/alice/b", "devices/alice/c"}
	const n = 30
	for i := range n {
		if err := alice.publish(t, topics[i%3], fmt.Sprintf("m-%d", i), byte(i%2), false); err != nil {
			t.Fatal(err)
		}
	}
	r := &aliasResolver{t: t, max: 2, aliases: map[uint16]string{}}
	for i := range n {
		m := bob.expect(t, fmt.Sprintf("m-%d", i))
		if got := r.topic(m); got != topics[i%3] {
			t.Errorf("message %d resolved to %q, want %q", i, got, topics[i%3])
		}
	}
	if r.byAlias == 0 {
		t.Error("no message came as its alias alone: the broker sent no aliases")
	}
	// Every byte flow control counted for bob is released once he has
	// everything: an aliased message is counted with its topic both ways.
	deadline := time.Now().Add(3 * time.Second)
	for tb.Policy.Flow.QueuedBytes() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d bytes still counted as queued after every message was delivered", tb.Policy.Flow.QueuedBytes())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A QoS 1 message sent as its alias alone and resent on a new connection
// names its topic: the new connection never saw the alias.
func TestResentMessagesNameTheirTopicOnANewConnection(t *testing.T) {
	tb := startBroker(t, testConfig(t.TempDir()), testBundle(t, 1))
	aliases := func(p *paho.ConnectProperties) { five := uint16(5); p.TopicAliasMaximum = &five }
	// bob acknowledges nothing on his first connection.
	conn, err := dial(tb.tcp, nil)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan *paho.Publish, 10)
	first := paho.NewClient(paho.ClientConfig{Conn: conn, EnableManualAcknowledgment: true,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			got <- pr.Packet
			return true, nil
		}}})
	expiry := uint32(600)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cp := &paho.Connect{ClientID: "bob-resend", KeepAlive: 30, Username: "bob", UsernameFlag: true, Password: []byte(bobPassword), PasswordFlag: true,
		Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiry}}
	aliases(cp.Properties)
	if _, err := first.Connect(ctx, cp); err != nil {
		t.Fatal(err)
	}
	if _, err := first.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "devices/alice/#", QoS: 1}}}); err != nil {
		t.Fatal(err)
	}
	// The first message, which sets the alias, is acknowledged; the next
	// two, sent as the alias alone, are not.
	alice := mustV5(t, tb.tcp, "alice", alicePassword)
	for i := range 3 {
		if err := alice.publish(t, "devices/alice/temp", fmt.Sprintf("unacked-%d", i), 1, false); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 3 {
		select {
		case m := <-got:
			if i == 0 {
				if err := first.Ack(m); err != nil {
					t.Fatal(err)
				}
			}
		case <-time.After(3 * time.Second):
			t.Fatal("bob's first connection got fewer than 3 messages")
		}
	}
	// Once the broker has the acknowledgement, it holds the other two.
	deadline := time.Now().Add(3 * time.Second)
	for {
		if cl, ok := tb.Server().Clients.Get("bob-resend"); ok && cl.State.Inflight.Len() == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the broker never had exactly the two unacknowledged messages in flight")
		}
		time.Sleep(5 * time.Millisecond)
	}
	_ = conn.Close() // unacknowledged: the session keeps both
	waitOffline(t, tb, "bob-resend")

	bob, err := connectV5(t, tb.tcp, v5opts{user: "bob", password: bobPassword, clientID: "bob-resend", sessionExpiry: 600, keepAlive: 30, connectProps: aliases})
	if err != nil {
		t.Fatal(err)
	}
	r := &aliasResolver{t: t, max: 5, aliases: map[uint16]string{}}
	for i := 1; i <= 2; i++ {
		select {
		case m := <-bob.messages:
			if string(m.Payload) != fmt.Sprintf("unacked-%d", i) {
				t.Fatalf("resent message %q, want unacked-%d", m.Payload, i)
			}
			if topic := r.topic(m); topic != "devices/alice/temp" {
				t.Errorf("resent message %d resolved to %q, want devices/alice/temp", i, topic)
			}
		case <-time.After(3 * time.Second):
			t.Fatalf("message unacked-%d not resent", i)
		}
	}
}
