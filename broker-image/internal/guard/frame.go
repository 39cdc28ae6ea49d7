// Package guard stands between the network and mochi's MQTT decoder. mochi
// trusts what a client declares: it allocates whatever packet size the fixed
// header announces, waits forever for a CONNECT, and a panic on a connection
// goroutine ends the process. The guard's listeners check every frame's
// declared size against the limit before the bytes reach the decoder, give a
// new connection a deadline to send CONNECT, cap the number of connections,
// and recover a panic on one connection without touching the others.
package guard

import (
	"errors"
	"fmt"
	"net"
	"sync/atomic"
)

// ErrPacketTooLarge closes a connection whose packet exceeds the limit.
var ErrPacketTooLarge = errors.New("packet larger than the broker's maximum packet size")

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
}

// scan advances over b and fails as soon as a frame's declared size exceeds max.
func (f *frameState) scan(b []byte, max uint32) error {
	for i := 0; i < len(b); {
		switch f.stage {
		case 0:
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
			if total := f.length + 1 + uint32(f.lenBytes); total > max {
				return fmt.Errorf("%w: %d bytes declared, %d allowed", ErrPacketTooLarge, total, max)
			}
			f.remaining = f.length
			f.stage = 2
			if f.remaining == 0 {
				f.stage = 0
			}
		case 2:
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

// conn checks the frames a client sends and counts bytes.
type conn struct {
	net.Conn
	frames  frameState
	limits  *Limits
	onClose func()
	closed  atomic.Bool
	stats   *Stats
}

func (c *conn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.stats.BytesIn.Add(uint64(n))
		if ferr := c.frames.scan(p[:n], c.limits.MaxPacketSize()); ferr != nil {
			c.stats.Rejected(ferr)
			_ = c.Conn.Close()
			return 0, ferr
		}
	}
	return n, err
}

func (c *conn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.stats.BytesOut.Add(uint64(n))
	return n, err
}

func (c *conn) Close() error {
	if c.closed.CompareAndSwap(false, true) && c.onClose != nil {
		c.onClose()
	}
	return c.Conn.Close()
}
