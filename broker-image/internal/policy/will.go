package policy

import (
	mqtt "github.com/mochi-mqtt/server/v2"

	"github.com/mqtt-operator/mqtt-operator/broker-image/internal/acl"
)

// A will is checked against the ACLs at CONNECT, but sent when the
// connection ends, possibly hours and several auth bundles later: an ACL
// narrowed in between, or the user removed, must stop it like any other
// publish. mochi's only hook before a will is sent is OnWill, which can
// change the will but not cancel it; a will with an empty topic reaches
// nobody (mochi's topic index matches no subscription to "") and, not
// retained, is stored nowhere.

// OnWill returns the will of cl if the snapshot in force still lets cl
// publish it, and an empty will otherwise. A will with a delay is judged
// when its client disconnects, not again when the delay ends (mochi calls
// no hook then).
func (h *Hook) OnWill(cl *mqtt.Client, will mqtt.Will) (mqtt.Will, error) {
	if h.willAllowed(cl, will.TopicName) {
		return will, nil
	}
	h.Counters.ACLDeniedPublish.Add(1)
	revision := ""
	if s := h.snap.Load(); s != nil {
		revision = s.Revision
	}
	h.log.Info("dropped a will the auth bundle in force does not allow", "clientId", cl.ID, "revision", revision)
	return mqtt.Will{}, nil
}

func (h *Hook) willAllowed(cl *mqtt.Client, topic string) bool {
	s := h.snap.Load()
	if s == nil {
		return false
	}
	if st := h.state(cl); st != nil && st.revoked.Load() {
		return false // the user was removed or its credentials changed
	}
	return s.index.Allowed(acl.Client{Username: string(cl.Properties.Username), ClientID: cl.ID}, acl.Publish, topic)
}

// WillCheck is a hook that gives h's OnWill to mochi. It is separate from
// h so that h's list of events stays as it is; add it to the server after
// h.
func (h *Hook) WillCheck() mqtt.Hook { return &willCheck{policy: h} }

type willCheck struct {
	mqtt.HookBase
	policy *Hook
}

func (w *willCheck) ID() string { return "mqtt-operator-will-check" }

func (w *willCheck) Provides(b byte) bool { return b == mqtt.OnWill }

func (w *willCheck) OnWill(cl *mqtt.Client, will mqtt.Will) (mqtt.Will, error) {
	return w.policy.OnWill(cl, will)
}
