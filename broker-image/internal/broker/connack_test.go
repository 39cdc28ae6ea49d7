package broker_test

import (
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"
)

// rawV5 logs in over MQTT 5 with raw packets, so a test sees exactly what the
// broker sent; props, when set, completes the CONNECT's properties. It
// returns the connection (closed at the test's end) and the CONNACK.
func rawV5(t *testing.T, addr, user, password string, props func(*packets.Properties)) (net.Conn, *packets.Connack) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	cp := packets.NewControlPacket(packets.CONNECT)
	c := cp.Content.(*packets.Connect)
	c.ClientID, c.CleanStart, c.KeepAlive = fmt.Sprintf("raw-%s-%d", user, time.Now().UnixNano()), true, 30
	c.Username, c.UsernameFlag, c.Password, c.PasswordFlag = user, true, []byte(password), true
	if props != nil {
		props(c.Properties)
	}
	if _, err := cp.WriteTo(conn); err != nil {
		t.Fatal(err)
	}
	ack, ok := readV5(t, conn).Content.(*packets.Connack)
	if !ok || ack.ReasonCode != 0 {
		t.Fatalf("login refused: %+v", ack)
	}
	return conn, ack
}

// readV5 reads the next MQTT 5 packet the broker sent, or fails.
func readV5(t *testing.T, conn net.Conn) *packets.ControlPacket {
	t.Helper()
	_ = conn.SetReadDeadline(time.Now().Add(3 * time.Second))
	p, err := packets.ReadPacket(conn)
	if err != nil {
		t.Fatalf("reading a packet: %v", err)
	}
	return p
}

// expectDisconnect reads until the broker's DISCONNECT and checks its reason.
func expectDisconnect(t *testing.T, conn net.Conn, reason byte) {
	t.Helper()
	for {
		p := readV5(t, conn)
		if d, ok := p.Content.(*packets.Disconnect); ok {
			if d.ReasonCode != reason {
				t.Fatalf("DISCONNECT reason 0x%02x, want 0x%02x", d.ReasonCode, reason)
			}
			return
		}
	}
}

// An MQTT 5 client learns in CONNACK every limit it must keep to and what
// the broker supports (issue 11, item 5).
func TestConnackAdvertisesServerLimits(t *testing.T) {
	cfg := testConfig(t.TempDir())
	cfg.Limits.MaxQoS = 1
	tb := startBroker(t, cfg, testBundle(t, 1))
	_, ack := rawV5(t, tb.tcp, "alice", alicePassword, nil)
	p := ack.Properties
	u32 := func(v *uint32) any {
		if v == nil {
			return nil
		}
		return *v
	}
	u16 := func(v *uint16) any {
		if v == nil {
			return nil
		}
		return *v
	}
	b := func(v *byte) any {
		if v == nil {
			return nil
		}
		return *v
	}
	for _, c := range []struct {
		name      string
		got, want any
	}{
		{"Maximum Packet Size", u32(p.MaximumPacketSize), uint32(64 * 1024)},
		{"Receive Maximum", u16(p.ReceiveMaximum), uint16(32)},
		{"Topic Alias Maximum", u16(p.TopicAliasMaximum), uint16(10)},
		{"Maximum QoS", b(p.MaximumQOS), byte(1)},
		{"Retain Available", b(p.RetainAvailable), byte(1)},
		{"Wildcard Subscription Available", b(p.WildcardSubAvailable), byte(1)},
		{"Subscription Identifiers Available", b(p.SubIDAvailable), byte(1)},
		{"Shared Subscription Available", b(p.SharedSubAvailable), byte(1)},
	} {
		if c.got != c.want {
			t.Errorf("CONNACK %s = %v, want %v", c.name, c.got, c.want)
		}
	}

	// Retain off and topic aliases off are said too; maxQoS 2 is said by
	// leaving Maximum QoS out (the only way: it may only be 0 or 1).
	cfg = testConfig(t.TempDir())
	cfg.Limits.RetainAvailable = false
	off := int32(0)
	cfg.Limits.TopicAliasMaximum = &off
	tb = startBroker(t, cfg, testBundle(t, 1))
	_, ack = rawV5(t, tb.tcp, "alice", alicePassword, nil)
	p = ack.Properties
	if b(p.RetainAvailable) != byte(0) || p.TopicAliasMaximum != nil || p.MaximumQOS != nil {
		t.Errorf("CONNACK with retain and aliases off, maxQoS 2: Retain Available %v, Topic Alias Maximum %v, Maximum QoS %v; want 0, absent, absent",
			b(p.RetainAvailable), u16(p.TopicAliasMaximum), b(p.MaximumQOS))
	}
}

// A packet over maxPacketSize from an MQTT 5 client is answered with
// DISCONNECT 0x95 (packet too large) before the close (issue 11, item 5).
func TestOversizePacketGetsDisconnectPacketTooLarge(t *testing.T) {
	tb := startBroker(t, testConfig(t.TempDir()), testBundle(t, 1))
	alice := mustV5(t, tb.tcp, "alice", alicePassword)
	_ = alice.publish(t, "devices/alice/big", strings.Repeat("x", 100*1024), 0, false)
	// paho reports the DISCONNECT on a goroutine of its own, maybe after it
	// saw the connection close: wait for the DISCONNECT itself.
	select {
	case d := <-alice.disconnect:
		if d.ReasonCode != 0x95 {
			t.Errorf("DISCONNECT reason 0x%02x, want 0x95 (packet too large)", d.ReasonCode)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("no DISCONNECT after an oversized PUBLISH")
	}

	// The same over raw packets: the DISCONNECT comes, then the close.
	conn, _ := rawV5(t, tb.tcp, "alice", alicePassword, nil)
	big := packets.NewControlPacket(packets.PUBLISH)
	big.Content.(*packets.Publish).Topic = "devices/alice/big"
	big.Content.(*packets.Publish).Payload = make([]byte, 70*1024)
	go func() { _, _ = big.WriteTo(conn) }()
	expectDisconnect(t, conn, 0x95)
	if _, err := packets.ReadPacket(conn); err == nil {
		t.Error("the connection stayed open after DISCONNECT 0x95")
	}
}

// MQTT 3.1.1 has no DISCONNECT from the server: an oversized packet just
// closes the connection, with nothing sent.
func TestOversizePacketFromMQTT3ClientJustCloses(t *testing.T) {
	tb := startBroker(t, testConfig(t.TempDir()), testBundle(t, 1))
	conn := rawPublish(t, tb.tcp, 0, 0, "devices/alice/temp", "fine")
	// A PUBLISH header announcing 100 KiB, over the 64 KiB limit.
	_, _ = conn.Write([]byte{0x30, 0x80, 0x80, 0x06})
	_ = conn.SetReadDeadline(time.Now().Add(3 * time.Second))
	rest, err := io.ReadAll(conn)
	if len(rest) > 0 {
		t.Errorf("the broker sent %x to a 3.1.1 client before closing; want nothing", rest)
	}
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Error("the connection was not closed")
	}
}
