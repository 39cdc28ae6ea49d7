package policy

import (
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/mqtt-operator/mqtt-operator/broker-image/internal/guard"
)

// A client's Receive Maximum is kept by its connection (guard/session.go),
// not by mochi, whose own handling stalls and reorders deliveries.

// startSession tells the guard about cl's session and turns mochi's own
// send quota off. Called from OnConnect: after mochi read the CONNECT,
// before it writes anything else or copies a resumed session's queue.
func (h *Hook) startSession(cl *mqtt.Client) {
	window := cl.Properties.Props.ReceiveMaximum
	// mochi caps it at its queue bound, which it never lets a client's
	// unacknowledged deliveries pass: a window that large needs no count.
	if window >= h.server.Options.Capabilities.MaximumInflight || cl.Properties.ProtocolVersion < 5 {
		window = 0
	}
	guard.StartSession(cl.Net.Conn, cl.Properties.ProtocolVersion, window)
	// With a send quota of 0 mochi never holds a delivery back; it reads
	// the client's value again when it copies a resumed session's queue.
	cl.Properties.Props.ReceiveMaximum = 0
	cl.State.Inflight.ResetSendQuota(0)
}

// completed tells the guard that cl completed a QoS 1/2 delivery: a PUBACK,
// a PUBCOMP, or a PUBREC that refuses the message.
func (h *Hook) completed(cl *mqtt.Client, pk packets.Packet) {
	switch pk.FixedHeader.Type {
	case packets.Puback, packets.Pubcomp:
	case packets.Pubrec:
		if pk.ReasonCode < packets.ErrUnspecifiedError.Code {
			return
		}
	default:
		return
	}
	guard.Completed(cl.Net.Conn, pk.PacketID)
}
