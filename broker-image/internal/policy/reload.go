package policy

import (
	"github.com/mochi-mqtt/server/v2/packets"
)

// Apply makes s the snapshot in force and disconnects the sessions it no
// longer admits: users removed or whose password changed, and anonymous
// clients when anonymous access was turned off. MQTT 5 clients get reason
// 0x87 (not authorized). Narrowed ACLs need nothing here: every publish,
// subscribe and delivery reads the new snapshot from now on.
func (h *Hook) Apply(s *Snapshot) (revoked int) {
	old := h.snap.Swap(s)
	h.creds.forget(func(username, hash string) bool { return s.users[username] == hash })
	if old == nil {
		return 0
	}
	for _, cl := range h.server.Clients.GetAll() {
		if cl.Net.Inline || cl.Closed() {
			continue
		}
		username := string(cl.Properties.Username)
		keep := s.AllowAnonymous
		if username != "" {
			oldHash, wasKnown := old.users[username]
			newHash, isKnown := s.users[username]
			keep = isKnown && (!wasKnown || oldHash == newHash)
		}
		if keep {
			continue
		}
		revoked++
		h.Counters.Revoked.Add(1)
		h.log.Info("disconnecting a session the new auth bundle no longer admits", "clientId", cl.ID, "revision", s.Revision)
		_ = h.server.DisconnectClient(cl, packets.ErrNotAuthorized)
	}
	return revoked
}
