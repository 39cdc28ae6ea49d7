// Package session keeps the delivery order of a resumed session's queue.
//
// When a client resumes a session, mochi resends the queued QoS 1/2 messages
// sorted by the low 16 bits of their creation time in seconds, with an
// unstable sort: messages queued within the same second come out in random
// order, and the order breaks every 18 hours where those 16 bits wrap. MQTT
// requires them in the order they were queued. Just before mochi takes the
// queue over, this hook sorts it by full creation time and then by packet ID
// (assigned in order, modulo 2^16), and gives each message a creation time
// whose low 16 bits increase along that order and that never exceeds now.
//
// It relies on the broker setting mochi's MaximumMessageExpiryInterval to 0,
// so creation times feed only this sort (a message's own MQTT 5 expiry is an
// absolute time that is left alone).
package session

import (
	"slices"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// OrderHook implements mqtt.Hook.
type OrderHook struct {
	mqtt.HookBase
	server *mqtt.Server
	now    func() time.Time
}

// NewOrderHook returns the hook for server.
func NewOrderHook(server *mqtt.Server) *OrderHook {
	return &OrderHook{server: server, now: time.Now}
}

// ID names the hook.
func (h *OrderHook) ID() string { return "mqtt-operator-session-order" }

// Provides lists the events the hook handles.
func (h *OrderHook) Provides(b byte) bool {
	return b == mqtt.OnSessionEstablish
}

// OnSessionEstablish runs after authentication and before mochi copies the
// previous session's queue to the new connection.
func (h *OrderHook) OnSessionEstablish(cl *mqtt.Client, pk packets.Packet) {
	existing, ok := h.server.Clients.Get(cl.ID)
	if !ok || pk.Connect.Clean || (existing.Properties.Clean && existing.Properties.ProtocolVersion < 5) {
		return // no session to resume: mochi discards the old queue
	}
	queued := existing.State.Inflight.GetAll(false)
	if len(queued) < 2 {
		return
	}
	Sort(queued)
	for i, created := range Renumber(len(queued), h.now().Unix()) {
		queued[i].Created = created
		existing.State.Inflight.Set(queued[i])
	}
}

// Sort orders queued messages as they were queued: by creation second, then
// by packet ID. Packet IDs are handed out in increasing order and wrap at
// 65535, so within one second the order starts after the widest gap between
// the IDs in use.
func Sort(queued []packets.Packet) {
	slices.SortStableFunc(queued, func(a, b packets.Packet) int {
		if a.Created != b.Created {
			if a.Created < b.Created {
				return -1
			}
			return 1
		}
		return int(a.PacketID) - int(b.PacketID)
	})
	for start := 0; start < len(queued); {
		end := start + 1
		for end < len(queued) && queued[end].Created == queued[start].Created {
			end++
		}
		rotateAfterWidestGap(queued[start:end])
		start = end
	}
}

// rotateAfterWidestGap takes IDs sorted ascending and rotates them so the
// sequence begins after the widest cyclic gap: {65534, 65535, 1, 2} sorted
// as {1, 2, 65534, 65535} becomes {65534, 65535, 1, 2}.
func rotateAfterWidestGap(group []packets.Packet) {
	if len(group) < 2 {
		return
	}
	widest, at := int(group[0].PacketID)+65536-int(group[len(group)-1].PacketID), 0
	for i := 1; i < len(group); i++ {
		if gap := int(group[i].PacketID) - int(group[i-1].PacketID); gap > widest {
			widest, at = gap, i
		}
	}
	if at > 0 {
		rotated := append(slices.Clone(group[at:]), group[:at]...)
		copy(group, rotated)
	}
}

// Renumber returns n creation times, all at most now, whose low 16 bits
// strictly increase, so mochi's 16-bit sort keeps their order.
func Renumber(n int, now int64) []int64 {
	base := now - int64(n) + 1
	if base&0xffff+int64(n)-1 > 0xffff {
		base &^= 0xffff
	}
	out := make([]int64, n)
	for i := range out {
		out[i] = base + int64(i)
	}
	return out
}
