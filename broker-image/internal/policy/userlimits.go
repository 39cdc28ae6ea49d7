package policy

import (
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/mqtt-operator/mqtt-operator/broker-image/internal/guard"
	"github.com/mqtt-operator/mqtt-operator/internal/brokerconfig"
)

// Per-user quotas (MQTTUser spec.limits). maxConnections counts the user's
// live connections on every pod; the others apply to each connection:
//
//   - maxSubscriptions: a filter over it is refused in SUBACK (0x97, 3.1.1
//     0x80), as the broker's own subscription quota is;
//   - publishRate and publishBytesPerSecond: a client over them is slowed,
//     not cut off: its read goroutine waits (TCP flow control then holds
//     the client back) until it is within its rate again, with bursts of up
//     to one second's worth;
//   - maxInflight: an MQTT 5 client is told it as its Receive Maximum, and
//     messages to any client wait while it has that many unacknowledged.
//
// The limits are read from the snapshot in force, so a change applies to
// connections already open (maxInflight: from their next login).

// UserQuotaCounters count what the per-user quotas did.
type UserQuotaCounters struct {
	// ConnectionsRefused: logins refused over maxConnections;
	// SubscriptionsRefused: filters refused over maxSubscriptions.
	ConnectionsRefused, SubscriptionsRefused atomic.Uint64
	// RateSlowed and BytesSlowed count PUBLISH packets read late to keep a
	// client within publishRate or publishBytesPerSecond; SlowedNanos is
	// the time read goroutines waited in all.
	RateSlowed, BytesSlowed, SlowedNanos atomic.Uint64
}

// limits is the user's spec.limits in snapshot s, nil without.
func (s *Snapshot) limits(username string) *brokerconfig.UserLimits {
	if s == nil {
		return nil
	}
	return s.users[username].limits
}

// userConnections indexes live connections (logged in, or being admitted)
// by username, for maxConnections. A connection that ends is removed at
// OnDisconnect; one that ends between its admission and its CONNACK (mochi
// calls no hook then) is closed, and closed ones are not counted and are
// dropped as they are found.
type userConnections struct {
	mu     sync.Mutex
	byUser map[string]map[*mqtt.Client]struct{}
	adds   int
}

// sweepEvery: every so many logins, connections that ended without
// OnDisconnect are dropped for every user, not only limited ones.
const sweepEvery = 4096

func (u *userConnections) add(cl *mqtt.Client, username string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.byUser == nil {
		u.byUser = map[string]map[*mqtt.Client]struct{}{}
	}
	if u.adds++; u.adds%sweepEvery == 0 {
		for name, set := range u.byUser {
			for c := range set {
				if c.Closed() {
					delete(set, c)
				}
			}
			if len(set) == 0 {
				delete(u.byUser, name)
			}
		}
	}
	set := u.byUser[username]
	if set == nil {
		set = map[*mqtt.Client]struct{}{}
		u.byUser[username] = set
	}
	set[cl] = struct{}{}
}

func (u *userConnections) remove(cl *mqtt.Client, username string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if set := u.byUser[username]; set != nil {
		delete(set, cl)
		if len(set) == 0 {
			delete(u.byUser, username)
		}
	}
}

// count is the number of username's open connections whose client ID is
// not exceptID (a login taking over its own ID replaces that connection).
func (u *userConnections) count(username, exceptID string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	n := 0
	for cl := range u.byUser[username] {
		switch {
		case cl.Closed():
			delete(u.byUser[username], cl)
		case cl.ID != exceptID:
			n++
		}
	}
	return n
}

// UserConnections is the number of username's connections on this pod,
// other than those with client ID exceptID (other pods ask: Cluster).
func (h *Hook) UserConnections(username, exceptID string) int {
	return h.userConns.count(username, exceptID)
}

// admitUser registers a login of username and, when the user has a
// maxConnections, checks it over this pod and (CountElsewhere) the others.
// The login is registered before the others are asked, so two logins at
// once on two pods each see the other: at worst both are refused (the
// clients try again), never both admitted over the limit.
func (h *Hook) admitUser(cl *mqtt.Client, username string, s *Snapshot) packets.Code {
	h.userConns.add(cl, username)
	lim := s.limits(username)
	if lim == nil || lim.MaxConnections <= 0 {
		return packets.CodeSuccess
	}
	n := 1 + h.userConns.count(username, cl.ID)
	if n <= int(lim.MaxConnections) && h.CountElsewhere != nil {
		n += h.CountElsewhere(username, cl.ID)
	}
	if n <= int(lim.MaxConnections) {
		return packets.CodeSuccess
	}
	h.userConns.remove(cl, username)
	h.UserQuotas.ConnectionsRefused.Add(1)
	h.log.Info("refused a login over the user's connection limit", "clientId", cl.ID, "username", username,
		"maxConnections", lim.MaxConnections)
	if cl.Properties.ProtocolVersion == 5 {
		return packets.ErrQuotaExceeded
	}
	return packets.ErrServerUnavailable // 3.1.1 has no quota code
}

// limiter slows one connection to its user's publish rate and bandwidth:
// token buckets holding up to one second's worth. Only the connection's
// read goroutine uses it.
type limiter struct {
	messages, bytes bucket
}

type bucket struct {
	tokens float64
	last   time.Time
}

// take spends cost from a bucket refilled at rate per second and returns
// how long to wait until the balance is no longer negative.
func (b *bucket) take(cost, rate float64, now time.Time) time.Duration {
	if b.last.IsZero() {
		b.tokens = rate
	} else {
		b.tokens = min(rate, b.tokens+now.Sub(b.last).Seconds()*rate)
	}
	b.last = now
	b.tokens -= cost
	if b.tokens >= 0 {
		return 0
	}
	return time.Duration(-b.tokens / rate * float64(time.Second))
}

// slowPublisher holds the client's read goroutine back while it publishes
// above its user's rate or bandwidth. It returns false when the connection
// closed meanwhile (the packet is then dropped).
func (h *Hook) slowPublisher(cl *mqtt.Client, st *clientState, lim *brokerconfig.UserLimits, pk *packets.Packet) bool {
	if lim == nil || (lim.PublishRate <= 0 && lim.PublishBytesPerSecond <= 0) {
		return true
	}
	now := time.Now()
	var wait time.Duration
	if lim.PublishRate > 0 {
		if w := st.limiter.messages.take(1, float64(lim.PublishRate), now); w > 0 {
			h.UserQuotas.RateSlowed.Add(1)
			wait = w
		}
	}
	if lim.PublishBytesPerSecond > 0 {
		size := float64(len(pk.TopicName) + len(pk.Payload))
		if w := st.limiter.bytes.take(size, float64(lim.PublishBytesPerSecond), now); w > 0 {
			h.UserQuotas.BytesSlowed.Add(1)
			wait = max(wait, w)
		}
	}
	if wait <= 0 {
		return true
	}
	h.UserQuotas.SlowedNanos.Add(uint64(wait))
	// In steps, so a connection that a drain, a takeover or a revocation
	// closes does not keep its goroutine waiting.
	for deadline := now.Add(wait); ; {
		left := time.Until(deadline)
		if left <= 0 {
			return !cl.Closed()
		}
		time.Sleep(min(left, 100*time.Millisecond))
		if cl.Closed() {
			return false
		}
	}
}

// applyInflight sets the user's maxInflight on a connection about to
// start: the QoS 1/2 deliveries it is sent unacknowledged at a time (the
// connection keeps that window, see guard/session.go), and, for an MQTT 5
// client (told it in CONNACK; a 3.1.1 client never is), what it may send
// unacknowledged.
func applyInflight(cl *mqtt.Client, lim *brokerconfig.UserLimits, serverReceive uint16) {
	if lim == nil || lim.MaxInflight <= 0 {
		return
	}
	guard.LimitWindow(cl.Net.Conn, int(lim.MaxInflight))
	if cl.Properties.ProtocolVersion == 5 && (serverReceive == 0 || lim.MaxInflight < int32(serverReceive)) {
		cl.State.Inflight.ResetReceiveQuota(lim.MaxInflight)
	}
}
