package broker

import (
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// retainOffHook tells MQTT 5 clients in CONNACK that retained messages are
// not available, which mochi does not (it only stops storing them). Added
// only when retain is off, so no other broker pays for a hook on every
// outgoing packet.
type retainOffHook struct{ mqtt.HookBase }

func (h *retainOffHook) ID() string { return "mqtt-operator-retain-off" }

func (h *retainOffHook) Provides(b byte) bool {
	return b == mqtt.OnPacketEncode
}

func (h *retainOffHook) OnPacketEncode(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	if pk.FixedHeader.Type == packets.Connack && cl.Properties.ProtocolVersion == 5 && pk.ReasonCode < packets.ErrUnspecifiedError.Code {
		pk.Properties.RetainAvailable, pk.Properties.RetainAvailableFlag = 0, true
	}
	return pk
}
