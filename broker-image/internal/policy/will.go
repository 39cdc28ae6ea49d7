package policy

import (
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/mqtt-operator/mqtt-operator/broker-image/internal/acl"
)

// A will is checked against the ACLs at CONNECT, but sent when the
// connection ends, possibly hours and several auth bundles later: an ACL
// narrowed in between, or the user removed, must stop it like any other
// publish. mochi's only hook before a will is sent is OnWill, which can
// change the will but not cancel it; a will with an empty topic reaches
// nobody (mochi's topic index matches no subscription to "") and, not
// retained, is stored nowhere.
//
// A will with a delay (MQTT 5) mochi keeps in a list it looks at once a
// second, and sends when the delay has passed by a whole second: a 3 s
// delay fired after about 4 s. So the broker sends delayed wills itself,
// from a timer: mochi is given the empty will to keep (it still forgets it
// when the client reconnects, and does its housekeeping when the delay
// ends), and the timer publishes the real one on time, unless the client
// reconnected meanwhile (a new connection to the session cancels the will,
// as in mochi and mosquitto) or the broker stopped. The delay ends no later
// than the session: a will whose session expires first is sent when it
// does. The will is judged again when it is sent, against the auth bundle
// in force then.

// OnWill returns the will of cl if the snapshot in force still lets cl
// publish it, and an empty will otherwise.
func (h *Hook) OnWill(cl *mqtt.Client, will mqtt.Will) (mqtt.Will, error) {
	if h.willAllowed(cl, will.TopicName) {
		return will, nil
	}
	h.dropWill(cl)
	return mqtt.Will{}, nil
}

func (h *Hook) dropWill(cl *mqtt.Client) {
	h.Counters.ACLDeniedPublish.Add(1)
	revision := ""
	if s := h.snap.Load(); s != nil {
		revision = s.Revision
	}
	h.log.Info("dropped a will the auth bundle in force does not allow", "clientId", cl.ID, "revision", revision)
}

func (h *Hook) willAllowed(cl *mqtt.Client, topic string) bool {
	s := h.snap.Load()
	if s == nil {
		return false
	}
	if st := h.state(cl); st != nil && st.revoked.Load() {
		return false // the user was removed or its credentials changed
	}
	username := string(cl.Properties.Username)
	if !s.hasUser(username) {
		return false // removed while its will waited
	}
	return s.index.Allowed(acl.Client{Username: username, ClientID: cl.ID}, acl.Publish, topic)
}

// WillCheck is a hook that gives h's OnWill to mochi and sends delayed
// wills on time. It is separate from h so that h's list of events stays as
// it is; add it to the server after h.
func (h *Hook) WillCheck() mqtt.Hook {
	w := &willCheck{policy: h, delayed: map[string]*delayedWill{}}
	h.wills = w
	return w
}

// TakenOver tells the will check that a new connection to cl's session,
// here or on another pod, is ending cl's connection: its delayed will is
// cancelled (not scheduled) as a reconnection cancels it. The stop cause
// cannot say so: the client may close the connection on the DISCONNECT
// (0x8E) before mochi records the cause.
//
// cl's will is not read here: mochi clears it without synchronisation as
// the connection ends. The mark is dropped at cl's OnDisconnect (after its
// OnWill), or by the sweep when cl had already passed it.
func (h *Hook) TakenOver(cl *mqtt.Client) {
	if h.wills != nil {
		h.wills.marks.Add(1) // first, so that marks never undercounts
		if _, loaded := h.wills.takenOver.LoadOrStore(cl, time.Now()); loaded {
			h.wills.marks.Add(-1)
		}
	}
}

type willCheck struct {
	mqtt.HookBase
	policy *Hook

	mu      sync.Mutex
	delayed map[string]*delayedWill // by client ID
	stopped bool
	// takenOver: connections a new connection to their session ends
	// (TakenOver), with when; their delayed wills are not scheduled.
	takenOver sync.Map
	marks     atomic.Int64 // entries in takenOver
}

// markLife is how long a TakenOver mark may outlive its connection's
// OnDisconnect (it was set after it) before the sweep drops it.
const markLife = time.Minute

type delayedWill struct{ timer *time.Timer }

func (w *willCheck) ID() string { return "mqtt-operator-will-check" }

func (w *willCheck) Provides(b byte) bool {
	return b == mqtt.OnWill || b == mqtt.OnSessionEstablish || b == mqtt.OnDisconnect || b == mqtt.OnStopped
}

// OnDisconnect forgets cl's TakenOver mark (its OnWill came first) and
// sweeps marks set on connections that had already ended.
func (w *willCheck) OnDisconnect(cl *mqtt.Client, _ error, _ bool) {
	if w.marks.Load() == 0 {
		return
	}
	if _, ok := w.takenOver.LoadAndDelete(cl); ok {
		w.marks.Add(-1)
	}
	old := time.Now().Add(-markLife)
	w.takenOver.Range(func(k, v any) bool {
		if v.(time.Time).Before(old) {
			if _, ok := w.takenOver.LoadAndDelete(k); ok {
				w.marks.Add(-1)
			}
		}
		return true
	})
}

func (w *willCheck) OnWill(cl *mqtt.Client, will mqtt.Will) (mqtt.Will, error) {
	will, err := w.policy.OnWill(cl, will)
	if err != nil || will.TopicName == "" || cl.Properties.Will.WillDelayInterval == 0 {
		return will, err
	}
	if _, taken := w.takenOver.Load(cl); taken || cl.StopCause() == packets.ErrSessionTakenOver {
		// A new connection to the session ended this one: it cancels a
		// delayed will, on this pod or another (mochi's own cancel, like
		// OnSessionEstablish below, runs before this old connection's will).
		return mqtt.Will{}, nil
	}
	w.schedule(cl, will, willDelay(cl))
	return mqtt.Will{}, nil
}

// willDelay is how long cl's will waits: its will delay, or less when its
// session ends before.
func willDelay(cl *mqtt.Client) time.Duration {
	delay := cl.Properties.Will.WillDelayInterval
	if cl.Properties.ProtocolVersion == 5 && cl.Properties.Props.SessionExpiryInterval < delay {
		delay = cl.Properties.Props.SessionExpiryInterval // mochi capped it at the broker's maximum
	}
	return time.Duration(delay) * time.Second
}

func (w *willCheck) schedule(cl *mqtt.Client, will mqtt.Will, delay time.Duration) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopped {
		return
	}
	if old := w.delayed[cl.ID]; old != nil {
		old.timer.Stop()
	}
	d := &delayedWill{}
	d.timer = time.AfterFunc(delay, func() { w.fire(cl, will, d) })
	w.delayed[cl.ID] = d
}

// fire sends the will d was set for, if d is still the one set for the
// client and the auth bundle in force allows the will.
func (w *willCheck) fire(cl *mqtt.Client, will mqtt.Will, d *delayedWill) {
	w.mu.Lock()
	current := w.delayed[cl.ID] == d && !w.stopped
	if current {
		delete(w.delayed, cl.ID)
	}
	w.mu.Unlock()
	if !current {
		return
	}
	if !w.policy.willAllowed(cl, will.TopicName) {
		w.policy.dropWill(cl)
		return
	}
	w.policy.publishWill(cl, will)
}

// OnSessionEstablish cancels the delayed will of a session a client
// connects to again.
func (w *willCheck) OnSessionEstablish(cl *mqtt.Client, _ packets.Packet) {
	if old, ok := w.policy.server.Clients.Get(cl.ID); ok && old != cl && !old.Closed() {
		w.policy.TakenOver(old) // mochi ends it next
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if d := w.delayed[cl.ID]; d != nil {
		d.timer.Stop()
		delete(w.delayed, cl.ID)
	}
}

// OnStopped drops the wills still waiting: mochi sends none once stopped.
func (w *willCheck) OnStopped() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.stopped = true
	for id, d := range w.delayed {
		d.timer.Stop()
		delete(w.delayed, id)
	}
}

// publishWill publishes cl's will as mochi publishes an undelayed one: from
// cl (its client ID, so No Local subscriptions of its own session skip it),
// retained if asked, without an ACL check (already made).
func (h *Hook) publishWill(cl *mqtt.Client, will mqtt.Will) {
	from := h.server.NewClient(nil, cl.Net.Listener, cl.ID, true)
	from.Properties.ProtocolVersion = cl.Properties.ProtocolVersion
	from.Properties.Username = cl.Properties.Username
	pk := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: will.Qos, Retain: will.Retain},
		TopicName:   will.TopicName,
		Payload:     will.Payload,
		Properties:  packets.Properties{User: will.User},
	}
	if pk.FixedHeader.Qos > 0 {
		pk.PacketID = 1 // mochi validates it; the inline path ignores it
	}
	if err := h.server.InjectPacket(from, pk); err != nil {
		h.log.Warn("could not send a delayed will", "clientId", cl.ID, "error", err.Error())
	}
}
