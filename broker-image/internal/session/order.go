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
	"bytes"
	"slices"
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// OrderHook implements mqtt.Hook.
type OrderHook struct {
	mqtt.HookBase
	server *mqtt.Server
	now    func() time.Time

	mu sync.Mutex
	// handovers: resumed sessions between mochi's copy of the old queue
	// and the new connection's OnSessionEstablished, by the new client;
	// byOld, the same by the old client, and for a minute after (done).
	handovers map[*mqtt.Client]*handover
	byOld     map[*mqtt.Client]*handover
}

// A message delivered to a session while mochi hands it to a new
// connection is lost in mochi: between its copy of the old client's queue
// and the new client's entry in the client list, deliveries still find the
// old client, and mochi then clears (or leaves) the old client's queue.
// The hook keeps what the old client held or was cleared of after the copy
// and gives the new connection what it lacks (cluster tests:
// TestClusterSessionMovingUnderLoadLosesNothing lost 1 in 1,500 without).
// A delivery that found the old client before the new one was listed can
// still come later than that (its goroutine was not scheduled for a few
// milliseconds); it goes to the new client at once (OnQosPublish).
type handover struct {
	old     *mqtt.Client
	next    *mqtt.Client // the new client, once done
	since   time.Time
	dropped []packets.Packet
	done    bool // the new client got what the old one held
}

// NewOrderHook returns the hook for server.
func NewOrderHook(server *mqtt.Server) *OrderHook {
	return &OrderHook{server: server, now: time.Now, handovers: map[*mqtt.Client]*handover{}, byOld: map[*mqtt.Client]*handover{}}
}

// ID names the hook.
func (h *OrderHook) ID() string { return "mqtt-operator-session-order" }

// Provides lists the events the hook handles.
func (h *OrderHook) Provides(b byte) bool {
	return b == mqtt.OnSessionEstablish || b == mqtt.OnSessionEstablished || b == mqtt.OnQosDropped || b == mqtt.OnQosPublish
}

// OnSessionEstablish runs after authentication and before mochi copies the
// previous session's queue to the new connection.
func (h *OrderHook) OnSessionEstablish(cl *mqtt.Client, pk packets.Packet) {
	existing, ok := h.server.Clients.Get(cl.ID)
	if !ok || pk.Connect.Clean || (existing.Properties.Clean && existing.Properties.ProtocolVersion < 5) {
		return // no session to resume: mochi discards the old queue
	}
	h.mu.Lock()
	for old, ho := range h.byOld { // done, or a connection that never got its CONNACK
		if h.now().Sub(ho.since) > time.Minute {
			delete(h.byOld, old)
			for next, e := range h.handovers {
				if e == ho {
					delete(h.handovers, next)
				}
			}
		}
	}
	ho := &handover{old: existing, since: h.now()}
	h.handovers[cl] = ho
	h.byOld[existing] = ho
	h.mu.Unlock()
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

// OnQosDropped keeps what mochi clears from a session's old client once
// it copied the queue to the new one.
func (h *OrderHook) OnQosDropped(cl *mqtt.Client, pk packets.Packet) {
	if !cl.IsTakenOver() {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if ho := h.byOld[cl]; ho != nil && !ho.done {
		ho.dropped = append(ho.dropped, pk)
	}
}

// OnQosPublish gives the new client a message delivered to the old one
// after OnSessionEstablished took what it held. Before that, the message
// stays with the old client, where OnSessionEstablished finds it.
func (h *OrderHook) OnQosPublish(cl *mqtt.Client, pk packets.Packet, _ int64, _ int) {
	if !cl.IsTakenOver() || pk.FixedHeader.Type != packets.Publish {
		return
	}
	h.mu.Lock()
	var next *mqtt.Client
	for ho := h.byOld[cl]; ho != nil && ho.done; ho = h.byOld[ho.next] {
		next = ho.next // and on, should that one have been taken over too
	}
	h.mu.Unlock()
	if next == nil || !cl.State.Inflight.Delete(pk.PacketID) {
		return
	}
	give(next, pk)
}

// OnSessionEstablished gives the new connection of a resumed session the
// messages delivered to its old client during the handover.
func (h *OrderHook) OnSessionEstablished(cl *mqtt.Client, _ packets.Packet) {
	h.mu.Lock()
	ho := h.handovers[cl]
	delete(h.handovers, cl)
	if ho != nil {
		ho.done, ho.next = true, cl // from now on OnQosPublish moves them
	}
	h.mu.Unlock()
	if ho == nil {
		return
	}
	late := ho.dropped
	for _, pk := range ho.old.State.Inflight.GetAll(false) {
		if ho.old.State.Inflight.Delete(pk.PacketID) { // else OnQosPublish moved it
			late = append(late, pk)
		}
	}
	Sort(late)
	for _, pk := range late {
		give(cl, pk)
	}
}

// give adds a message of a resumed session's old client to cl's queue and
// writes it, unless mochi copied it.
func give(cl *mqtt.Client, pk packets.Packet) {
	if pk.FixedHeader.Type != packets.Publish {
		return
	}
	if have, ok := cl.State.Inflight.Get(pk.PacketID); ok {
		if have.Created == pk.Created && have.TopicName == pk.TopicName && bytes.Equal(have.Payload, pk.Payload) {
			return // copied by mochi
		}
		id, err := cl.NextPacketID()
		if err != nil {
			return
		}
		pk.PacketID = uint16(id)
	}
	if cl.State.Inflight.Set(pk) {
		_ = cl.WritePacket(pk)
	}
}
