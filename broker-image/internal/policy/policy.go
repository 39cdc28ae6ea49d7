// Package policy is the broker's one mochi hook for "what may this client
// do": authentication against the operator's auth bundle, topic ACLs, and the
// per-client quotas (keepalive, publish rate, subscriptions). Everything it
// reads lives in an immutable snapshot behind an atomic pointer, so a reload
// never races a check and a check never waits for a reload.
package policy

import (
	"crypto/rand"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/mqtt-operator/mqtt-operator/broker-image/internal/acl"
	"github.com/mqtt-operator/mqtt-operator/broker-image/internal/flow"
	"github.com/mqtt-operator/mqtt-operator/broker-image/internal/guard"
	"github.com/mqtt-operator/mqtt-operator/internal/brokerconfig"
)

// Snapshot is one consistent view of users, ACLs and quotas.
type Snapshot struct {
	Revision       string
	users          map[string]account
	index          *acl.Index
	AllowAnonymous bool
	Quotas         Quotas
}

// account is how one user logs in: with a password, or with one of the
// client certificates listed for it, never both.
type account struct {
	passwordHash string              // "" for a certificate user
	certificates map[string]struct{} // SHA-256 fingerprints; nil for a password user
	limits       *brokerconfig.UserLimits
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
	// Retained messages the broker keeps, and their bytes (topics and
	// payloads); 0 = no limit (retained.go).
	MaxRetainedMessages, MaxRetainedBytes int
	// Topic names and filters: bytes and levels; 0 = no limit. A PUBLISH
	// over them disconnects the client (MQTT 5 reason 0x90), a filter over
	// them is refused in SUBACK.
	MaxTopicLength, MaxTopicLevels int
	// MaxPacketSize is told to MQTT 5 clients in CONNACK (the guard
	// enforces it); TopicAliasMaximum bounds topic aliases each way
	// (aliases.go), 0 = none. Both apply to connections made after a
	// reload.
	MaxPacketSize     uint32
	TopicAliasMaximum uint16
}

// NewSnapshot indexes a validated bundle.
func NewSnapshot(b *brokerconfig.AuthBundle, allowAnonymous bool, q Quotas) *Snapshot {
	s := &Snapshot{Revision: b.Revision, users: make(map[string]account, len(b.Users)), index: acl.NewIndex(b.ACLs), AllowAnonymous: allowAnonymous, Quotas: q}
	for _, u := range b.Users {
		a := account{passwordHash: u.PasswordHash}
		if u.UsesCertificate() {
			a = account{certificates: make(map[string]struct{}, len(u.CertificateSHA256))}
			for _, fp := range u.CertificateSHA256 {
				a.certificates[fp] = struct{}{}
			}
		}
		a.limits = u.Limits
		s.users[u.Username] = a
	}
	return s
}

// passwordHash is the hash a password login as username is checked against;
// known is false for unknown users and for certificate users, who have none.
func (s *Snapshot) passwordHash(username string) (hash string, known bool) {
	a := s.users[username]
	return a.passwordHash, a.passwordHash != ""
}

// certificateAllowed reports whether username is a certificate user that may
// present the certificate with this fingerprint. Fingerprints are not
// secret, so a map lookup is as good as a constant-time comparison.
func (s *Snapshot) certificateAllowed(username, fingerprint string) bool {
	_, ok := s.users[username].certificates[fingerprint]
	return ok
}

// Counters are the hook's metrics; the metrics package exports them.
type Counters struct {
	AuthSuccess, AuthFailure, AuthCacheHits atomic.Uint64
	ACLDeniedPublish, ACLDeniedSubscribe    atomic.Uint64
	RateLimited, SubscriptionQuota          atomic.Uint64
	QoSRefused, RetainRefused               atomic.Uint64
	Revoked                                 atomic.Uint64
	// ClientIDRefused counts logins refused because their client ID names
	// another user's session; SessionsDeleted, sessions deleted because
	// their user no longer exists.
	ClientIDRefused, SessionsDeleted atomic.Uint64
	// KDFRuns counts bcrypt verifications actually run; ServerFull, logins
	// refused because maxConnections clients were logged in.
	KDFRuns, ServerFull atomic.Uint64
	// RetainedRefused counts retained messages delivered but not kept
	// (retained.go); TopicTooLong, topics and filters over the limits.
	RetainedRefused, TopicTooLong atomic.Uint64
	// TopicAliasRefused counts clients disconnected for an alias above the
	// maximum, or one they never set (aliases.go).
	TopicAliasRefused atomic.Uint64

	// AuthCertificate counts the successes that logged in with a client
	// certificate (they are in AuthSuccess too).
	AuthCertificate atomic.Uint64
	// DeniedAcknowledged counts the PUBLISH packets of MQTT 3.1.1 clients
	// that the ACLs deny and that were acknowledged and dropped (also in
	// ACLDeniedPublish).
	DeniedAcknowledged atomic.Uint64
}

// Hook implements mqtt.Hook.
type Hook struct {
	mqtt.HookBase
	snap     atomic.Pointer[Snapshot]
	creds    *credentialCache
	clients  sync.Map   // *mqtt.Client -> *clientState
	deleting sync.Mutex // deleteSession's check and removal
	server   *mqtt.Server
	Counters Counters
	log      *slog.Logger
	retained retainedBook
	// Flow holds a publisher back while a subscriber's pending writes are
	// nearly full (see package flow). Set before the server starts.
	Flow  *flow.Control
	sizes messageSizes // of the messages being fanned out, for Flow
	// SessionDeleted, when set, is told of every session the hook deleted
	// (its user is gone), so the store forgets it too.
	SessionDeleted func(*mqtt.Client)
	wills          *willCheck // WillCheck's hook, for TakenOver
	// LoggedIn, when set, is told of every client that logged in (the
	// guard then counts it against maxConnections, not the strangers'
	// budget); Full reports that maxConnections clients are logged in.
	LoggedIn func(nc net.Conn)
	Full     func() bool
	// Admit, when set, is asked about a login whose credentials, client ID
	// and will passed every local check; a code other than success refuses
	// it with that reason. A clustered broker takes the client ID over on
	// the other pods here ([MQTT-3.1.4-3] cluster-wide).
	Admit func(cl *mqtt.Client, username string) packets.Code
	// CountElsewhere, when set, counts a user's connections on the other
	// pods of a cluster, but those with client ID exceptID (userlimits.go).
	CountElsewhere func(username, exceptID string) int
	userConns      userConnections
	// UserQuotas count what the per-user quotas did.
	UserQuotas UserQuotaCounters
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
	case mqtt.OnConnect, mqtt.OnConnectAuthenticate, mqtt.OnSessionEstablished, mqtt.OnACLCheck,
		mqtt.OnDisconnect, mqtt.OnPacketRead, mqtt.OnSubscribe, mqtt.OnSubscribed, mqtt.OnPacketSent,
		mqtt.OnPublish, mqtt.OnPublished, mqtt.OnSessionEstablish, mqtt.OnClientExpired, mqtt.OnRetainedExpired,
		mqtt.OnPacketEncode, mqtt.OnSelectSubscribers:
		return true
	}
	return false
}

// Current returns the snapshot in force, or nil before the first Apply.
func (h *Hook) Current() *Snapshot { return h.snap.Load() }

// OnConnectAuthenticate checks who the client is (client certificate, or
// username and password, or anonymous), the will topic, and that the client
// ID is not held by another user.
func (h *Hook) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	start := time.Now()
	id, snap, ok := h.authenticate(cl, pk)
	if !ok {
		// Every refusal takes at least as long, so its timing does not
		// tell an unknown username from a wrong password (credentials.go).
		time.Sleep(time.Until(start.Add(FailedLoginDelay)))
		h.Counters.AuthFailure.Add(1)
		// mochi calls OnDisconnect only for clients it admitted: the state
		// OnConnect stored would otherwise stay, and the client with it.
		h.clients.Delete(cl)
		return false
	}
	h.Counters.AuthSuccess.Add(1)
	st := h.state(cl)
	if id.certificate != "" {
		h.Counters.AuthCertificate.Add(1)
		// Apply reads it to decide whether the session survives a new bundle.
		if st != nil {
			st.certificate.Store(&id.certificate)
		}
	}
	if st != nil {
		st.admittedBy.Store(snap)
	}
	return true
}

// OnSessionEstablished closes the gap between a login and Apply. mochi adds
// an authenticated client to its client list only after this hook's
// OnConnectAuthenticate returned, so an Apply that swapped the snapshot in
// between scanned the list without it. mochi calls this hook after adding
// the client and before reading its first packet: if the snapshot changed
// since the login, the client is judged as Apply would have judged it.
// Either Apply's scan sees the client, or this load sees Apply's snapshot.
func (h *Hook) OnSessionEstablished(cl *mqtt.Client, _ packets.Packet) {
	if h.LoggedIn != nil {
		h.LoggedIn(cl.Net.Conn)
	}

	st := h.state(cl)
	if st == nil {
		return
	}
	admitted, current := st.admittedBy.Load(), h.snap.Load()
	if admitted == nil || current == admitted || h.admits(admitted, current, cl) {
		return
	}
	h.revoke(cl, current)
}

// identity is who a CONNECT authenticated as.
type identity struct {
	username string // "" for anonymous
	// certificate is the fingerprint of the client certificate the client
	// logged in with; "" for password and anonymous logins.
	certificate string
}

// authenticate returns who the client is and the snapshot that said so.
func (h *Hook) authenticate(cl *mqtt.Client, pk packets.Packet) (identity, *Snapshot, bool) {
	s := h.snap.Load()
	if s == nil || cl.ID == "inline" { // "inline" would take over mochi's internal client
		return identity{}, s, false
	}
	id, ok := h.identify(s, cl, pk)
	if !ok {
		return id, s, false
	}
	if id.certificate != "" {
		// From here on the client is this user: ACLs (%u), the client ID
		// check below, the store and later reloads all read the username.
		cl.Properties.Username = []byte(id.username)
	}
	if h.sessionOfAnotherUser(cl, id.username) {
		return id, s, false
	}
	if pk.Connect.WillFlag && !s.mayPublish(acl.Client{Username: id.username, ClientID: cl.ID}, pk.Connect.WillTopic) {
		return id, s, false
	}
	// Answered here, as sessionOfAnotherUser does: mochi would say 0x86
	// (bad user name or password).
	if code := h.admitUser(cl, id.username, s); code != packets.CodeSuccess {
		_ = h.server.SendConnack(cl, code, false, nil)
		cl.Stop(code)
		return id, s, false
	}
	if h.Admit != nil {
		if code := h.Admit(cl, id.username); code != packets.CodeSuccess {
			h.userConns.remove(cl, id.username)
			_ = h.server.SendConnack(cl, code, false, nil)
			cl.Stop(code)
			return id, s, false
		}
	}
	applyInflight(cl, s.users[id.username].limits, h.server.Options.Capabilities.ReceiveMaximum)
	return id, s, true
}

// identify decides who the client is: the certificate user its verified
// client certificate names, or else the user whose password it gives, or
// else anonymous when that is allowed. A certificate that names no
// certificate user, or one not listed for it, proves nothing, so the client
// is judged as if it had sent none.
func (h *Hook) identify(s *Snapshot, cl *mqtt.Client, pk packets.Packet) (identity, bool) {
	claimed := string(cl.Properties.Username)
	if id, ok := h.certificateIdentity(s, cl, claimed); ok {
		return id, true
	}
	if claimed == "" {
		return identity{}, s.AllowAnonymous && len(pk.Connect.Password) == 0
	}
	// A certificate user has no hash: verify refuses it, like an unknown
	// user, without any work.
	hash, known := s.passwordHash(claimed)
	return identity{username: claimed}, h.creds.verify(claimed, hash, known, pk.Connect.Password, &h.Counters)
}

// certificateIdentity maps the client's verified certificate to the
// certificate user its subject common name names, if that user lists the
// certificate's fingerprint and the client claims no other username. The
// password, if one was sent, is not looked at: the certificate proves more.
func (h *Hook) certificateIdentity(s *Snapshot, cl *mqtt.Client, claimed string) (identity, bool) {
	leaf := guard.PeerCertificate(cl.Net.Conn)
	if leaf == nil {
		return identity{}, false
	}
	cn := leaf.Subject.CommonName
	if cn == "" || (claimed != "" && claimed != cn) {
		return identity{}, false
	}
	fp := brokerconfig.CertificateFingerprint(leaf.Raw)
	if !s.certificateAllowed(cn, fp) {
		if _, isUser := s.users[cn]; isUser {
			// A revoked or not yet listed certificate of a real user: worth
			// a line. Fingerprints are not secret.
			h.log.Info("client certificate is not listed for its user", "clientId", cl.ID, "user", cn, "fingerprint", fp)
		}
		return identity{}, false
	}
	return identity{username: cn, certificate: fp}, true
}

// OnACLCheck authorises a publish (write) or a subscription and each message
// delivered to it (read).
func (h *Hook) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	s := h.snap.Load()
	if s == nil {
		return false
	}
	c := acl.Client{Username: string(cl.Properties.Username), ClientID: cl.ID}
	st := h.state(cl)
	if write {
		if st != nil {
			st.deniedPublish = false // a mark left by a PUBLISH mochi ended early
		}
		allowed := s.mayPublish(c, topic)
		if !allowed {
			h.Counters.ACLDeniedPublish.Add(1)
		}
		return allowed || h.acknowledgeDenied(cl, st)
	}
	if st != nil && st.refused(topic) {
		return false
	}
	// A shared subscription is judged by its topic filter (shared.go); a
	// delivery's topic never starts with the share prefix.
	if s.index.Allowed(c, acl.Subscribe, aclFilter(topic)) {
		// mochi queues the delivery right after this check.
		return h.Flow == nil || st == nil || h.admitDelivery(cl, st, topic)
	}
	h.Counters.ACLDeniedSubscribe.Add(1)
	return false
}

// mayPublish reports whether c may publish to topic: never to a topic that
// starts with the share prefix (shared.go), else as the ACLs say.
func (s *Snapshot) mayPublish(c acl.Client, topic string) bool {
	if _, _, shared := splitShared(topic); shared {
		return false
	}
	return s.index.Allowed(c, acl.Publish, topic)
}
