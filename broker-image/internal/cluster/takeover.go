package cluster

import (
	"encoding/json"
	"errors"
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/nats-io/nats.go"
)

// One live session per client ID cluster-wide ([MQTT-3.1.4-3]; pitfall 7).
// A login that passed every local check asks every other pod, and waits
// for the answers, before its CONNACK: a pod with a live session of the
// same client ID and user disconnects it (0x8E, session taken over); a pod
// where the ID belongs to another user's session refuses the takeover (the
// login is refused with 0x85, as on one pod).
//
// Two CONNECTs with one ID at once on two pods: each carries a stamp from a
// hybrid logical clock (wall time, never behind a stamp this pod has seen),
// and the later stamp (then the node name) wins everywhere: the older login
// is refused with 0x89 (server busy; a client retries) or, if already live,
// taken over. Both sides compare the same two stamps, so exactly one
// session stays, never a ping-pong.
//
// A route that comes up (a pod joins, a partition heals) makes both pods
// exchange their live sessions (syncSessions): the same rule then ends the
// older of two sessions of one ID that were admitted while the pods could
// not reach each other.
//
// Not yet: the old pod's persistent session (subscriptions, queued
// messages) does not move; it stays there, offline, until it expires.

type stamp struct {
	T    int64  `json:"t"`
	Node string `json:"n"`
}

func (a stamp) after(b stamp) bool {
	return a.T > b.T || (a.T == b.T && a.Node > b.Node)
}

type kick struct {
	ID    string `json:"id"`
	User  string `json:"u"`
	Stamp stamp  `json:"s"`
	// Inbox: the login resumes its session (clean start 0); a pod holding
	// it sends it to <Inbox>.<its node> (move.go). Clean: the login starts
	// a new session; one held elsewhere ends.
	Inbox string `json:"i,omitempty"`
	Clean bool   `json:"c,omitempty"`
}

type session struct {
	stamp stamp
	user  string
	cl    *mqtt.Client
	// lost: a newer login elsewhere took the ID; established: mochi sent
	// the CONNACK. Whichever of the two comes second disconnects cl, so a
	// takeover that arrives between Admit and the CONNACK is not missed.
	lost, established bool
}

type sessions struct {
	mu    sync.Mutex
	last  int64
	byID  map[string]*session
	clock func() int64
}

func (s *sessions) next(node string) stamp {
	t := s.clock()
	if t <= s.last {
		t = s.last + 1
	}
	s.last = t
	return stamp{T: t, Node: node}
}

func kickSubject(tok string) string { return "_k." + tok }

func syncSubject(tok string) string { return "_s." + tok }

const (
	answerOwned = "o" // the ID is another user's session here
	answerNewer = "n" // a newer login with the ID is under way here
)

// Admit takes clientID over on every other pod before cl's CONNACK.
func (n *Node) Admit(cl *mqtt.Client, username string) packets.Code {
	if cl.Net.Inline {
		return packets.CodeSuccess
	}
	s := &n.sess
	s.mu.Lock()
	me := &session{stamp: s.next(n.node), user: username, cl: cl}
	s.byID[cl.ID] = me
	s.mu.Unlock()
	k := kick{ID: cl.ID, User: username, Stamp: me.stamp, Clean: cl.Properties.Clean}
	nc := n.conn()
	var t *transfer
	if !k.Clean && nc != nil {
		var err error
		if t, err = n.newTransfer(nc); err != nil {
			return packets.ErrServerBusy
		}
		defer t.close()
		k.Inbox = t.prefix
	}
	req, _ := json.Marshal(k)
	owned, newer := false, false
	var movedFrom []string
	if nc != nil {
		var wg sync.WaitGroup
		var mu sync.Mutex
		// The routes up now, not the pods learnt so far: a pod that joined
		// a moment ago may hold a session too.
		for _, name := range n.routes() {
			tok := TopicSubject(name)
			n.learn(tok)
			wg.Add(1)
			go func() {
				defer wg.Done()
				m, err := n.request(nc, tok, kickSubject(tok), req)
				if err != nil {
					return
				}
				mu.Lock()
				owned = owned || string(m.Data) == answerOwned
				newer = newer || string(m.Data) == answerNewer
				if string(m.Data) == answerMoved {
					movedFrom = append(movedFrom, tok)
				}
				mu.Unlock()
			}()
		}
		wg.Wait()
	}
	s.mu.Lock()
	lost := me.lost || newer
	if owned || lost {
		if s.byID[cl.ID] == me {
			delete(s.byID, cl.ID)
		}
	}
	s.mu.Unlock()
	switch {
	case owned:
		n.log.Info("refused a client ID whose session on another pod belongs to another user", "clientId", cl.ID)
		return packets.ErrClientIdentifierNotValid
	case lost:
		n.log.Info("refused a login: a newer one with the same client ID arrived on another pod", "clientId", cl.ID)
		return packets.ErrServerBusy
	}
	if len(movedFrom) > 0 {
		if err := n.importSession(nc, cl, t, movedFrom); err != nil {
			s.mu.Lock()
			if s.byID[cl.ID] == me {
				delete(s.byID, cl.ID)
			}
			s.mu.Unlock()
			n.log.Warn("refused a login: its session could not be moved from another pod; the client can try again", "clientId", cl.ID, "reason", err.Error())
			return packets.ErrServerBusy
		}
	}
	return packets.CodeSuccess
}

// kicked answers another pod's login (see Admit).
func (n *Node) kicked(m *nats.Msg) {
	var k kick
	if err := json.Unmarshal(m.Data, &k); err != nil {
		return
	}
	answer := "+"
	defer func() { _ = m.Respond([]byte(answer)) }()
	s := &n.sess
	s.mu.Lock()
	if k.Stamp.T > s.last {
		s.last = k.Stamp.T // never stamp a later login before this one
	}
	mine := s.byID[k.ID]
	if mine != nil && mine.user != k.User {
		s.mu.Unlock()
		answer = answerOwned
		return
	}
	if mine != nil && mine.stamp.after(k.Stamp) {
		s.mu.Unlock() // this pod's login is the newer: the other one loses
		answer = answerNewer
		return
	}
	var victims []*mqtt.Client
	if mine != nil {
		mine.lost = true
		delete(s.byID, k.ID)
		if mine.established {
			victims = append(victims, mine.cl)
		}
	}
	s.mu.Unlock()
	held, ok := n.mq.Clients.Get(k.ID)
	if ok {
		if string(held.Properties.Username) != k.User {
			answer = answerOwned
			return
		}
		if mine == nil || held != mine.cl {
			victims = append(victims, held)
		}
	}
	for _, cl := range victims {
		if !cl.Closed() {
			n.log.Info("client ID taken over by a login on another pod", "clientId", k.ID, "pod", k.Stamp.Node)
			if n.Sessions.TakenOver != nil {
				n.Sessions.TakenOver(cl)
			}
			_ = n.mq.DisconnectClient(cl, packets.ErrSessionTakenOver)
		}
	}
	if !ok || !persistentSession(held) {
		return // nothing outlives the connection: mochi cleans it up
	}
	switch {
	case k.Clean:
		n.deleteSession(held)
		n.log.Info("ended a session here: its client started a new one on another pod", "clientId", k.ID, "pod", k.Stamp.Node)
	case k.Inbox != "":
		nc := n.conn()
		if nc == nil {
			return
		}
		if err := n.sendSession(nc, held, k.Inbox+"."+n.nodeTok); err != nil {
			n.log.Warn("cluster: could not send a session to another pod; it stays here", "clientId", k.ID, "error", err.Error())
			return
		}
		answer = answerMoved
	}
}

// OnSessionEstablished disconnects a client whose ID a newer login on
// another pod took between its admission and its CONNACK.
func (b *bridge) OnSessionEstablished(cl *mqtt.Client, _ packets.Packet) {
	s := &b.n.sess
	s.mu.Lock()
	lost := false
	if e := s.byID[cl.ID]; e != nil && e.cl == cl {
		e.established = true
	} else if !cl.Net.Inline {
		lost = true // kicked (and forgotten) before this
	}
	s.mu.Unlock()
	if lost && !cl.Closed() {
		b.n.log.Info("client ID taken over by a login on another pod", "clientId", cl.ID)
		_ = b.n.mq.DisconnectClient(cl, packets.ErrSessionTakenOver)
	}
}

// OnDisconnect forgets the stamp of a session that ended, and the
// PUBACKs owed on its connection.
func (b *bridge) OnDisconnect(cl *mqtt.Client, _ error, _ bool) {
	b.forget(cl)
	b.local.end(cl, true)
	s := &b.n.sess
	s.mu.Lock()
	if e := s.byID[cl.ID]; e != nil && e.cl == cl {
		delete(s.byID, cl.ID)
	}
	s.mu.Unlock()
}

func wallClock() int64 { return time.Now().UnixNano() }

// pendingFor bounds how long a login may sit between its admission and its
// CONNACK before sweep forgets it: mochi calls no hook for a connection
// that closes in between.
const pendingFor = 30 * time.Second

// sweep forgets logins admitted but never established.
func (s *sessions) sweep() {
	cutoff := s.clock() - int64(pendingFor)
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, e := range s.byID {
		if !e.established && e.stamp.T < cutoff {
			delete(s.byID, id)
		}
	}
}

// request asks the pod tok and waits at most AckTimeout in all. A route
// comes up before the other pod's subscriptions are known here (and a
// duplicate route that nats-server closes takes them away for a moment):
// "no responders" then means "not yet", so it asks again until the
// deadline instead of taking silence for an answer.
func (n *Node) request(nc *nats.Conn, tok, subject string, data []byte) (*nats.Msg, error) {
	deadline := time.Now().Add(AckTimeout)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return nil, nats.ErrTimeout
		}
		m, err := nc.Request(subject, data, left)
		if !errors.Is(err, nats.ErrNoResponders) {
			return m, err
		}
		if !n.hasRoute(tok) {
			return nil, err // gone: nobody there to answer
		}
		select {
		case <-n.stop:
			return nil, err
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// hasRoute reports whether a route to the pod tok is up.
func (n *Node) hasRoute(tok string) bool {
	for _, name := range n.routes() {
		if TopicSubject(name) == tok {
			return true
		}
	}
	return false
}

// maxSyncMessage bounds one message of a session exchange.
const maxSyncMessage = 64 << 10

// syncSessions sends this pod's sessions (live or logging in) to each pod whose bridge
// became reachable since the last call, so that one of two sessions of a
// client ID admitted apart (a partition, a pod that joined late) ends.
// synced holds the pods already told; a pod that became unreachable drops
// out of it and is told again when it comes back.
func (n *Node) syncSessions(nc *nats.Conn, routes []string, synced map[string]bool) {
	for tok := range synced {
		if !n.alive(tok) {
			delete(synced, tok)
		}
	}
	var to []string
	for _, name := range routes {
		tok := TopicSubject(name)
		if !synced[tok] && n.alive(tok) {
			to = append(to, tok)
		}
	}
	if len(to) == 0 {
		return
	}
	s := &n.sess
	s.mu.Lock()
	live := make([]kick, 0, len(s.byID))
	for id, e := range s.byID {
		if !e.lost {
			live = append(live, kick{ID: id, User: e.user, Stamp: e.stamp})
		}
	}
	s.mu.Unlock()
	for _, tok := range to {
		synced[tok] = true
		for start := 0; start < len(live); {
			batch, size := live[start:start], 2
			for _, k := range live[start:] {
				size += len(k.ID) + len(k.User) + len(k.Stamp.Node) + 64
				if size > maxSyncMessage && len(batch) > 0 {
					break
				}
				batch = live[start : start+len(batch)+1]
			}
			start += len(batch)
			data, _ := json.Marshal(batch)
			if err := nc.PublishMsg(&nats.Msg{Subject: syncSubject(tok), Reply: syncSubject(n.nodeTok), Data: data}); err != nil {
				delete(synced, tok) // tried again on the next tick
				break
			}
		}
	}
}

// synced takes another pod's live sessions (syncSessions) and applies the
// rule of Admit to each client ID both pods hold, established or still
// logging in: of one user's two sessions the older loses (0x8E, taken
// over), of two users' the newer (0x87: on one broker that login would have
// been refused). A local session that wins is sent back to the pod that
// asked, so that pod ends its loser too: a login admitted while this pod's
// bridge was reconnecting is settled either way.
func (n *Node) synced(m *nats.Msg) {
	var remote []kick
	if err := json.Unmarshal(m.Data, &remote); err != nil {
		return
	}
	s := &n.sess
	type victim struct {
		cl   *mqtt.Client
		code packets.Code
		pod  string
	}
	var victims []victim
	var winners []kick
	s.mu.Lock()
	for _, k := range remote {
		if k.Stamp.T > s.last {
			s.last = k.Stamp.T
		}
		mine := s.byID[k.ID]
		if mine == nil || mine.lost {
			continue
		}
		code, mineLoses := packets.ErrSessionTakenOver, k.Stamp.after(mine.stamp)
		if mine.user != k.User {
			code, mineLoses = packets.ErrNotAuthorized, mine.stamp.after(k.Stamp)
		}
		if !mineLoses {
			winners = append(winners, kick{ID: k.ID, User: mine.user, Stamp: mine.stamp})
			continue
		}
		mine.lost = true // a login still in Admit is refused there
		delete(s.byID, k.ID)
		if mine.established {
			victims = append(victims, victim{mine.cl, code, k.Stamp.Node})
		}
	}
	s.mu.Unlock()
	if len(winners) > 0 && m.Reply != "" {
		if nc := n.conn(); nc != nil {
			data, _ := json.Marshal(winners)
			_ = nc.Publish(m.Reply, data) // no reply subject: the answer is not answered
		}
	}
	for _, v := range victims {
		if !v.cl.Closed() {
			n.log.Info("ended one of two sessions of a client ID found when the pods met", "clientId", v.cl.ID, "pod", v.pod, "reason", v.code.Reason)
			if v.code == packets.ErrSessionTakenOver && n.Sessions.TakenOver != nil {
				n.Sessions.TakenOver(v.cl)
			}
			_ = n.mq.DisconnectClient(v.cl, v.code)
		}
	}
}
