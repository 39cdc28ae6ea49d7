package broker_test

import (
	"fmt"
	"testing"
)

// An MQTT 3.1.1 PUBLISH the ACLs deny is acknowledged and dropped; the
// connection stays up (mochi closed it, and a reconnecting client resent the
// message forever).
func TestDeniedPublishOfMQTT311IsAcknowledgedAndDropped(t *testing.T) {
	tb := startBroker(t, testConfig(t.TempDir()), testBundle(t, 1))
	for _, qos := range []byte{1, 2} {
		conn := rawPublish(t, tb.tcp, qos<<1, 7, "devices/bob/not-alices", "denied")
		what := fmt.Sprintf("QoS %d", qos)
		expectAck(t, conn, qos, 7, what)
		expectAlive(t, conn, what)
		_ = conn.Close()
		waitOffline(t, tb, "raw-alice")
	}
	if got := tb.Stats().DeniedAcknowledged; got != 2 {
		t.Errorf("counted %d denied and acknowledged, want 2", got)
	}
}
