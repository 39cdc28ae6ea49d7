package guard

import (
	"errors"
	"sync/atomic"
	"time"
)

// Limits are the guard's settings. They change in place on reload: every
// read is atomic, so a new value applies to the next frame or connection.
type Limits struct {
	maxPacketSize  atomic.Uint32
	maxConnections atomic.Int64
	connectTimeout atomic.Int64 // nanoseconds
}

// NewLimits returns limits with the given values.
func NewLimits(maxPacketSize uint32, maxConnections int64, connectTimeout time.Duration) *Limits {
	l := &Limits{}
	l.Set(maxPacketSize, maxConnections, connectTimeout)
	return l
}

// Set replaces all values.
func (l *Limits) Set(maxPacketSize uint32, maxConnections int64, connectTimeout time.Duration) {
	l.maxPacketSize.Store(maxPacketSize)
	l.maxConnections.Store(maxConnections)
	l.connectTimeout.Store(int64(connectTimeout))
}

// MaxPacketSize is the largest frame, in bytes, a client may send.
func (l *Limits) MaxPacketSize() uint32 { return l.maxPacketSize.Load() }

// MaxConnections is the most open connections across all listeners.
func (l *Limits) MaxConnections() int64 { return l.maxConnections.Load() }

// ConnectTimeout is how long a new connection has to send CONNECT.
func (l *Limits) ConnectTimeout() time.Duration { return time.Duration(l.connectTimeout.Load()) }

// Stats are the guard's counters, exported as metrics.
type Stats struct {
	Open                 atomic.Int64
	Accepted             atomic.Uint64
	RefusedOverLimit     atomic.Uint64
	ClosedPacketTooLarge atomic.Uint64
	ClosedMalformed      atomic.Uint64
	Panics               atomic.Uint64
	BytesIn, BytesOut    atomic.Uint64
	// PublishIn and PublishOut count PUBLISH packets by QoS: received from
	// clients (refused ones included) and written to them.
	PublishIn, PublishOut [3]atomic.Uint64
}

// Rejected counts a connection the guard closed for err.
func (s *Stats) Rejected(err error) {
	switch {
	case errors.Is(err, ErrPacketTooLarge):
		s.ClosedPacketTooLarge.Add(1)
	default:
		s.ClosedMalformed.Add(1)
	}
}
