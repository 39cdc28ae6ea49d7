package guard

import (
	"net"
)

// The write side of a connection knows a little of the MQTT session on it,
// which the policy hook tells it once mochi has read the CONNECT
// (StartSession):
//
//   - MQTT 3.1.1 has no DISCONNECT from the server. mochi sends one on many
//     refusals (session taken over, receive maximum exceeded, server
//     shutting down, the broker's own quota disconnects); to a 3.1.1 client
//     it is dropped here, and the connection is just closed.
//
//   - The client's Receive Maximum: the QoS 1 and 2 deliveries it accepts
//     unacknowledged at a time. mochi's own handling loses track of a
//     delivery it held back (it forgets it once sent, so its PUBACK frees no
//     room: the client stalls after a few dozen messages), sends the held
//     ones in no particular order, and ignores the limit altogether when it
//     resends a resumed session's queue. So the broker turns mochi's off and
//     the connection keeps the window: mochi writes every delivery as it
//     always does (it keeps each QoS 1/2 message until acknowledged, bounded
//     by maxQueuedMessages and flow control's byte budgets, see package
//     flow), and the connection writes a QoS 1/2 PUBLISH only while fewer
//     than Receive Maximum are unacknowledged; the rest wait here, in the
//     order mochi wrote them, and go out as the client's PUBACK, PUBCOMP or
//     failing PUBREC come in (Completed). A waiting PUBLISH is a second copy
//     of a message mochi holds, so these bytes are at most about those flow
//     control counts.

// Packet types, as in the first byte's high nibble.
const (
	typePublish    = 3
	typePubrel     = 6
	typeDisconnect = 14
)

// outbound is the session's side of the write path; guarded by w.mu.
type outbound struct {
	started bool
	mqtt5   bool
	// window is the client's Receive Maximum, 0 when it need not be
	// counted (MQTT 3.1.1, or a limit mochi's own queue bound never lets
	// it reach).
	window int
	// inflight are the packet IDs of the QoS 1/2 deliveries written and
	// not completed.
	inflight map[uint16]struct{}
	// waiting are QoS 1/2 PUBLISH packets beyond the window, oldest first.
	waiting [][]byte
	// partial is a packet a Write left unfinished (mochi writes whole
	// packets, so this stays empty).
	partial []byte
}

// StartSession tells the guard about the MQTT session on nc, the connection
// mochi was given: the protocol version and, for MQTT 5, how many QoS 1/2
// deliveries the client accepts unacknowledged (0: no limit to keep). Call
// it before anything but CONNACK is written. A connection the guard did not
// make is ignored.
func StartSession(nc net.Conn, protocolVersion byte, receiveMaximum uint16) {
	c, ok := nc.(*conn)
	if !ok {
		return
	}
	c.protocol.Store(uint32(protocolVersion))
	c.w.mu.Lock()
	defer c.w.mu.Unlock()
	c.out = outbound{started: true, mqtt5: protocolVersion == 5}
	if protocolVersion == 5 && receiveMaximum > 0 {
		c.out.window = int(receiveMaximum)
		c.out.inflight = make(map[uint16]struct{}, receiveMaximum)
	}
}

// LimitWindow lowers the QoS 1/2 deliveries the connection nc lets be
// unacknowledged at a time to n, for any protocol version (a user's
// maxInflight): the lower of n and the client's own Receive Maximum holds.
// Call it after StartSession, before any PUBLISH is written.
func LimitWindow(nc net.Conn, n int) {
	c, ok := nc.(*conn)
	if !ok || n <= 0 {
		return
	}
	c.w.mu.Lock()
	defer c.w.mu.Unlock()
	if c.out.window == 0 || n < c.out.window {
		c.out.window = n
		if c.out.inflight == nil {
			c.out.inflight = make(map[uint16]struct{}, min(n, 1024))
		}
	}
}

// Completed tells the guard that the client on nc completed the QoS 1/2
// delivery with packetID: it sent its PUBACK, its PUBCOMP, or a PUBREC
// with an error code. The next waiting deliveries go out.
func Completed(nc net.Conn, packetID uint16) {
	c, ok := nc.(*conn)
	if !ok {
		return
	}
	w := &c.w
	w.mu.Lock()
	defer w.mu.Unlock()
	o := &c.out
	if o.window == 0 {
		return
	}
	delete(o.inflight, packetID)
	var next []byte
	for len(o.waiting) > 0 && len(o.inflight) < o.window {
		pk := o.waiting[0]
		o.waiting[0] = nil
		o.waiting = o.waiting[1:]
		if id, ok := packetIDOf(pk); ok {
			o.inflight[id] = struct{}{}
		}
		next = append(next, pk...)
	}
	if len(o.waiting) == 0 {
		o.waiting = nil // let a long backlog's array go
	}
	if len(next) > 0 {
		_ = c.sendLocked(next)
	}
}

// Waiting returns the QoS 1/2 deliveries on nc waiting for the client's
// Receive Maximum; for tests and diagnostics.
func Waiting(nc net.Conn) int {
	c, ok := nc.(*conn)
	if !ok {
		return 0
	}
	c.w.mu.Lock()
	defer c.w.mu.Unlock()
	return len(c.out.waiting)
}

// filter returns what of p, a run of whole packets mochi wrote, is to be
// written now: without a DISCONNECT to an MQTT 3.1.1 client, without the
// PUBACKs held for another writer (acks), and without the QoS 1/2 PUBLISH
// packets beyond the window, which it keeps. It returns
// p itself when nothing is taken out.
func (o *outbound) filter(p []byte, acks *pubackHolds) []byte {
	if (!o.started || (o.mqtt5 && o.window == 0)) && acks.n.Load() == 0 {
		return p
	}
	if len(o.partial) > 0 {
		p = append(o.partial, p...)
		o.partial = nil
	}
	var out []byte
	changed := false
	for i := 0; i < len(p); {
		n := packetLength(p[i:])
		if n == 0 || n > len(p)-i {
			o.partial = append([]byte(nil), p[i:]...)
			if !changed {
				out, changed = p[:i], true
			}
			break
		}
		pk := p[i : i+n]
		i += n
		if !acks.take(pk) && o.keep(pk) {
			if changed {
				out = append(out, pk...)
			}
			continue
		}
		if !changed {
			out, changed = append([]byte(nil), p[:i-n]...), true
		}
	}
	if !changed {
		return p
	}
	return out
}

// keep decides one packet: admit's answer for a session whose writes it
// filters, true for any other.
func (o *outbound) keep(pk []byte) bool {
	if !o.started || (o.mqtt5 && o.window == 0) {
		return true
	}
	return o.admit(pk)
}

// admit decides one packet: true to write it now, false when it is dropped
// (a DISCONNECT to an MQTT 3.1.1 client) or kept until the window has room.
func (o *outbound) admit(pk []byte) bool {
	switch pk[0] >> 4 {
	case typeDisconnect:
		return o.mqtt5
	case typePublish:
		if pk[0]&0x06 == 0 || o.window == 0 {
			return true // QoS 0, or no window
		}
		id, ok := packetIDOf(pk)
		if !ok {
			return true
		}
		if len(o.waiting) > 0 || len(o.inflight) >= o.window {
			o.waiting = append(o.waiting, append([]byte(nil), pk...))
			return false
		}
		o.inflight[id] = struct{}{}
	case typePubrel:
		// A QoS 2 delivery resent in its second half (after a reconnect)
		// counts against the window until its PUBCOMP, like its PUBLISH.
		if id, ok := packetIDOf(pk); ok && o.window > 0 {
			o.inflight[id] = struct{}{}
		}
	}
	return true
}

// packetLength returns the length of the whole packet at the start of b, or
// 0 when b does not hold its fixed header yet.
func packetLength(b []byte) int {
	length, mult := 0, 1
	for i := 1; i < len(b) && i <= 4; i++ {
		length += int(b[i]&0x7f) * mult
		if b[i]&0x80 == 0 {
			return 1 + i + length
		}
		mult *= 128
	}
	return 0
}

// packetIDOf returns the packet ID of a whole PUBLISH with QoS 1/2 or of a
// PUBREL.
func packetIDOf(pk []byte) (uint16, bool) {
	i := 1
	for i < len(pk) && pk[i]&0x80 != 0 {
		i++
	}
	i++ // past the last length byte
	if pk[0]>>4 == typePublish {
		if i+2 > len(pk) {
			return 0, false
		}
		i += 2 + (int(pk[i])<<8 | int(pk[i+1])) // past the topic
	}
	if i+2 > len(pk) {
		return 0, false
	}
	return uint16(pk[i])<<8 | uint16(pk[i+1]), true
}
