package policy

import (
	"sync"
	"time"
	"unsafe"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/mqtt-operator/mqtt-operator/broker-image/internal/flow"
)

// The delivery side of flow control (package flow): the hook tells flow
// about every delivery, write, acknowledgement and session end, and acts on
// its verdicts.

// mochi asks OnACLCheck about a delivery knowing only the topic, so the
// size of the message being fanned out is looked up by the address of its
// topic string: OnPublish, on the publisher's goroutine, notes it before
// mochi fans the message out on that goroutine, and OnPublished forgets it.
// Each PUBLISH decoded has its own topic string; one taken from a topic
// alias is shared by that client's messages, which are fanned out one after
// another.
type messageSizes struct {
	shards [64]struct {
		sync.Mutex
		m map[*byte]noted
	}
}

// noted is what is known of a message being fanned out.
type noted struct {
	size int64
	qos  byte
}

func (s *messageSizes) shard(key *byte) *struct {
	sync.Mutex
	m map[*byte]noted
} {
	return &s.shards[(uintptr(unsafe.Pointer(key))>>4)%uintptr(len(s.shards))]
}

func (s *messageSizes) note(key *byte, n noted) {
	sh := s.shard(key)
	sh.Lock()
	if sh.m == nil {
		sh.m = map[*byte]noted{}
	}
	sh.m[key] = n
	sh.Unlock()
}

func (s *messageSizes) forget(key *byte) {
	sh := s.shard(key)
	sh.Lock()
	delete(sh.m, key)
	sh.Unlock()
}

func (s *messageSizes) lookup(key *byte) (noted, bool) {
	sh := s.shard(key)
	sh.Lock()
	n, ok := sh.m[key]
	sh.Unlock()
	return n, ok
}

// OnPublish keeps retained messages within their limits (retained.go) and
// notes the size of a message about to be fanned out.
func (h *Hook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if h.dropDenied(cl, pk) {
		return pk, packets.CodeSuccessIgnore
	}
	pk = h.retainWithinLimits(cl, pk)
	if h.Flow == nil || pk.TopicName == "" {
		return pk, nil
	}
	key := unsafe.StringData(pk.TopicName)
	if st := h.state(cl); st != nil {
		// A later hook that refused the last message skipped OnPublished.
		if last := st.fanningOut; last != nil && last != key {
			h.sizes.forget(last)
		}
		st.fanningOut = key
	}
	h.sizes.note(key, noted{size: flow.SizeOf(&pk), qos: pk.FixedHeader.Qos})
	return pk, nil
}

// OnPublished forgets the message fanned out.
func (h *Hook) OnPublished(cl *mqtt.Client, pk packets.Packet) {
	if h.Flow == nil || pk.TopicName == "" {
		return
	}
	key := unsafe.StringData(pk.TopicName)
	h.sizes.forget(key)
	if st := h.state(cl); st != nil && st.fanningOut == key {
		st.fanningOut = nil
	}
}

// messageSize is the size of the message on topic being delivered, and
// whether mochi keeps it for an offline session. Messages not fanned out by
// a PUBLISH (a retained message sent on SUBSCRIBE, a will) are looked up
// among the retained messages, else counted by their topic alone.
func (h *Hook) messageSize(topic string) (int64, bool) {
	if n, ok := h.sizes.lookup(unsafe.StringData(topic)); ok {
		return n.size, n.qos > 0
	}
	if pk, ok := h.server.Topics.Retained.Get(topic); ok {
		return flow.SizeOf(&pk), pk.FixedHeader.Qos > 0
	}
	return flow.SizeOfMessage(topic, 0), true
}

// admitDelivery asks flow about a delivery to cl on topic, which the ACLs
// allow; mochi queues it when this returns true.
func (h *Hook) admitDelivery(cl *mqtt.Client, st *clientState, topic string) bool {
	size, queued := h.messageSize(topic)
	switch h.Flow.BeforeDelivery(cl, &st.flow, size, queued) {
	case flow.Deliver:
		return true
	case flow.Disconnect:
		h.disconnectOverBudget(cl, st)
	case flow.RefuseFirst:
		h.log.Warn("an offline session is over its queue budget; new messages for it are dropped", "clientId", cl.ID, "queuedBytes", st.flow.Queued())
	}
	return false
}

// disconnectOverBudget ends the connection of a stuck subscriber over its
// byte budget (MQTT 5 reason 0x97, quota exceeded). Its writer may be
// blocked on a full socket, holding the lock mochi writes the DISCONNECT
// under: the write deadline frees it, and the publisher does not wait.
func (h *Hook) disconnectOverBudget(cl *mqtt.Client, st *clientState) {
	h.log.Warn("disconnecting a subscriber that stopped reading and is over its queue budget", "clientId", cl.ID, "queuedBytes", st.flow.Queued())
	if cl.Net.Conn != nil {
		_ = cl.Net.Conn.SetWriteDeadline(time.Now().Add(time.Second))
	}
	go func() { _ = h.server.DisconnectClient(cl, packets.ErrQuotaExceeded) }()
}

// OnPacketSent tells flow that cl's writer made headway, and which bytes
// the packet leaves: a QoS 0 copy is freed once written; a QoS 1/2 copy
// stays in the inflight map until acknowledged, except one mochi held back
// for the client's receive maximum (Expiry -1), which it forgets on writing.
//
// A PUBLISH sent with its topic alias alone was counted with its topic:
// that is added back.
func (h *Hook) OnPacketSent(cl *mqtt.Client, pk packets.Packet, _ []byte) {
	if h.Flow == nil && pk.FixedHeader.Type != packets.Publish {
		return
	}
	st := h.state(cl)
	if st == nil {
		return
	}
	aliased := 0
	if pk.FixedHeader.Type == packets.Publish {
		aliased = st.aliasSent(&pk)
	}
	if h.Flow == nil {
		return
	}
	var released int64
	if pk.FixedHeader.Type == packets.Publish && (pk.FixedHeader.Qos == 0 || pk.Expiry < 0) {
		released = flow.SizeOf(&pk) + int64(aliased)
	}
	h.Flow.AfterWrite(cl, &st.flow, released)
}

// acknowledged tells flow that cl acknowledged a message it was sent (a
// PUBACK, or the PUBREC after which mochi keeps only a PUBREL), before mochi
// forgets the copy.
func (h *Hook) acknowledged(cl *mqtt.Client, pk packets.Packet) {
	if h.Flow == nil || (pk.FixedHeader.Type != packets.Puback && pk.FixedHeader.Type != packets.Pubrec) {
		return
	}
	st := h.state(cl)
	if st == nil {
		return
	}
	var released int64
	if sent, ok := cl.State.Inflight.Get(pk.PacketID); ok && sent.FixedHeader.Type == packets.Publish {
		released = flow.SizeOf(&sent)
	}
	h.Flow.AfterAck(cl, &st.flow, released)
}

// OnSessionEstablish moves what a resumed session holds to the new
// connection, before mochi copies its inflight map over.
func (h *Hook) OnSessionEstablish(cl *mqtt.Client, pk packets.Packet) {
	if h.Flow == nil {
		return
	}
	existing, ok := h.server.Clients.Get(cl.ID)
	if !ok || existing == cl {
		return
	}
	if old := h.state(existing); old != nil {
		h.Flow.Forget(&old.flow)
		h.clients.Delete(existing)
	}
	if pk.Connect.Clean || (existing.Properties.Clean && existing.Properties.ProtocolVersion < 5) {
		return // mochi discards the old queue
	}
	st := h.state(cl)
	if st == nil {
		return
	}
	var inherited int64
	for _, m := range existing.State.Inflight.GetAll(false) {
		if m.FixedHeader.Type == packets.Publish {
			inherited += flow.SizeOf(&m)
		}
	}
	h.Flow.Inherit(&st.flow, inherited)
}

// OnClientExpired forgets an offline session mochi deleted.
func (h *Hook) OnClientExpired(cl *mqtt.Client) {
	if st := h.state(cl); st != nil && h.Flow != nil {
		h.Flow.Forget(&st.flow)
	}
	h.clients.Delete(cl)
}
