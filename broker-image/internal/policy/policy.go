// Package policy is the broker's one mochi hook for "what may this client
// do": authentication against the operator's auth bundle, topic ACLs, and the
// per-client quotas (keepalive, publish rate, subscriptions). Everything it
// reads lives in an immutable snapshot behind an atomic pointer, so a reload
// never races a check and a check never waits for a reload.
package policy

import (
	"crypto/rand"
	"log/slog"
	"sync"
	"sync/atomic"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/mqtt-operator/mqtt-operator/broker-image/internal/acl"
	"github.com/mqtt-operator/mqtt-operator/internal/brokerconfig"
)

// Snapshot is one consistent view of users, ACLs and quotas.
type Snapshot struct {
	Revision       string
	users          map[string]string // username -> password hash
	index          *acl.Index
	AllowAnonymous bool
	Quotas         Quotas
}

// Quotas are the per-client limits that reload in place.
type Quotas struct {
	MaxKeepaliveSeconds       uint16
	PublishRatePerClient      int32 // PUBLISH packets per second; 0 = no limit
	MaxSubscriptionsPerClient int32
	// MaxQoS and RetainAvailable are fixed at start (mochi advertises them in
	// CONNACK); the hook enforces them on PUBLISH the way MQTT 5 asks.
	MaxQoS          byte
	RetainAvailable bool
}

// NewSnapshot indexes a validated bundle.
func NewSnapshot(b *brokerconfig.AuthBundle, allowAnonymous bool, q Quotas) *Snapshot {
	s := &Snapshot{Revision: b.Revision, users: make(map[string]string, len(b.Users)), index: acl.NewIndex(b.ACLs), AllowAnonymous: allowAnonymous, Quotas: q}
	for _, u := range b.Users {
		s.users[u.Username] = u.PasswordHash
	}
	return s
}

// Counters are the hook's metrics; the metrics package exports them.
type Counters struct {
	AuthSuccess, AuthFailure, AuthCacheHits atomic.Uint64
	ACLDeniedPublish, ACLDeniedSubscribe    atomic.Uint64
	RateLimited, SubscriptionQuota          atomic.Uint64
	QoSRefused, RetainRefused               atomic.Uint64
	Revoked                                 atomic.Uint64
}

// Hook implements mqtt.Hook.
type Hook struct {
	mqtt.HookBase
	snap     atomic.Pointer[Snapshot]
	creds    *credentialCache
	clients  sync.Map // *mqtt.Client -> *clientState
	server   *mqtt.Server
	Counters Counters
	log      *slog.Logger
}

// New returns a hook that denies everything until Apply gives it a snapshot.
func New(server *mqtt.Server, log *slog.Logger) *Hook {
	key := make([]byte, 32)
	_, _ = rand.Read(key) // crypto/rand.Read never fails on supported platforms
	return &Hook{server: server, creds: newCredentialCache(key), log: log}
}

// ID names the hook.
func (h *Hook) ID() string { return "mqtt-operator-policy" }

// Provides lists the events the hook handles.
func (h *Hook) Provides(b byte) bool {
	switch b { // mochi asks this for every event of every message: no allocation, no scan
	case mqtt.OnConnect, mqtt.OnConnectAuthenticate, mqtt.OnACLCheck, mqtt.OnDisconnect,
		mqtt.OnPacketRead, mqtt.OnSubscribe, mqtt.OnSubscribed:
		return true
	}
	return false
}

// Current returns the snapshot in force, or nil before the first Apply.
func (h *Hook) Current() *Snapshot { return h.snap.Load() }

// OnConnectAuthenticate checks the username and password, the will topic, and
// that the client ID is not held by another user.
func (h *Hook) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	ok := h.authenticate(cl, pk)
	if ok {
		h.Counters.AuthSuccess.Add(1)
	} else {
		h.Counters.AuthFailure.Add(1)
	}
	return ok
}

func (h *Hook) authenticate(cl *mqtt.Client, pk packets.Packet) bool {
	s := h.snap.Load()
	if s == nil || cl.ID == "inline" { // "inline" would take over mochi's internal client
		return false
	}
	username := string(cl.Properties.Username)
	if username == "" {
		if !s.AllowAnonymous || len(pk.Connect.Password) > 0 {
			return false
		}
	} else {
		hash, known := s.users[username]
		if !h.creds.verify(username, hash, known, pk.Connect.Password, &h.Counters) {
			return false
		}
	}
	// One tenant's user must not kick another user's session off by reusing
	// its client ID.
	if existing, found := h.server.Clients.Get(cl.ID); found && !existing.Closed() && string(existing.Properties.Username) != username {
		h.log.Info("refused a client ID held by another user", "clientId", cl.ID)
		return false
	}
	if pk.Connect.WillFlag && !s.index.Allowed(acl.Client{Username: username, ClientID: cl.ID}, acl.Publish, pk.Connect.WillTopic) {
		return false
	}
	return true
}

// OnACLCheck authorises a publish (write) or a subscription and each message
// delivered to it (read).
func (h *Hook) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	s := h.snap.Load()
	if s == nil {
		return false
	}
	c := acl.Client{Username: string(cl.Properties.Username), ClientID: cl.ID}
	if write {
		if s.index.Allowed(c, acl.Publish, topic) {
			return true
		}
		h.Counters.ACLDeniedPublish.Add(1)
		return false
	}
	if st := h.state(cl); st != nil && st.refused(topic) {
		return false
	}
	if s.index.Allowed(c, acl.Subscribe, topic) {
		return true
	}
	h.Counters.ACLDeniedSubscribe.Add(1)
	return false
}
