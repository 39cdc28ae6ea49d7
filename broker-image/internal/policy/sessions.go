package policy

import (
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// A session belongs to the user that created it. mochi hands a session to
// whoever connects with its client ID next, live or offline: another tenant's
// user that guessed a device's client ID would take over its live
// connection, or resume its offline session and receive the messages queued
// for it. So a CONNECT whose client ID names a session of another user, live
// or offline, is refused with "client identifier not valid" (MQTT 5 reason
// 0x85, 3.1.1 return code 2) and the session stays untouched. Refusing
// rather than starting a clean session keeps the owner's queued messages:
// a clean start would delete them.
//
// Sessions of users that no longer exist are deleted with their queues
// (deleteOrphans), so a removed user's client IDs become free and its
// messages do not wait for a user who can never log in again.

// sessionOfAnotherUser reports, and answers the client, when cl's client ID
// names a session (live or offline) of a user other than username. It is
// called after the credentials were verified, so a refusal here tells
// nothing to a client that could not log in anyway.
func (h *Hook) sessionOfAnotherUser(cl *mqtt.Client, username string) bool {
	existing, found := h.server.Clients.Get(cl.ID)
	if !found || string(existing.Properties.Username) == username {
		return false
	}
	h.Counters.ClientIDRefused.Add(1)
	h.log.Info("refused a client ID whose session belongs to another user", "clientId", cl.ID, "sessionLive", !existing.Closed())
	// mochi answers every refusal of this hook with 0x86 (bad user name or
	// password), which would send a well-meaning client after its
	// credentials. Answer first and close the connection: mochi's own
	// CONNACK then finds it closed and is not sent.
	_ = h.server.SendConnack(cl, packets.ErrClientIdentifierNotValid, false, nil)
	cl.Stop(packets.ErrClientIdentifierNotValid)
	return true
}

// hasUser reports whether username may still own a session under s: a user
// of the bundle, or anonymous while anonymous access is on.
func (s *Snapshot) hasUser(username string) bool {
	if username == "" {
		return s.AllowAnonymous
	}
	_, ok := s.users[username]
	return ok
}

// deleteOrphans deletes the offline sessions whose user s no longer has.
// Live sessions of such users are being disconnected by the caller and are
// deleted as they end (OnDisconnect).
func (h *Hook) deleteOrphans(s *Snapshot) (deleted int) {
	for _, cl := range h.server.Clients.GetAll() {
		if cl.Net.Inline || !cl.Closed() || s.hasUser(string(cl.Properties.Username)) {
			continue
		}
		h.deleteSession(cl)
		deleted++
	}
	return deleted
}

// deleteSession removes an ended session with its subscriptions and queued
// messages, from memory and from the store (EndSession), once: a revoked
// live session that ends while deleteOrphans runs reaches it from both, and
// was counted twice. A session no longer the current one under its client
// ID (deleted, or replaced by a newer connection whose subscriptions the
// ID shares) is left alone.
func (h *Hook) deleteSession(cl *mqtt.Client) {
	h.deleting.Lock()
	current, ok := h.server.Clients.Get(cl.ID)
	if !ok || current != cl {
		h.deleting.Unlock()
		return
	}
	h.server.Clients.Delete(cl.ID)
	h.deleting.Unlock()
	h.server.UnsubscribeClient(cl)
	cl.ClearInflights()
	h.OnClientExpired(cl) // flow control stops counting its queue
	if h.SessionDeleted != nil {
		h.SessionDeleted(cl)
	}
	h.Counters.SessionsDeleted.Add(1)
	h.log.Info("deleted the session of a user that no longer exists", "clientId", cl.ID)
}
