package broker_test

import (
	"io"
	"net"
	"testing"
	"time"
)

// MQTT 3.1.1 has no DISCONNECT from the server: a session taken over, or a
// broker draining, just closes the connection.
func TestNoDisconnectPacketToMQTT311(t *testing.T) {
	tb := startBroker(t, testConfig(t.TempDir()), testBundle(t, 1))
	login := func() net.Conn {
		conn, err := net.Dial("tcp", tb.tcp)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = conn.Close() })
		_, _ = conn.Write(mqttConnect("v311-takeover", "alice", alicePassword, false))
		if ack := readPacket(t, conn); ack[0] != 0x20 || ack[3] != 0 {
			t.Fatalf("CONNECT refused: % x", ack)
		}
		return conn
	}
	closedSilently := func(what string, conn net.Conn) {
		t.Helper()
		_ = conn.SetReadDeadline(time.Now().Add(3 * time.Second))
		if b, err := io.ReadAll(conn); len(b) > 0 || err != nil {
			t.Errorf("%s: the 3.1.1 client read % x (error %v), want a close and nothing else", what, b, err)
		}
	}
	first := login()
	second := login() // takes the session over
	closedSilently("session taken over", first)
	tb.Drain(t.Context(), 0)
	closedSilently("broker drained", second)
}
