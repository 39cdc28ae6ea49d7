package broker

import (
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// ackHook gives the PUBACK of a QoS 1 PUBLISH a valid reason code. mochi
// answers with the code that grants QoS 1 in a SUBACK (0x01), which is not
// a PUBACK reason code: MQTT.js fails the publish ("Invalid puback reason
// code") and Python paho's network thread dies on it. Success is 0x00; the
// broker does not say 0x10 (no matching subscribers), which mosquitto does,
// because a subscriber may still be reached through a session that is
// offline or on its way in, and 0x00 is what every client expects.
//
// (mochi also copied the PUBLISH's properties, user properties included,
// into every acknowledgement; the broker turns that off with the
// NoInheritedPropertiesOnAck compatibility, so acknowledgements carry at
// most a reason string.)
type ackHook struct{ mqtt.HookBase }

func (h *ackHook) ID() string { return "mqtt-operator-acks" }

func (h *ackHook) Provides(b byte) bool { return b == mqtt.OnPacketEncode }

func (h *ackHook) OnPacketEncode(_ *mqtt.Client, pk packets.Packet) packets.Packet {
	switch pk.FixedHeader.Type {
	case packets.Puback, packets.Pubrec, packets.Pubrel, packets.Pubcomp:
		// Below 0x80 the acknowledgement packets have 0x00 and 0x10 (and
		// 0x92 is an error); anything else below 0x80 is mochi's QoS code.
		if pk.ReasonCode < packets.ErrUnspecifiedError.Code && pk.ReasonCode != packets.CodeNoMatchingSubscribers.Code {
			pk.ReasonCode = packets.CodeSuccess.Code
		}
	}
	return pk
}
