package cluster

import (
	"encoding/json"
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

const (
	answerOwned = "o"
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
	req, _ := json.Marshal(kick{ID: cl.ID, User: username, Stamp: me.stamp})
	owned := false
	if nc := n.conn(); nc != nil {
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
				m, err := nc.Request(kickSubject(tok), req, AckTimeout)
				if err == nil && string(m.Data) == answerOwned {
					mu.Lock()
					owned = true
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
	}
	s.mu.Lock()
	lost := me.lost
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
	if cl, ok := n.mq.Clients.Get(k.ID); ok {
		if string(cl.Properties.Username) != k.User {
			answer = answerOwned
			return
		}
		if mine == nil || cl != mine.cl {
			victims = append(victims, cl)
		}
	}
	for _, cl := range victims {
		if !cl.Closed() {
			n.log.Info("client ID taken over by a login on another pod", "clientId", k.ID, "pod", k.Stamp.Node)
			_ = n.mq.DisconnectClient(cl, packets.ErrSessionTakenOver)
		}
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

// OnDisconnect forgets the stamp of a session that ended.
func (b *bridge) OnDisconnect(cl *mqtt.Client, _ error, _ bool) {
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
