package broker_test

import (
	"testing"

	"github.com/mqtt-operator/mqtt-operator/internal/brokerconfig"
)

// A broker.yaml that names only its version, one listener and the storage
// path runs a broker with the documented limits: real clients log in,
// publish and receive, and the CONNACK carries the default receive maximum
// and session expiry bound.
func TestMinimalConfigRunsWithDefaults(t *testing.T) {
	cfg, err := brokerconfig.Parse([]byte("version: " + brokerconfig.Version + `
listeners: [{name: mqtt, protocol: tcp, address: "127.0.0.1:0"}]
storage: {path: ` + t.TempDir() + `}
`))
	if err != nil {
		t.Fatalf("a minimal broker.yaml is refused: %v", err)
	}
	tb := startBroker(t, cfg, testBundle(t, 1))
	sub := mustV5(t, tb.tcp, "bob", bobPassword)
	if rm := sub.connack.Properties.ReceiveMaximum; rm == nil || *rm != brokerconfig.DefaultMaxInflight {
		t.Errorf("CONNACK receive maximum %v, want the default maxInflight %d", rm, brokerconfig.DefaultMaxInflight)
	}
	if code := sub.subscribe(t, "devices/alice/#", 2); code != 2 {
		t.Fatalf("SUBACK 0x%02x, want QoS 2 granted (default maxQoS 2)", code)
	}
	pub := mustV5(t, tb.tcp, "alice", alicePassword)
	if err := pub.publish(t, "devices/alice/t", "hello", 2, true); err != nil {
		t.Fatal(err)
	}
	if m := sub.expect(t, "hello"); m.QoS != 2 {
		t.Errorf("delivered at QoS %d, want 2", m.QoS)
	}
}
