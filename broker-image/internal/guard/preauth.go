package guard

import (
	"container/list"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Until a connection has logged in, it is a stranger's: it may be a device
// about to send CONNECT, or one of a thousand sockets opened to fill the
// broker and never used. Strangers get their own budget so they cannot
// starve the clients that have logged in:
//
//   - At most MaxPending connections are not logged in at any time. When a
//     new one arrives and the budget is full, the oldest stranger that has
//     not even sent a whole CONNECT yet is closed to make room (a real
//     client sends CONNECT within a round trip of connecting); if all have,
//     the new one is refused.
//   - Logged-in clients are bounded by maxConnections on their own (the
//     policy hook refuses a CONNECT beyond it with "server busy"), so open
//     sockets stay within maxConnections + MaxPending.
//   - A CONNECT may be at most MaxConnectPacketSize bytes (the frame check
//     closes the connection at its header, before the body is read or
//     allocated); afterwards frames are bounded by maxPacketSize.
//   - Optionally, per source address: at most MaxPendingPerAddress strangers,
//     and new connections at most ConnectRatePerAddress per second (burst of
//     as many). Off by default: behind a Kubernetes Service without
//     externalTrafficPolicy: Local, every device of a node shares one
//     address.

// preauth tracks the connections that have not logged in yet.
type preauth struct {
	mu     sync.Mutex
	queue  list.List // of *conn, oldest first
	byAddr map[string]int
	rate   map[string]*addrBucket
	// lastSweep is when rate was last cleared of idle addresses.
	lastSweep time.Time
}

// addrBucket is a token bucket of one source address.
type addrBucket struct {
	tokens float64
	at     time.Time
}

// PreauthStats count what the pre-authentication budget did.
type PreauthStats struct {
	Pending         atomic.Int64  // connections not logged in
	Evicted         atomic.Uint64 // strangers closed to make room
	RefusedPending  atomic.Uint64 // refused: the budget was full of CONNECTs in progress
	RefusedAddress  atomic.Uint64 // refused: too many strangers from the address
	RefusedRate     atomic.Uint64 // refused: the address connects too fast
	ConnectTooLarge atomic.Uint64 // CONNECTs over MaxConnectPacketSize
	ConnectsRefused atomic.Uint64 // logins refused because maxConnections clients are logged in
}

// hostOf is the address part of a remote address, "" when unknown.
func hostOf(addr net.Addr) string {
	if addr == nil {
		return ""
	}
	host, _, err := net.SplitHostPort(addr.String())
	if err != nil {
		return addr.String()
	}
	return host
}

// admitStranger enters c in the budget, making room or refusing it. It
// returns the stranger to close to make room (nil for none) and whether c
// may stay.
func (g *Guard) admitStranger(c *conn) (evict *conn, ok bool) {
	p, l, s := &g.preauth, g.Limits, &g.Stats.Preauth
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	if rate := l.ConnectRatePerAddress(); rate > 0 && !p.take(c.addr, rate, now) {
		s.RefusedRate.Add(1)
		return nil, false
	}
	if max := l.MaxPendingPerAddress(); max > 0 && int64(p.byAddr[c.addr]) >= max {
		s.RefusedAddress.Add(1)
		return nil, false
	}
	if int64(p.queue.Len()) >= l.MaxPending() {
		for e := p.queue.Front(); e != nil; e = e.Next() {
			if old := e.Value.(*conn); !old.connectRead.Load() {
				p.removeLocked(old)
				evict = old
				break
			}
		}
		if evict == nil {
			s.RefusedPending.Add(1)
			return nil, false
		}
		s.Evicted.Add(1)
	}
	c.stranger = p.queue.PushBack(c)
	if p.byAddr == nil {
		p.byAddr = map[string]int{}
	}
	p.byAddr[c.addr]++
	s.Pending.Store(int64(p.queue.Len()))
	return evict, true
}

// leave takes c out of the budget: it logged in, or closed.
func (g *Guard) leave(c *conn) {
	p := &g.preauth
	p.mu.Lock()
	defer p.mu.Unlock()
	p.removeLocked(c)
	g.Stats.Preauth.Pending.Store(int64(p.queue.Len()))
}

func (p *preauth) removeLocked(c *conn) {
	if c.stranger == nil {
		return
	}
	p.queue.Remove(c.stranger)
	c.stranger = nil
	if p.byAddr[c.addr]--; p.byAddr[c.addr] <= 0 {
		delete(p.byAddr, c.addr)
	}
}

// take spends one token of addr's bucket (rate per second, burst rate).
func (p *preauth) take(addr string, rate int64, now time.Time) bool {
	if p.rate == nil {
		p.rate = map[string]*addrBucket{}
	}
	// Addresses idle long enough to have a full bucket again need no entry:
	// sweeping them keeps the map as small as the set of busy addresses.
	if now.Sub(p.lastSweep) > 10*time.Second {
		for a, b := range p.rate {
			if now.Sub(b.at) > 10*time.Second {
				delete(p.rate, a)
			}
		}
		p.lastSweep = now
	}
	b, ok := p.rate[addr]
	if !ok {
		b = &addrBucket{tokens: float64(rate), at: now}
		p.rate[addr] = b
	}
	b.tokens = min(float64(rate), b.tokens+now.Sub(b.at).Seconds()*float64(rate))
	b.at = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// LoggedIn tells the guard that the client on nc logged in: it leaves the
// strangers' budget and may send frames up to maxPacketSize, and an MQTT 5
// client (StartSession said which) is told why when a frame is too large
// (frame.go). nc is the connection mochi was given; one the guard did not
// make is ignored.
func (g *Guard) LoggedIn(nc net.Conn) {
	c, ok := nc.(*conn)
	if !ok || !c.loggedIn.CompareAndSwap(false, true) {
		return
	}
	g.leave(c)
}
