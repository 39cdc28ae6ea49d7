package guard

import (
	"net"
	"sync"
	"sync/atomic"
)

// PUBACKs another part of the broker writes itself. A clustered broker
// acknowledges a QoS 1 message only once every pod with subscribers took
// it; mochi writes the PUBACK as soon as its hooks let the message through,
// and reads the client's next packet only after that. Waiting in the hook
// cost the publisher a round trip to the other pods per message. So the
// cluster's hook lets mochi go on at once, the connection takes mochi's
// PUBACK out of the stream (HoldPuback), and the cluster writes the PUBACK
// itself when the pods answered, in the order the messages came.

const typePuback = 4

// pubackHolds are the PUBACKs of one connection to take out, by packet ID,
// oldest first (a client may reuse an ID only once it has its PUBACK, but
// an MQTT 3.1.1 client may send a PUBLISH again before that).
type pubackHolds struct {
	n      atomic.Int32 // entries in ids, for the write path's fast check
	mu     sync.Mutex
	ids    map[uint16][]chan struct{}
	closed bool
}

// HoldPuback has the connection nc take out the next PUBACK mochi writes
// for packetID. The channel is closed once it has been taken out, or the
// connection closed: only then may the caller write its own. ok is false
// for a connection the guard did not make (nothing is taken out).
func HoldPuback(nc net.Conn, packetID uint16) (taken <-chan struct{}, ok bool) {
	c, ok := nc.(*conn)
	if !ok {
		return nil, false
	}
	h := &c.acks
	ch := make(chan struct{})
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		close(ch)
		return ch, true
	}
	if h.ids == nil {
		h.ids = map[uint16][]chan struct{}{}
	}
	h.ids[packetID] = append(h.ids[packetID], ch)
	h.n.Add(1)
	return ch, true
}

// take reports whether pk, a whole PUBACK, is one to take out, and marks
// it taken.
func (h *pubackHolds) take(pk []byte) bool {
	if h.n.Load() == 0 || pk[0]>>4 != typePuback {
		return false
	}
	id, ok := packetIDOf(pk)
	if !ok {
		return false
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	waiting := h.ids[id]
	if len(waiting) == 0 {
		return false
	}
	close(waiting[0])
	if len(waiting) == 1 {
		delete(h.ids, id)
	} else {
		h.ids[id] = waiting[1:]
	}
	h.n.Add(-1)
	return true
}

// close releases every holder: nothing more will be written.
func (h *pubackHolds) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	for id, waiting := range h.ids {
		for _, ch := range waiting {
			close(ch)
		}
		delete(h.ids, id)
	}
	h.n.Store(0)
}
