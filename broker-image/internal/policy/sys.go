package policy

import (
	"strings"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// A PUBLISH to a $SYS topic. $SYS is the broker's own (MQTT 4.7.2: the
// server should keep clients from using it to talk to each other), and
// mochi drops such a PUBLISH before any hook sees it, without an answer: a
// QoS 1 or 2 publisher then waits forever, and resends it on every
// reconnect. So the broker answers it here, as mosquitto does: MQTT 5 gets
// PUBACK or PUBREC 0x87 (not authorized); MQTT 3.1.1, which has no reason
// codes, gets the acknowledgement of an accepted message (a PUBREL after
// PUBREC gets mochi's PUBCOMP). Nothing is delivered or retained; it counts
// as a denied publish (mqtt_acl_denied_total{access="publish"}).

// sysTopic is mochi's test (mqtt.IsValidFilter): "$SYS" in any case.
func sysTopic(topic string) bool {
	return len(topic) >= len(mqtt.SysPrefix) && strings.EqualFold(topic[:len(mqtt.SysPrefix)], mqtt.SysPrefix)
}

// answerSysPublish answers pk, a PUBLISH of cl, if it is to a $SYS topic,
// and reports whether it was. mochi drops pk afterwards.
func (h *Hook) answerSysPublish(cl *mqtt.Client, pk packets.Packet) bool {
	if !sysTopic(pk.TopicName) {
		return false
	}
	h.Counters.ACLDeniedPublish.Add(1)
	h.log.Debug("refused a PUBLISH to a $SYS topic", "clientId", cl.ID, "topic", pk.TopicName, "qos", pk.FixedHeader.Qos)
	if pk.FixedHeader.Qos == 0 {
		return true
	}
	ack := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: pk.PacketID}
	if pk.FixedHeader.Qos == 2 {
		ack.FixedHeader.Type = packets.Pubrec
	}
	if cl.Properties.ProtocolVersion >= 5 {
		ack.ReasonCode = packets.ErrNotAuthorized.Code
	}
	_ = cl.WritePacket(ack)
	return true
}
