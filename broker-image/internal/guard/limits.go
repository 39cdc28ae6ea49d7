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

	// The strangers' budget (preauth.go).
	maxPending, maxPendingPerAddress, connectRatePerAddress atomic.Int64
	maxConnectPacketSize                                    atomic.Uint32
}

// DefaultMaxConnectPacketSize bounds a CONNECT when no other bound is set:
// client ID, username, password (a JWT fits) and a modest will.
const DefaultMaxConnectPacketSize = 16 << 10

// Preauth are the settings of the strangers' budget; zero values mean the
// defaults (MaxPending: a quarter of maxConnections, at least 64, at most
// 10,000; MaxConnectPacketSize: DefaultMaxConnectPacketSize) or, for the
// per-address ones, no limit.
type Preauth struct {
	MaxPending, MaxPendingPerAddress, ConnectRatePerAddress int64
	MaxConnectPacketSize                                    uint32
}

// SetPreauth replaces the strangers' budget.
func (l *Limits) SetPreauth(p Preauth) {
	if p.MaxPending <= 0 {
		p.MaxPending = min(max(l.MaxConnections()/4, 64), 10000)
	}
	if p.MaxConnectPacketSize == 0 {
		p.MaxConnectPacketSize = DefaultMaxConnectPacketSize
	}
	l.maxPending.Store(p.MaxPending)
	l.maxPendingPerAddress.Store(p.MaxPendingPerAddress)
	l.connectRatePerAddress.Store(p.ConnectRatePerAddress)
	l.maxConnectPacketSize.Store(p.MaxConnectPacketSize)
}

// MaxPending is the most connections that have not logged in.
func (l *Limits) MaxPending() int64 { return l.maxPending.Load() }

// MaxPendingPerAddress is the most connections from one source address
// that have not logged in; 0 = no limit.
func (l *Limits) MaxPendingPerAddress() int64 { return l.maxPendingPerAddress.Load() }

// ConnectRatePerAddress is new connections per second from one source
// address; 0 = no limit.
func (l *Limits) ConnectRatePerAddress() int64 { return l.connectRatePerAddress.Load() }

// MaxConnectPacketSize bounds the first packet, the CONNECT, which arrives
// before the client proved anything.
func (l *Limits) MaxConnectPacketSize() uint32 {
	return min(l.maxConnectPacketSize.Load(), l.MaxPacketSize())
}

// NewLimits returns limits with the given values.
func NewLimits(maxPacketSize uint32, maxConnections int64, connectTimeout time.Duration) *Limits {
	l := &Limits{}
	l.Set(maxPacketSize, maxConnections, connectTimeout)
	l.SetPreauth(Preauth{})
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
	Preauth               PreauthStats
}

// Rejected counts a connection the guard closed for err.
func (s *Stats) Rejected(err error) {
	switch {
	case errors.Is(err, ErrConnectTooLarge):
		s.ClosedPacketTooLarge.Add(1)
		s.Preauth.ConnectTooLarge.Add(1)
	case errors.Is(err, ErrPacketTooLarge):
		s.ClosedPacketTooLarge.Add(1)
	default:
		s.ClosedMalformed.Add(1)
	}
}
