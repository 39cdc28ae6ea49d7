package broker_test

import (
	"net"
	"testing"
)

// mqttConnectV5 encodes an MQTT 5 clean-start CONNECT without properties.
func mqttConnectV5(clientID, user, password string) []byte {
	str := func(s string) []byte { return append([]byte{byte(len(s) >> 8), byte(len(s))}, s...) }
	body := append(str("MQTT"), 5, 0xC2, 0, 30, 0) // username, password, clean start; no properties
	for _, s := range []string{clientID, user, password} {
		body = append(body, str(s)...)
	}
	return append([]byte{0x10, byte(len(body))}, body...)
}

// An MQTT 5 PUBLISH whose topic is not valid UTF-8, or holds U+0000, gets
// DISCONNECT 0x81 (malformed packet) before the close.
func TestMalformedTopicGetsDisconnect0x81(t *testing.T) {
	tb := startBroker(t, testConfig(t.TempDir()), testBundle(t, 1))
	for name, topic := range map[string]string{"nul": "devices/bob/\x00", "invalid utf-8": "devices/bob/\xff"} {
		conn, err := net.Dial("tcp", tb.tcp)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = conn.Write(mqttConnectV5("malformed-"+name, "bob", bobPassword))
		if ack := readPacket(t, conn); ack[0] != 0x20 || ack[3] != 0 {
			t.Fatalf("%s: CONNECT refused: % x", name, ack)
		}
		body := append([]byte{0, byte(len(topic))}, topic...)
		body = append(body, 0) // no properties
		_, _ = conn.Write(append([]byte{0x30, byte(len(body))}, body...))
		if p := readPacket(t, conn); p[0] != 0xE0 || p[2] != 0x81 {
			t.Errorf("%s: got % x, want DISCONNECT 0x81", name, p)
		}
		_ = conn.Close()
	}
}
