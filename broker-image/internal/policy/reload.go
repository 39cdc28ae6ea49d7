package policy

import (
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// Apply makes s the snapshot in force and disconnects the sessions it no
// longer admits: users removed or whose password changed, certificate logins
// whose certificate is no longer listed for their user, and anonymous
// clients when anonymous access was turned off. MQTT 5 clients get reason
// 0x87 (not authorized). Narrowed ACLs need nothing here: every publish,
// subscribe and delivery reads the new snapshot from now on.
func (h *Hook) Apply(s *Snapshot) (revoked int) {
	old := h.snap.Swap(s)
	// Certificate users have no hash, so their name never keeps an entry.
	h.creds.forget(func(username, hash string) bool {
		newHash, known := s.passwordHash(username)
		return known && newHash == hash
	})
	if old == nil {
		return 0
	}
	for _, cl := range h.server.Clients.GetAll() {
		if cl.Net.Inline || cl.Closed() || h.admits(old, s, cl) {
			continue
		}
		if h.revoke(cl, s) {
			revoked++
		}
	}
	h.deleteOrphans(s)
	return revoked
}

// DeleteOrphanedSessions deletes the offline sessions of users the bundle
// in force no longer has: the broker calls it once the store restored the
// sessions of before a restart, which may name users removed meanwhile.
func (h *Hook) DeleteOrphanedSessions() int {
	s := h.snap.Load()
	if s == nil {
		return 0
	}
	return h.deleteOrphans(s)
}

// revoke ends the session of cl, which s no longer admits, unless that was
// done already: Apply and OnSessionEstablished can both judge a client that
// connected during the reload.
func (h *Hook) revoke(cl *mqtt.Client, s *Snapshot) bool {
	if st := h.state(cl); st != nil && !st.revoked.CompareAndSwap(false, true) {
		return false
	}
	h.Counters.Revoked.Add(1)
	h.log.Info("disconnecting a session the new auth bundle no longer admits", "clientId", cl.ID, "revision", s.Revision)
	_ = h.server.DisconnectClient(cl, packets.ErrNotAuthorized)
	return true
}

// admits reports whether the session of cl, admitted under old, stays under
// s. A certificate login stays while its user lists the certificate: a
// renewal that keeps the old fingerprint during the overlap drops nobody. A
// password login stays while its user has the same hash (or, admitted by an
// even older snapshot, has one at all): a user that switched to
// certificates has none.
func (h *Hook) admits(old, s *Snapshot, cl *mqtt.Client) bool {
	username := string(cl.Properties.Username)
	if st := h.state(cl); st != nil {
		if fp := st.certificate.Load(); fp != nil {
			return s.certificateAllowed(username, *fp)
		}
	}
	if username == "" {
		return s.AllowAnonymous
	}
	oldHash, wasKnown := old.passwordHash(username)
	newHash, isKnown := s.passwordHash(username)
	return isKnown && (!wasKnown || oldHash == newHash)
}
