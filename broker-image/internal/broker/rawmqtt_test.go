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
