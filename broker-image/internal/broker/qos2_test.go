package broker_test

import (
	"net"
	"strings"
	"testing"
	"time"
)

// rawSubscriber is a hand-driven MQTT 3.1.1 client with a persistent
// session, so a test controls exactly which acknowledgements it sends.
type rawSubscriber struct {
	t    *testing.T
	addr string
	conn net.Conn
}

func (s *rawSubscriber) connect(wantSessionPresent bool) {
	s.t.Helper()
	conn, err := net.Dial("tcp", s.addr)
	if err != nil {
		s.t.Fatal(err)
	}
	s.conn = conn
	_, _ = conn.Write(mqttConnect("bob-qos2", "bob", bobPassword, false))
	ack := readPacket(s.t, conn)
	if present := ack[2]&1 == 1; present != wantSessionPresent {
		s.t.Fatalf("CONNACK session present %v, want %v", present, wantSessionPresent)
	}
}

func (s *rawSubscriber) send(b ...byte) { _, _ = s.conn.Write(b) }

// expectPublish reads a PUBLISH with the payload and returns its packet ID
// and DUP flag.
func (s *rawSubscriber) expectPublish(payload string) (id [2]byte, dup bool) {
	s.t.Helper()
	p := readPacket(s.t, s.conn)
	if p[0]&0xf0 != 0x30 || p[0]&0x06 != 0x04 || !strings.HasSuffix(string(p), payload) {
		s.t.Fatalf("got %x, want a QoS 2 PUBLISH of %q", p, payload)
	}
	topicLen := int(p[2])<<8 | int(p[3])
	return [2]byte{p[4+topicLen], p[5+topicLen]}, p[0]&0x08 != 0
}

// complete runs the receiver's side of the QoS 2 flow for id.
func (s *rawSubscriber) complete(id [2]byte) {
	s.t.Helper()
	s.send(0x50, 0x02, id[0], id[1]) // PUBREC
	if p := readPacket(s.t, s.conn); p[0] != 0x62 {
		s.t.Fatalf("got %x, want PUBREL", p)
	}
	s.send(0x70, 0x02, id[0], id[1]) // PUBCOMP
}

// QoS 2 is exactly once: a message whose PUBREC never came is redelivered
// (DUP set) on the next connection; once PUBREC is sent the broker moves to
// PUBREL, survives another reconnect in that state, and after PUBCOMP the
// message never comes back.
func TestQoS2ExactlyOnceAcrossReconnects(t *testing.T) {
	tb := startBroker(t, testConfig(t.TempDir()), testBundle(t, 1))
	sub := &rawSubscriber{t: t, addr: tb.tcp}
	sub.connect(false)
	filter := "devices/alice/#"
	sub.send(append(append([]byte{0x82, byte(2 + 2 + len(filter) + 1), 0, 1, 0, byte(len(filter))}, filter...), 2)...)
	if p := readPacket(t, sub.conn); p[0] != 0x90 || p[len(p)-1] != 2 {
		t.Fatalf("SUBACK %x, want QoS 2 granted", p)
	}

	alice := mustV5(t, tb.tcp, "alice", alicePassword)
	if err := alice.publish(t, "devices/alice/temp", "exactly-once", 2, false); err != nil {
		t.Fatal(err)
	}
	id, dup := sub.expectPublish("exactly-once")
	if dup {
		t.Error("first delivery has DUP set")
	}
	_ = sub.conn.Close() // no PUBREC

	sub.connect(true)
	id2, dup := sub.expectPublish("exactly-once")
	if !dup || id2 != id {
		t.Fatalf("redelivery id %x dup %v, want id %x with DUP", id2, dup, id)
	}
	sub.send(0x50, 0x02, id[0], id[1]) // PUBREC
	if p := readPacket(t, sub.conn); p[0] != 0x62 || p[2] != id[0] || p[3] != id[1] {
		t.Fatalf("got %x, want PUBREL for %x", p, id)
	}
	_ = sub.conn.Close() // no PUBCOMP

	sub.connect(true)
	if p := readPacket(t, sub.conn); p[0] != 0x62 || p[2] != id[0] || p[3] != id[1] {
		t.Fatalf("after reconnect got %x, want the PUBREL again (not the PUBLISH)", p)
	}
	sub.send(0x70, 0x02, id[0], id[1]) // PUBCOMP

	// The next message is a new one, here and after another reconnect: the
	// completed one never comes back. (Order makes the absence certain.)
	if err := alice.publish(t, "devices/alice/temp", "marker-1", 2, false); err != nil {
		t.Fatal(err)
	}
	next, _ := sub.expectPublish("marker-1")
	sub.complete(next)
	// PUBCOMP has no answer. Close only once the broker has read it: a
	// reconnect that takes the session over before the old connection's
	// PUBCOMP is processed gets the PUBREL again, which MQTT allows (the
	// client answers PUBCOMP without state) but this test would misread.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		cl, ok := tb.Server().Clients.Get("bob-qos2")
		if !ok {
			t.Fatal("bob-qos2 has no session")
		}
		if cl.State.Inflight.Len() == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("broker still holds %d inflight messages for bob-qos2 after PUBCOMP", cl.State.Inflight.Len())
		}
	}
	_ = sub.conn.Close()
	sub.connect(true)
	if err := alice.publish(t, "devices/alice/temp", "marker-2", 2, false); err != nil {
		t.Fatal(err)
	}
	sub.expectPublish("marker-2")
	_ = sub.conn.Close()
}
