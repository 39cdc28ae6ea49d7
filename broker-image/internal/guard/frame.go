// Package guard stands between the network and mochi's MQTT decoder. mochi
// trusts what a client declares: it allocates whatever packet size the fixed
// header announces, waits forever for a CONNECT, and a panic on a connection
// goroutine ends the process. The guard's listeners check every frame's
// declared size against the limit before the bytes reach the decoder, give a
// new connection a deadline to send CONNECT, cap the number of connections,
// and recover a panic on one connection without touching the others.
package guard

import (
	"container/list"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"sync/atomic"
	"time"
)

// ErrPacketTooLarge closes a connection whose packet exceeds the limit.
var ErrPacketTooLarge = errors.New("packet larger than the broker's maximum packet size")

// ErrConnectTooLarge closes a connection whose CONNECT exceeds the
// CONNECT limit, which is smaller than the packet limit (preauth.go).
var ErrConnectTooLarge = fmt.Errorf("CONNECT too large: %w", ErrPacketTooLarge)

// ErrMalformedLength closes a connection whose remaining-length field is longer
// than MQTT's four bytes.
var ErrMalformedLength = errors.New("malformed MQTT remaining length")

// frameState follows MQTT framing across reads: fixed header byte, then the
// variable-length remaining length, then the body.
type frameState struct {
	stage     uint8 // 0 header byte, 1 length bytes, 2 body
	lenBytes  uint8
	mult      uint32
	length    uint32
	remaining uint32
	// firstMax, when set, bounds the first frame (a client's CONNECT)
	// instead of max; frames counts the frames whose header was read.
	firstMax uint32
	frames   uint64
	// checkTopics makes scan check every PUBLISH's topic name (topic.go).
	checkTopics bool
	publish     bool // the frame being read is a PUBLISH
	topic       topicCheck
}

// scan advances over b and fails as soon as a frame's declared size exceeds
// max. Every PUBLISH header is counted in publishes by its QoS, so message
// metrics need no mochi hook (and no copy of every packet) on the hot path.
func (f *frameState) scan(b []byte, max uint32, publishes *[3]atomic.Uint64) error {
	for i := 0; i < len(b); {
		switch f.stage {
		case 0:
			f.publish = b[i]>>4 == 3
			if f.publish {
				if qos := (b[i] >> 1) & 3; qos < 3 {
					publishes[qos].Add(1)
				}
			}
			f.stage, f.lenBytes, f.mult, f.length = 1, 0, 1, 0
			i++
		case 1:
			c := b[i]
			i++
			f.lenBytes++
			if f.lenBytes > 4 {
				return ErrMalformedLength
			}
			f.length += uint32(c&0x7f) * f.mult
			f.mult *= 128
			if c&0x80 != 0 {
				continue
			}
			f.frames++
			if f.frames == 1 && f.firstMax > 0 && f.firstMax < max {
				if total := f.length + 1 + uint32(f.lenBytes); total > f.firstMax {
					return fmt.Errorf("%w: %d bytes declared, %d allowed", ErrConnectTooLarge, total, f.firstMax)
				}
			}
			if total := f.length + 1 + uint32(f.lenBytes); total > max {
				return fmt.Errorf("%w: %d bytes declared, %d allowed", ErrPacketTooLarge, total, max)
			}
			f.remaining = f.length
			f.stage = 2
			if f.publish && f.checkTopics {
				f.topic.begin()
			}
			if f.remaining == 0 {
				f.topic.end()
				f.stage = 0
			}
		case 2:
			if f.topic.active {
				n := uint32(f.topic.feed(b[i:min(len(b), i+int(f.remaining))]))
				i += int(n)
				if f.remaining -= n; f.remaining == 0 {
					f.topic.end()
					f.stage = 0
				}
				continue
			}
			n := uint32(len(b) - i)
			if n >= f.remaining {
				i += int(f.remaining)
				f.remaining, f.stage = 0, 0
			} else {
				f.remaining -= n
				i = len(b)
			}
		}
	}
	return nil
}

// conn checks the frames a client sends and counts bytes and messages.
type conn struct {
	net.Conn
	frames  frameState // what the client sends
	sent    frameState // what the broker writes, for counting only
	limits  *Limits
	onClose func()
	closed  atomic.Bool
	stats   *Stats
	w       heldWrites
	acks    pubackHolds // PUBACKs to take out (puback.go)

	// For the strangers' budget (preauth.go): the source address, the
	// place in the queue of strangers (guarded by the budget's lock), and
	// whether the whole CONNECT arrived and the client logged in.
	addr        string
	stranger    *list.Element
	connectRead atomic.Bool
	loggedIn    atomic.Bool

	// The MQTT session on the connection (session.go): its protocol
	// version, 0 until StartSession, and the write side, under w.mu.
	protocol atomic.Uint32
	out      outbound
	// last is a packet the close writes after everything else.
	last atomic.Pointer[[]byte]
	// malformedTopic is set once the client sent a PUBLISH whose topic
	// mochi's decoder refuses (topic.go).
	malformedTopic atomic.Bool
}

// The MQTT 5 DISCONNECTs the guard writes itself. Each carries a Reason
// String, as mochi's own do: clients print it, and some (Eclipse Paho
// Python 1.x) read the reason code only from a DISCONNECT with properties.
var (
	disconnectMalformed      = disconnectPacket(0x81, "malformed packet")
	disconnectPacketTooLarge = disconnectPacket(0x95, "packet too large")
)

// disconnectPacket encodes an MQTT 5 DISCONNECT with the reason code and a
// Reason String property (short: one byte of remaining length).
func disconnectPacket(code byte, reason string) []byte {
	props := append([]byte{0x1F, 0, byte(len(reason))}, reason...)
	body := append([]byte{code, byte(len(props))}, props...)
	return append([]byte{0xE0, byte(len(body))}, body...)
}

func (c *conn) Read(p []byte) (int, error) {
	// Everything read before has been processed: what it answered goes out
	// before the reader waits for more.
	if err := c.release(); err != nil {
		return 0, err
	}
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.stats.BytesIn.Add(uint64(n))
		if ferr := c.frames.scan(p[:n], c.limits.MaxPacketSize(), &c.stats.PublishIn); ferr != nil {
			c.stats.Rejected(ferr)
			c.refuse(ferr)
			return 0, ferr
		}
		if c.frames.topic.malformed && !c.malformedTopic.Load() {
			c.malformedTopic.Store(true)
		}
		// The CONNECT is in (its body read, or the next frame begun): not a
		// silent stranger.
		if f := &c.frames; !c.connectRead.Load() && (f.frames > 1 || f.frames == 1 && f.stage == 0) {
			c.connectRead.Store(true)
		}
		c.w.reading.Store(true)
	}
	return n, err
}

// Write is called by one goroutine at a time (mochi writes under the
// client's lock); see heldWrites for what it holds back, and session.go for
// what it keeps or drops. What it keeps counts as written: mochi has
// nothing more to do with it.
func (c *conn) Write(p []byte) (int, error) {
	w := &c.w
	w.mu.Lock()
	defer w.mu.Unlock()
	now := c.out.filter(p, &c.acks)
	if len(now) == 0 {
		return len(p), w.err
	}
	if err := c.sendLocked(now); err != nil {
		return 0, err
	}
	return len(p), nil
}

// sendLocked writes p, whole packets, and counts them. w.mu is held.
func (c *conn) sendLocked(p []byte) error {
	n, err := c.writeLocked(p)
	c.stats.BytesOut.Add(uint64(n))
	_ = c.sent.scan(p[:n], math.MaxUint32, &c.stats.PublishOut) // the broker's own frames are never too large
	return err
}

// refuse closes the connection for a frame it may not send. An MQTT 5
// client that logged in and sent a packet over the limit is told so first
// with DISCONNECT 0x95, which the close then flushes after what is already
// held; the specification allows a DISCONNECT only after CONNACK, and MQTT
// 3.1.1 has none, so every other client is just closed.
func (c *conn) refuse(err error) {
	if !errors.Is(err, ErrPacketTooLarge) || !c.loggedIn.Load() || c.protocol.Load() != 5 {
		_ = c.Conn.Close()
		return
	}
	c.last.Store(&disconnectPacketTooLarge)
	c.w.pending.Store(true)
	_ = c.Close()
}

// closeLinger is how long a closed connection keeps draining what the client
// still sends.
const closeLinger = 500 * time.Millisecond

// Close ends the connection so that the client reads everything the broker
// wrote, the DISCONNECT with its reason code above all. Closing a socket that
// still has unread input sends a TCP reset, which makes the client's system
// discard data it has not read yet; a client publishing flat out when it is
// disconnected for it would never learn why. So the broker's side is
// shut down first, and the client's remaining input drained briefly.
func (c *conn) Close() error {
	if !c.closed.CompareAndSwap(false, true) {
		return nil // closing, or closed, already: the first Close finishes it
	}
	c.acks.close()
	if c.onClose != nil {
		c.onClose()
	}
	if c.malformedTopic.Load() && c.protocol.Load() == 5 {
		c.last.Store(&disconnectMalformed) // the close is the decoder's (topic.go)
	}
	if !c.w.pending.Load() && c.last.Load() == nil {
		return c.shutdown()
	}
	// Held writes (often the DISCONNECT that explains the close) go first.
	// A writer stuck on a peer that does not read gives up at the deadline.
	_ = c.Conn.SetWriteDeadline(time.Now().Add(closeLinger))
	if c.w.mu.TryLock() {
		c.finalFlushLocked()
		return c.shutdown()
	}
	go func() {
		c.w.mu.Lock()
		c.finalFlushLocked()
		_ = c.shutdown()
	}()
	return nil
}

// finalFlushLocked writes what is held, and the last packet if one is set,
// and fails every later Write; it unlocks w.mu.
func (c *conn) finalFlushLocked() {
	if last := c.last.Load(); last != nil && c.w.err == nil {
		c.w.buf = append(c.w.buf, *last...)
	}
	_ = c.flushLocked()
	if c.w.err == nil {
		c.w.err = net.ErrClosed
	}
	c.w.mu.Unlock()
}

// shutdown closes the socket after the broker's last bytes.
func (c *conn) shutdown() error {
	hc, ok := c.Conn.(interface{ CloseWrite() error })
	if !ok || hc.CloseWrite() != nil {
		return c.Conn.Close()
	}
	go func() {
		_ = c.Conn.SetReadDeadline(time.Now().Add(closeLinger))
		_, _ = io.Copy(io.Discard, c.Conn)
		_ = c.Conn.Close()
	}()
	return nil
}
