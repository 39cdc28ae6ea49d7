package broker

import (
	"math"

	mqtt "github.com/mochi-mqtt/server/v2"

	"github.com/mqtt-operator/mqtt-operator/internal/brokerconfig"
)

// capabilities are the settings mochi reads from cfg at start. What MQTT 5
// clients are told in CONNACK is completed by the policy hook
// (policy/connack.go): mochi sends the receive maximum, the maximum QoS
// below 2 and the server keepalive, but not the maximum packet size, the
// topic alias maximum, or whether retained messages, wildcard and shared
// subscriptions and subscription identifiers are available.
func capabilities(cfg *brokerconfig.Config) *mqtt.Capabilities {
	caps := mqtt.NewDefaultServerCapabilities()
	caps.MaximumClients = math.MaxInt64 // the guard enforces maxConnections, and can change it in place
	caps.MaximumQos = byte(cfg.Limits.MaxQoS)
	caps.RetainAvailable = boolByte(cfg.Limits.RetainAvailable)
	caps.ReceiveMaximum = uint16(cfg.Limits.MaxInflight)
	// mochi's "maximum inflight" is the per-client queue: beyond it, new QoS
	// 1/2 messages for that client are dropped. The send window is
	// ReceiveMaximum above.
	caps.MaximumInflight = uint16(cfg.Limits.QueuedMessages())
	caps.MaximumSessionExpiryInterval = uint32(cfg.Limits.SessionExpirySeconds)
	// mochi's default (one day) silently deletes retained messages and
	// queued messages older than that. Retained messages stay until replaced,
	// queued ones until their session expires or their own MQTT 5 expiry;
	// the session order hook also relies on this.
	caps.MaximumMessageExpiryInterval = 0
	caps.MaximumClientWritesPending = int32(ClientWritesPending)
	// mochi copies a PUBLISH's properties (user properties, content type,
	// ...) into its PUBACK, PUBREC, PUBREL and PUBCOMP; clients reject or
	// choke on them (acks.go).
	caps.Compatibilities.NoInheritedPropertiesOnAck = true
	// The policy hook checks each client's topic aliases against the
	// maximum its CONNACK advertised (limits.topicAliasMaximum, which
	// reloads in place); mochi's own check and map only need room for any
	// of them. Left at mochi's default, 65,535.
	//
	// MaximumPacketSize stays 0: the guard checks every frame's size before
	// mochi reads it, and can change the limit in place.
	return caps
}

func boolByte(v bool) byte {
	if v {
		return 1
	}
	return 0
}
