package policy

import (
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// OnPacketEncode completes the CONNACK of an MQTT 5 client with the limits
// the broker enforces, and gives outgoing PUBLISH packets their topic alias
// (aliases.go).
func (h *Hook) OnPacketEncode(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	switch pk.FixedHeader.Type {
	case packets.Publish:
		// Cheap for the many clients without aliases: no lookup.
		if cl.Properties.ProtocolVersion == 5 && (cl.Properties.Props.TopicAliasMaximum > 0 || pk.Properties.TopicAliasFlag) {
			return h.aliasOutbound(cl, pk)
		}
	case packets.Connack:
		if cl.Properties.ProtocolVersion == 5 && pk.ReasonCode < packets.ErrUnspecifiedError.Code {
			h.advertise(cl, &pk)
		}
	}
	return pk
}

// advertise tells an MQTT 5 client, in CONNACK, the limits it must keep to
// and what the broker supports. mochi sends the receive maximum, the
// maximum QoS (only when below 2: absent means 2, and 2 may not be sent)
// and the server keepalive; the rest is said here, explicitly also where
// the default (absent) means the same.
func (h *Hook) advertise(cl *mqtt.Client, pk *packets.Packet) {
	s := h.snap.Load()
	if s == nil {
		return
	}
	q, p := &s.Quotas, &pk.Properties
	p.MaximumPacketSize = q.MaxPacketSize
	p.RetainAvailable, p.RetainAvailableFlag = 0, true
	if q.RetainAvailable {
		p.RetainAvailable = 1
	}
	p.WildcardSubAvailable, p.WildcardSubAvailableFlag = 1, true
	p.SubIDAvailable, p.SubIDAvailableFlag = 1, true
	p.SharedSubAvailable, p.SharedSubAvailableFlag = 1, true
	if st := h.state(cl); st != nil {
		st.aliases.in = q.TopicAliasMaximum
		p.TopicAliasMaximum = q.TopicAliasMaximum // 0 leaves it out: none
	}
	// The user's maxInflight, when below the broker's (userlimits.go).
	if lim := s.users[string(cl.Properties.Username)].limits; lim != nil && lim.MaxInflight > 0 &&
		(p.ReceiveMaximum == 0 || lim.MaxInflight < int32(p.ReceiveMaximum)) {
		p.ReceiveMaximum = uint16(lim.MaxInflight)
	}
}
