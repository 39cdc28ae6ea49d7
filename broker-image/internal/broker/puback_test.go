package broker_test

import (
	"context"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// A QoS 1 PUBLISH with user properties is acknowledged with reason 0x00 and
// without the publisher's properties (mochi said 0x01 and echoed them).
func TestPubackIsSuccessWithoutEchoedProperties(t *testing.T) {
	tb := startBroker(t, testConfig(t.TempDir()), testBundle(t, 1))
	alice := mustV5(t, tb.tcp, "alice", alicePassword)
	for _, qos := range []byte{1, 2} {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		resp, err := alice.Publish(ctx, &paho.Publish{Topic: "devices/alice/x", Payload: []byte("p"), QoS: qos,
			Properties: &paho.PublishProperties{User: paho.UserProperties{{Key: "k", Value: "v"}}}})
		cancel()
		if err != nil {
			t.Fatalf("QoS %d: %v", qos, err)
		}
		if resp.ReasonCode != 0 {
			t.Errorf("QoS %d acknowledged with reason 0x%02x, want 0x00", qos, resp.ReasonCode)
		}
		if resp.Properties != nil && len(resp.Properties.User) > 0 {
			t.Errorf("QoS %d acknowledgement echoed the user properties: %v", qos, resp.Properties.User)
		}
	}
}
