package guard

import (
	"sync"
	"sync/atomic"
	"time"
)

// mochi writes every packet with a Write of its own: the PUBACK for each
// QoS 1 PUBLISH it reads, each PINGRESP, SUBACK, PUBREC, PUBCOMP. A publisher
// that sends a window of 64 QoS 1 messages in one segment got 64 PUBACKs in
// 64 system calls, and woke its own reader as many times; that was most of
// what a QoS 1 message cost beyond plain TCP.
//
// So while a connection's reader is working through what its last Read
// returned, the acknowledgements it writes are held, and go out in one write
// when it comes back for more input, which mochi does only once it has
// processed every whole packet it read. The delay is the time it takes to
// process the rest of that read; a timer bounds it (maxHold) should
// processing block (a durable store waiting for fsync). Writes that start
// with a PUBLISH (deliveries, from mochi's per-client write goroutine) are
// not held: they go out at once, after anything held, so the byte stream
// keeps the order of the Writes.

// maxHold is the longest a held acknowledgement waits for the reader.
const maxHold = time.Millisecond

// maxHeldBytes flushes held writes early: beyond it batching gains nothing.
const maxHeldBytes = 32 << 10

// packetPublish is the MQTT control packet type of PUBLISH.
const packetPublish = 3

// heldWrites is the write side of a conn.
type heldWrites struct {
	// reading is set while the reader processes what a Read returned, from
	// the Read until the reader's next Read.
	reading atomic.Bool
	// pending is set while buf holds bytes not yet written.
	pending atomic.Bool

	mu    sync.Mutex // one writer on the socket at a time; guards the rest
	buf   []byte
	timer *time.Timer
	armed bool
	err   error // the first failed write: the stream is broken from there on
}

// writeLocked writes p, or holds it while the reader is busy. Writes that
// are not held are synchronous, as the connection's Write was before. w.mu
// is held.
func (c *conn) writeLocked(p []byte) (int, error) {
	w := &c.w
	if w.err != nil {
		return 0, w.err
	}
	if len(p) > 0 && p[0]>>4 != packetPublish && w.reading.Load() && len(w.buf)+len(p) <= maxHeldBytes {
		w.buf = append(w.buf, p...)
		w.pending.Store(true)
		// The reader may have begun its next Read meanwhile and not seen
		// pending: then nobody else would write this now.
		if w.reading.Load() {
			c.armLocked()
			return len(p), nil
		}
		return len(p), c.flushLocked()
	}
	if len(w.buf) == 0 {
		n, err := c.Conn.Write(p)
		if err != nil {
			w.err = err
		}
		return n, err
	}
	w.buf = append(w.buf, p...)
	return len(p), c.flushLocked()
}

// release ends the reader's busy period: what it held goes out now. Called
// by Read before it reads again.
func (c *conn) release() error {
	w := &c.w
	w.reading.Store(false)
	if !w.pending.Load() {
		return nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return c.flushLocked()
}

// flushLocked writes what is held. w.mu is held.
func (c *conn) flushLocked() error {
	w := &c.w
	if w.armed {
		w.timer.Stop()
		w.armed = false
	}
	if len(w.buf) == 0 {
		return w.err
	}
	_, err := c.Conn.Write(w.buf)
	w.pending.Store(false)
	if err != nil && w.err == nil {
		w.err = err
	}
	// Keep a small buffer for the next burst; give a large one back.
	if cap(w.buf) > 4<<10 {
		w.buf = nil
	} else {
		w.buf = w.buf[:0]
	}
	return err
}

// armLocked makes sure held bytes go out within maxHold.
func (c *conn) armLocked() {
	w := &c.w
	if w.armed {
		return
	}
	w.armed = true
	if w.timer == nil {
		w.timer = time.AfterFunc(maxHold, c.flushOnTimer)
		return
	}
	w.timer.Reset(maxHold)
}

func (c *conn) flushOnTimer() {
	w := &c.w
	w.mu.Lock()
	defer w.mu.Unlock()
	w.armed = false
	_ = c.flushLocked()
}
