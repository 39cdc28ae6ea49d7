package broker_test

import (
	"net"
	"testing"
	"time"
)

// A will delay of 2 s is honoured within 0.5 s (mochi's once-a-second loop
// sent it after about 3 s).
func TestWillDelayIsOnTime(t *testing.T) {
	tb := startBroker(t, testConfig(t.TempDir()), testBundle(t, 1))
	alice := mustV5(t, tb.tcp, "alice", alicePassword)
	alice.subscribe(t, "devices/+/status", 0)
	str := func(s string) []byte { return append([]byte{byte(len(s) >> 8), byte(len(s))}, s...) }
	body := append(str("MQTT"), 5, 0xC6, 0, 30)       // username, password, will, clean start
	body = append(body, 5, 0x11, 0, 0, 0, 60)         // session expiry 60 s
	body = append(body, str("bob-delayed-will")...)   // client ID
	body = append(body, 5, 0x18, 0, 0, 0, 2)          // will delay 2 s
	body = append(body, str("devices/bob/status")...) // will topic
	body = append(body, str("delayed-will")...)
	body = append(body, str("bob")...)
	body = append(body, str(bobPassword)...)
	conn, err := net.Dial("tcp", tb.tcp)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = conn.Write(append([]byte{0x10, byte(len(body))}, body...))
	if ack := readPacket(t, conn); ack[0] != 0x20 || ack[3] != 0 {
		t.Fatalf("CONNECT refused: % x", ack)
	}
	start := time.Now()
	_ = conn.Close() // no DISCONNECT: the will is due after its delay
	alice.expect(t, "delayed-will")
	if took := time.Since(start); took < 2*time.Second || took > 2500*time.Millisecond {
		t.Errorf("will sent after %v, want 2 s (within 0.5 s)", took)
	}
}
