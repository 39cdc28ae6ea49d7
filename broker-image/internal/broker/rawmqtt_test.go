package broker_test

import (
	"io"
	"net"
	"testing"
	"time"
)

// mqttConnect encodes an MQTT 3.1.1 CONNECT with clean session off.
func mqttConnect(clientID, user, password string, clean bool) []byte {
	str := func(s string) []byte { return append([]byte{byte(len(s) >> 8), byte(len(s))}, s...) }
	flags := byte(0xC0) // username and password
	if clean {
		flags |= 0x02
	}
	body := append(str("MQTT"), 4, flags, 0, 30)
	body = append(body, str(clientID)...)
	body = append(body, str(user)...)
	body = append(body, str(password)...)
	return append([]byte{0x10, byte(len(body))}, body...)
}

// readPacket reads one whole MQTT packet (remaining length < 16 KiB).
func readPacket(t *testing.T, conn net.Conn) []byte {
	t.Helper()
	_ = conn.SetReadDeadline(time.Now().Add(3 * time.Second))
	head := make([]byte, 2)
	if _, err := io.ReadFull(conn, head); err != nil {
		t.Fatalf("reading packet: %v", err)
	}
	length := int(head[1] & 0x7f)
	out := head
	if head[1]&0x80 != 0 {
		b := make([]byte, 1)
		if _, err := io.ReadFull(conn, b); err != nil {
			t.Fatal(err)
		}
		length += int(b[0]) << 7
		out = append(out, b[0])
	}
	body := make([]byte, length)
	if _, err := io.ReadFull(conn, body); err != nil {
		t.Fatalf("reading packet body: %v", err)
	}
	return append(out, body...)
}

// rawPublish logs in as alice over MQTT 3.1.1 and sends one PUBLISH with the
// given flags (bits 0-3 of the fixed header: QoS << 1, retain) and packet ID
// (used for QoS > 0), bypassing the checks a client library makes. The
// connection is returned for the test to watch, and closed at its end.
func rawPublish(t *testing.T, addr string, flags byte, packetID uint16, topic, payload string) net.Conn {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	_, _ = conn.Write(mqttConnect("raw-alice", "alice", alicePassword, true))
	readPacket(t, conn) // CONNACK
	body := append([]byte{0, byte(len(topic))}, topic...)
	if flags&0x06 != 0 {
		body = append(body, byte(packetID>>8), byte(packetID))
	}
	body = append(body, payload...)
	_, _ = conn.Write(append([]byte{0x30 | flags, byte(len(body))}, body...))
	return conn
}

// expectAck reads the acknowledgement of a QoS 1 (PUBACK) or QoS 2 (PUBREC)
// PUBLISH with packet ID id (below 256), or fails.
func expectAck(t *testing.T, conn net.Conn, qos, id byte, what string) {
	t.Helper()
	ack := readPacket(t, conn)
	want := byte(0x40) // PUBACK
	if qos == 2 {
		want = 0x50 // PUBREC
	}
	if ack[0] != want || ack[2] != 0 || ack[3] != id {
		t.Fatalf("%s: got % x, want the acknowledgement of packet %d", what, ack, id)
	}
}

// expectAlive sends PINGREQ and fails unless PINGRESP comes back: the
// connection is still up.
func expectAlive(t *testing.T, conn net.Conn, what string) {
	t.Helper()
	_, _ = conn.Write([]byte{0xC0, 0})
	if p := readPacket(t, conn); p[0] != 0xD0 {
		t.Fatalf("%s: got % x, want PINGRESP (the connection stays)", what, p)
	}
}
