package broker_test

import (
	"testing"
)

// An MQTT 3.1.1 PUBLISH the ACLs deny is acknowledged and dropped; the
// connection stays up (mochi closed it, and a reconnecting client resent the
// message forever).
func TestDeniedPublishOfMQTT311IsAcknowledgedAndDropped(t *testing.T) {
	tb := startBroker(t, testConfig(t.TempDir()), testBundle(t, 1))
	for _, qos := range []byte{1, 2} {
		conn := rawPublish(t, tb.tcp, qos<<1, 7, "devices/bob/not-alices", "denied")
		ack := readPacket(t, conn)
		want := byte(0x40) // PUBACK
		if qos == 2 {
			want = 0x50 // PUBREC
		}
		if ack[0] != want || ack[2] != 0 || ack[3] != 7 {
			t.Fatalf("QoS %d: got % x, want the acknowledgement of packet 7", qos, ack)
		}
		_, _ = conn.Write([]byte{0xC0, 0}) // PINGREQ: the connection is still up
		if p := readPacket(t, conn); p[0] != 0xD0 {
			t.Fatalf("QoS %d: got % x, want PINGRESP", qos, p)
		}
		_ = conn.Close()
		waitOffline(t, tb, "raw-alice")
	}
	if got := tb.Stats().DeniedAcknowledged; got != 2 {
		t.Errorf("counted %d denied and acknowledged, want 2", got)
	}
}
