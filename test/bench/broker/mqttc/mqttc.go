// Package mqttc is the benchmark's MQTT 3.1.1 client: just enough protocol
// for a load generator (CONNECT/CONNACK, PUBLISH at QoS 0 and 1, PUBACK,
// SUBSCRIBE/SUBACK, PINGREQ/PINGRESP, DISCONNECT) over buffered reads and
// writes, with no goroutine, timer or allocation per message. The generator
// shares two cores with the brokers it measures, so every cycle it spends is
// a cycle the broker does not get; a general-purpose client (paho) costs
// several times more per message.
//
// A Conn is not safe for concurrent use, except that one goroutine may read
// (ReadPacket) while another writes (Write*/Flush).
package mqttc

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"time"
)

// Packet types (the high nibble of the fixed header).
const (
	CONNECT     = 1
	CONNACK     = 2
	PUBLISH     = 3
	PUBACK      = 4
	SUBSCRIBE   = 8
	SUBACK      = 9
	PINGREQ     = 12
	PINGRESP    = 13
	DISCONNECT  = 14
	maxVarInt   = 268_435_455
	maxPacketID = 65535
)

// Options describe one connection.
type Options struct {
	ClientID           string
	Username, Password string
	KeepaliveSeconds   uint16
	// LocalIP is the source address to dial from ("" = any). Spreading many
	// connections over 127.0.0.x keeps loopback from running out of
	// ephemeral ports.
	LocalIP string
	// BufferSize of the reader and the writer; small for idle connections,
	// large for load (default 64 KiB).
	BufferSize int
	// Timeout bounds dialling and the CONNECT/CONNACK exchange.
	Timeout time.Duration
	// Persistent asks for a persistent session (clean session 0): the
	// broker keeps the session, and queues for it, while disconnected.
	Persistent bool
	// ReceiveBuffer, when set, is the socket's receive buffer (SO_RCVBUF)
	// in bytes: small for a client that stops reading, so the broker's
	// queue for it fills at once instead of after megabytes of kernel
	// buffers.
	ReceiveBuffer int
}

// Conn is one MQTT connection.
type Conn struct {
	// SessionPresent is the CONNACK's flag: the broker resumed a session.
	SessionPresent bool

	nc  net.Conn
	r   *bufio.Reader
	w   *bufio.Writer
	hdr [5]byte
	buf []byte // reused packet body
}

// ErrRefused is returned when the broker answers CONNECT with a non-zero
// return code.
var ErrRefused = errors.New("connection refused by broker")

// Dial opens a TCP connection to addr and completes CONNECT/CONNACK, with a
// clean session unless o.Persistent.
func Dial(addr string, o Options) (*Conn, error) {
	if o.BufferSize <= 0 {
		o.BufferSize = 64 << 10
	}
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Second
	}
	d := net.Dialer{Timeout: o.Timeout}
	if o.LocalIP != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(o.LocalIP)}
	}
	if o.ReceiveBuffer > 0 {
		d.Control = func(_, _ string, rc syscall.RawConn) error {
			return rc.Control(func(fd uintptr) {
				_ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, o.ReceiveBuffer)
			})
		}
	}
	nc, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	c := &Conn{nc: nc, r: bufio.NewReaderSize(nc, o.BufferSize), w: bufio.NewWriterSize(nc, o.BufferSize)}
	_ = nc.SetDeadline(time.Now().Add(o.Timeout))
	if err := c.connect(o); err != nil {
		nc.Close()
		return nil, err
	}
	_ = nc.SetDeadline(time.Time{})
	return c, nil
}

func (c *Conn) connect(o Options) error {
	flags := byte(0x02) // clean session
	if o.Persistent {
		flags = 0
	}
	n := 10 + 2 + len(o.ClientID)
	if o.Username != "" {
		flags |= 0x80
		n += 2 + len(o.Username)
	}
	if o.Password != "" {
		flags |= 0x40
		n += 2 + len(o.Password)
	}
	c.header(CONNECT<<4, n)
	c.str("MQTT")
	c.w.WriteByte(4) // protocol level 3.1.1
	c.w.WriteByte(flags)
	c.u16(o.KeepaliveSeconds)
	c.str(o.ClientID)
	if o.Username != "" {
		c.str(o.Username)
	}
	if o.Password != "" {
		c.str(o.Password)
	}
	if err := c.w.Flush(); err != nil {
		return fmt.Errorf("sending CONNECT: %w", err)
	}
	typ, _, body, err := c.ReadPacket()
	if err != nil {
		return fmt.Errorf("reading CONNACK: %w", err)
	}
	if typ != CONNACK || len(body) != 2 {
		return fmt.Errorf("expected CONNACK, got packet type %d", typ)
	}
	if body[1] != 0 {
		return fmt.Errorf("%w: return code %d", ErrRefused, body[1])
	}
	c.SessionPresent = body[0]&1 == 1
	return nil
}

// Subscribe sends SUBSCRIBE for one filter and waits for its SUBACK; call it
// before anything else reads from the connection.
func (c *Conn) Subscribe(filter string, qos byte) error {
	if err := c.WriteSubscribe(filter, qos); err != nil {
		return err
	}
	for {
		typ, _, body, err := c.ReadPacket()
		if err != nil {
			return fmt.Errorf("reading SUBACK: %w", err)
		}
		if typ != SUBACK {
			continue // e.g. a retained PUBLISH may come first; the caller does not want it
		}
		if len(body) != 3 || body[2] > 2 {
			return fmt.Errorf("subscription to %q refused (SUBACK % x)", filter, body)
		}
		return nil
	}
}

// WriteSubscribe sends SUBSCRIBE for one filter (packet identifier 1)
// without waiting for anything: the caller reads the SUBACK and what
// follows (retained messages) itself.
func (c *Conn) WriteSubscribe(filter string, qos byte) error {
	c.header(SUBSCRIBE<<4|0x02, 2+2+len(filter)+1)
	c.u16(1)
	c.str(filter)
	c.w.WriteByte(qos)
	if err := c.w.Flush(); err != nil {
		return fmt.Errorf("sending SUBSCRIBE: %w", err)
	}
	return nil
}

// Ping sends PINGREQ and waits for PINGRESP: a round trip through the
// broker's read and write paths.
func (c *Conn) Ping(timeout time.Duration) error {
	c.w.Write([]byte{PINGREQ << 4, 0})
	if err := c.w.Flush(); err != nil {
		return err
	}
	_ = c.nc.SetReadDeadline(time.Now().Add(timeout))
	defer c.nc.SetReadDeadline(time.Time{})
	for {
		typ, _, _, err := c.ReadPacket()
		if err != nil {
			return fmt.Errorf("waiting for PINGRESP: %w", err)
		}
		if typ == PINGRESP {
			return nil
		}
	}
}

// WritePublish buffers a PUBLISH; id is ignored at QoS 0.
func (c *Conn) WritePublish(topic string, qos byte, id uint16, payload []byte) error {
	return c.WritePublishRetain(topic, qos, false, id, payload)
}

// WritePublishRetain buffers a PUBLISH with the retain flag as given.
func (c *Conn) WritePublishRetain(topic string, qos byte, retain bool, id uint16, payload []byte) error {
	n := 2 + len(topic) + len(payload)
	if qos > 0 {
		n += 2
	}
	first := byte(PUBLISH<<4 | qos<<1)
	if retain {
		first |= 1
	}
	c.header(first, n)
	c.str(topic)
	if qos > 0 {
		c.u16(id)
	}
	_, err := c.w.Write(payload)
	return err
}

// WritePuback buffers a PUBACK.
func (c *Conn) WritePuback(id uint16) error {
	_, err := c.w.Write([]byte{PUBACK << 4, 2, byte(id >> 8), byte(id)})
	return err
}

// Flush writes out what is buffered.
func (c *Conn) Flush() error { return c.w.Flush() }

// Buffered is how many received bytes wait in the read buffer: when it is 0
// the next ReadPacket may block, so a reader flushes its acknowledgements
// first.
func (c *Conn) Buffered() int { return c.r.Buffered() }

// ReadPacket reads one packet. body is valid until the next call.
func (c *Conn) ReadPacket() (typ, flags byte, body []byte, err error) {
	first, err := c.r.ReadByte()
	if err != nil {
		return 0, 0, nil, err
	}
	n, mult := 0, 1
	for i := 0; ; i++ {
		b, err := c.r.ReadByte()
		if err != nil {
			return 0, 0, nil, err
		}
		n += int(b&0x7f) * mult
		if b&0x80 == 0 {
			break
		}
		if i == 3 {
			return 0, 0, nil, errors.New("malformed remaining length")
		}
		mult *= 128
	}
	if cap(c.buf) < n {
		c.buf = make([]byte, n)
	}
	body = c.buf[:n]
	if _, err := io.ReadFull(c.r, body); err != nil {
		return 0, 0, nil, err
	}
	return first >> 4, first & 0x0f, body, nil
}

// PublishID returns the packet identifier of a QoS 1 or 2 PUBLISH body.
func PublishID(flags byte, body []byte) (id uint16, ok bool) {
	if (flags>>1)&3 == 0 || len(body) < 2 {
		return 0, false
	}
	tl := int(binary.BigEndian.Uint16(body))
	if len(body) < 2+tl+2 {
		return 0, false
	}
	return binary.BigEndian.Uint16(body[2+tl:]), true
}

// PublishPayload returns the payload of a PUBLISH body (nil if malformed).
func PublishPayload(flags byte, body []byte) []byte {
	if len(body) < 2 {
		return nil
	}
	at := 2 + int(binary.BigEndian.Uint16(body))
	if (flags>>1)&3 != 0 {
		at += 2
	}
	if at > len(body) {
		return nil
	}
	return body[at:]
}

// AckID returns the packet identifier of a PUBACK body.
func AckID(body []byte) uint16 {
	if len(body) < 2 {
		return 0
	}
	return binary.BigEndian.Uint16(body)
}

// Disconnect sends DISCONNECT and closes the connection.
func (c *Conn) Disconnect() error {
	c.w.Write([]byte{DISCONNECT << 4, 0})
	err := c.w.Flush()
	if cerr := c.nc.Close(); err == nil {
		err = cerr
	}
	return err
}

// Close closes the connection without DISCONNECT.
func (c *Conn) Close() error { return c.nc.Close() }

// SetReadDeadline bounds the next reads.
func (c *Conn) SetReadDeadline(t time.Time) error { return c.nc.SetReadDeadline(t) }

// Shrink drops the buffers of a connection that will only sit idle, so
// 10,000 idle clients cost the generator little memory. Only Close and
// Disconnect may be used afterwards.
func (c *Conn) Shrink() {
	c.r = bufio.NewReaderSize(c.nc, 16)
	c.w = bufio.NewWriterSize(c.nc, 16)
	c.buf = nil
}

func (c *Conn) header(first byte, remaining int) {
	if remaining > maxVarInt {
		panic("mqttc: packet too large")
	}
	c.hdr[0] = first
	i := 1
	for {
		b := byte(remaining % 128)
		remaining /= 128
		if remaining > 0 {
			b |= 0x80
		}
		c.hdr[i] = b
		i++
		if remaining == 0 {
			break
		}
	}
	c.w.Write(c.hdr[:i])
}

func (c *Conn) str(s string) {
	c.u16(uint16(len(s)))
	c.w.WriteString(s)
}

func (c *Conn) u16(v uint16) {
	c.w.WriteByte(byte(v >> 8))
	c.w.WriteByte(byte(v))
}

// NextID advances a QoS 1 packet identifier: 1..65535, never 0.
func NextID(id uint16) uint16 {
	if id == maxPacketID {
		return 1
	}
	return id + 1
}
