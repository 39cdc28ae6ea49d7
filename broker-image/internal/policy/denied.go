package policy

import (
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// A PUBLISH the ACLs deny. MQTT 5 has a reason code for it (PUBACK or
// PUBREC 0x87, which mochi sends). MQTT 3.1.1 has none, and mochi closes the
// connection instead: a client with a persistent session and automatic
// reconnection (paho's default) then reconnects and sends the same message
// again, forever. So, like mosquitto, the broker acknowledges a denied
// PUBLISH of an MQTT 3.1.1 client as if it were accepted and drops it,
// counted (mqtt_messages_dropped_total{reason="acl_denied"}, and in
// mqtt_acl_denied_total) and logged at debug.
//
// mochi asks OnACLCheck and then, for the same PUBLISH on the same
// goroutine, OnPublish: the check lets the PUBLISH through and marks it,
// and OnPublish tells mochi to acknowledge it and deliver it nowhere
// (CodeSuccessIgnore, which also keeps it from being retained).

// acknowledgeDenied reports whether a PUBLISH of cl that the ACLs deny is to
// be acknowledged and dropped rather than refused, and marks it so.
func (h *Hook) acknowledgeDenied(cl *mqtt.Client, st *clientState) bool {
	if cl.Properties.ProtocolVersion >= 5 || st == nil {
		return false
	}
	st.deniedPublish = true
	return true
}

// dropDenied reports whether pk is a PUBLISH acknowledgeDenied let through,
// and clears the mark.
func (h *Hook) dropDenied(cl *mqtt.Client, pk packets.Packet) bool {
	st := h.state(cl)
	if st == nil || !st.deniedPublish {
		return false
	}
	st.deniedPublish = false
	h.Counters.DeniedAcknowledged.Add(1)
	h.log.Debug("acknowledged and dropped a PUBLISH the ACLs deny (MQTT 3.1.1 has no reason code for it)",
		"clientId", cl.ID, "topic", pk.TopicName, "qos", pk.FixedHeader.Qos)
	return true
}
