package broker_test

import (
	"fmt"
	"net"
	"testing"
)

// A PUBLISH to a $SYS topic is answered, never left waiting (mochi dropped
// it without a word, so a QoS 1/2 publisher waited forever): MQTT 5 gets
// 0x87, MQTT 3.1.1 the acknowledgement of an accepted message, as from
// mosquitto. Nothing is delivered; the connection stays.
func TestPublishToSysTopicIsAnswered(t *testing.T) {
	tb := startBroker(t, testConfig(t.TempDir()), testBundle(t, 1))
	for _, qos := range []byte{1, 2} {
		conn := rawPublish(t, tb.tcp, qos<<1, 9, "$SYS/broker/uptime", "spoofed")
		expectAck(t, conn, qos, 9, fmt.Sprintf("MQTT 3.1.1 QoS %d", qos))
		if qos == 2 {
			_, _ = conn.Write([]byte{0x62, 2, 0, 9}) // PUBREL
			if p := readPacket(t, conn); p[0] != 0x70 || p[3] != 9 {
				t.Fatalf("MQTT 3.1.1: got % x, want PUBCOMP for packet 9", p)
			}
		}
		expectAlive(t, conn, "MQTT 3.1.1")
		_ = conn.Close()
		waitOffline(t, tb, "raw-alice")
	}

	conn, err := net.Dial("tcp", tb.tcp)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, _ = conn.Write(mqttConnectV5("sys-v5", "alice", alicePassword))
	if ack := readPacket(t, conn); ack[0] != 0x20 || ack[3] != 0 {
		t.Fatalf("CONNECT refused: % x", ack)
	}
	for _, c := range []struct {
		topic string
		qos   byte
		want  byte
	}{{"$SYS/broker/uptime", 1, 0x40}, {"$sys/x", 2, 0x50}} {
		body := append([]byte{0, byte(len(c.topic))}, c.topic...)
		body = append(body, 0, 3, 0) // packet ID 3, no properties
		body = append(body, "spoofed"...)
		_, _ = conn.Write(append([]byte{0x30 | c.qos<<1, byte(len(body))}, body...))
		ack := readPacket(t, conn)
		if ack[0] != c.want || ack[3] != 3 || len(ack) < 5 || ack[4] != 0x87 {
			t.Fatalf("MQTT 5 QoS %d to %s: got % x, want reason 0x87 for packet 3", c.qos, c.topic, ack)
		}
	}
	expectAlive(t, conn, "MQTT 5")
}
