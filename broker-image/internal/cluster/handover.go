package cluster

import (
	"context"
	"encoding/json"
	"slices"
	"sync"
	"sync/atomic"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/nats-io/nats.go"
)

// Handing persistent sessions over when a pod drains (a scale-in).
//
// A session moves to another pod when its client logs in there (move.go).
// A client that is away while its pod drains would find its session gone
// with the pod; so the draining pod asks another pod to adopt each of its
// offline persistent sessions: that pod runs a login's takeover for the
// client ID (Admit) without a connection, which moves the session as a
// login would, and the session waits there, offline, for its client. A pod
// that is draining itself declines, and the next one is asked.

func handoverSubject(tok string) string { return "_h." + tok }

// adoptTimeout bounds one adoption: a takeover and a session move.
const adoptTimeout = 3 * MoveTimeout

const (
	answerAdopted  = "+"
	answerDraining = "d"
)

// handoverListener names the listener of sessions built for an adoption.
const handoverListener = "cluster-handover"

// adoption is the request to adopt a session.
type adoption struct {
	ID   string `json:"id"`
	User string `json:"u"`
}

// SetDraining tells the node that its pod drains: it adopts no more
// sessions from other pods.
func (n *Node) SetDraining() { n.draining.Store(true) }

// adoptions runs the adoptions other pods ask for, a few at a time, one
// at a time per client ID.
type adoptions struct {
	slots chan struct{}
	mu    sync.Mutex
	busy  map[string]bool
}

// claim reports whether no adoption of id runs here, and marks one.
func (a *adoptions) claim(id string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.busy[id] {
		return false
	}
	if a.busy == nil {
		a.busy = map[string]bool{}
	}
	a.busy[id] = true
	return true
}

func (a *adoptions) release(id string) {
	a.mu.Lock()
	delete(a.busy, id)
	a.mu.Unlock()
}

// adopt answers a draining pod's request (see HandOver) on the pod asked.
func (n *Node) adopt(m *nats.Msg) {
	var req adoption
	if json.Unmarshal(m.Data, &req) != nil || req.ID == "" {
		_ = m.Respond([]byte("-"))
		return
	}
	if n.draining.Load() {
		_ = m.Respond([]byte(answerDraining))
		return
	}
	if !n.adopting.claim(req.ID) {
		_ = m.Respond([]byte("-")) // asked twice: the first one decides
		return
	}
	select {
	case n.adopting.slots <- struct{}{}:
	case <-n.stop:
		n.adopting.release(req.ID)
		return
	}
	go func() {
		defer func() { n.adopting.release(req.ID); <-n.adopting.slots }()
		answer := "-"
		if n.adoptSession(req) {
			answer = answerAdopted
		}
		_ = m.Respond([]byte(answer))
	}()
}

// adoptSession takes the session of req.ID over from wherever it is, as a
// login with clean start 0 would, and leaves it here offline.
func (n *Node) adoptSession(req adoption) bool {
	if held, ok := n.mq.Clients.Get(req.ID); ok {
		if string(held.Properties.Username) != req.User {
			return false // another user's session with that ID is here
		}
		if !held.Closed() {
			return true // its client logged in here meanwhile, and pulled it
		}
	}
	cl := n.mq.NewClient(nil, handoverListener, req.ID, false)
	cl.Properties.Username = []byte(req.User)
	cl.Properties.Clean = false
	code := n.Admit(cl, req.User)
	// No connection follows: forget the login, as a session restored from
	// the store has none.
	s := &n.sess
	s.mu.Lock()
	if e := s.byID[req.ID]; e != nil && e.cl == cl {
		delete(s.byID, req.ID)
	}
	s.mu.Unlock()
	if code != packets.CodeSuccess {
		n.log.Info("cluster: could not adopt a session from a draining pod", "clientId", req.ID, "reason", code.Reason)
		return false
	}
	return true
}

// offlineSessions lists this pod's persistent sessions without a
// connection.
func (n *Node) offlineSessions() []*mqtt.Client {
	var out []*mqtt.Client
	for _, cl := range n.mq.Clients.GetAll() {
		if cl.Net.Inline || !cl.Closed() || !persistentSession(cl) {
			continue
		}
		out = append(out, cl)
	}
	return out
}

// HandOver asks the other pods to adopt this pod's offline persistent
// sessions, until ctx ends. It returns how many moved and how many are
// still here (their clients come back to find no session). Pods are asked
// in turn, so the sessions spread; one that declines (draining too) is not
// asked again.
func (n *Node) HandOver(ctx context.Context) (moved, left int) {
	sessions := n.offlineSessions()
	if len(sessions) == 0 {
		return 0, 0
	}
	nc := n.conn()
	targets := n.routes()
	slices.Sort(targets) // lower ordinals first: a scale-in keeps them
	var declined sync.Map
	var done atomic.Int64
	work := make(chan *mqtt.Client)
	var wg sync.WaitGroup
	for w := range min(16, len(sessions)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			next := w
			for cl := range work {
				if nc != nil && n.handOne(ctx, nc, cl, targets, &next, &declined) {
					done.Add(1)
				}
			}
		}()
	}
feed:
	for _, cl := range sessions {
		select {
		case work <- cl:
		case <-ctx.Done():
			break feed
		}
	}
	close(work)
	wg.Wait()
	moved = int(done.Load())
	return moved, len(n.offlineSessions())
}

// handOne asks the pods in turn, from *next, to adopt cl's session.
func (n *Node) handOne(ctx context.Context, nc *nats.Conn, cl *mqtt.Client, targets []string, next *int, declined *sync.Map) bool {
	req, _ := json.Marshal(adoption{ID: cl.ID, User: string(cl.Properties.Username)})
	for range targets {
		name := targets[*next%len(targets)]
		*next++
		if _, no := declined.Load(name); no || ctx.Err() != nil {
			continue
		}
		if current, ok := n.mq.Clients.Get(cl.ID); !ok || current != cl {
			return false // its client came back (here it is refused) or it ended
		}
		// The whole adoptTimeout even when ctx ends sooner: asked again
		// while the first adoption runs, a pod would race itself for the
		// session.
		m, err := nc.Request(handoverSubject(TopicSubject(name)), req, adoptTimeout)
		switch {
		case err != nil:
			n.log.Info("cluster: a pod did not adopt a session in time", "clientId", cl.ID, "pod", name, "error", err.Error())
		case string(m.Data) == answerAdopted:
			return true
		case string(m.Data) == answerDraining:
			declined.Store(name, true)
		}
	}
	return false
}
