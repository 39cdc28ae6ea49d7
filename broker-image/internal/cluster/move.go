package cluster

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/storage"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/nats-io/nats.go"

	sessionorder "github.com/mqtt-operator/mqtt-operator/broker-image/internal/session"
)

// Persistent sessions are cluster-wide: a client that resumes its session
// (clean start 0) on pod B while pod A holds it, live or offline, gets it
// on B with its subscriptions, its queued messages and its unacknowledged
// ones, before its CONNACK (session present 1).
//
//  1. B's takeover request (Admit) names an inbox. A ends the live
//     connection, sends the session there (its state, then one message per
//     queued message, then an end marker with the count) and answers
//     "moved". A keeps the session subscribed meanwhile: what arrives for
//     it is queued there.
//  2. B builds the session as an offline client (mochi's own resume then
//     takes it over), subscribes on this pod and waits until every pod
//     knows (the barrier), so new messages come here.
//  3. B asks A to release it: A waits until every message another pod
//     sent it before it knew of B's subscription was queued (a barrier of
//     its own, then its inbound queue drained), unsubscribes the session,
//     sends what was queued since step 1, and deletes it. B adds those.
//
// A message published between the end of step 2 and A's unsubscribing may
// reach the session twice (once queued on A, once here): at least once,
// never lost. If B does not finish (it stops, a timeout), A keeps the
// session and the login is refused with 0x89 (server busy), so the client
// tries again; nothing is lost. A login with clean start 1 ends the old
// session wherever it is.

// MoveTimeout bounds each step of a session move.
const MoveTimeout = 5 * time.Second

func releaseSubject(tok string) string { return "_v." + tok }

const (
	answerMoved = "m" // the session follows in the inbox
	hKind       = "K" // in a transfer: s (session state), m (message), e (end, with the count)
)

// movedSession is the state of a session sent to another pod.
type movedSession struct {
	User            string                   `json:"u"`
	ProtocolVersion byte                     `json:"v"`
	Props           storage.ClientProperties `json:"p"`
	Subs            []packets.Subscription   `json:"s"`
}

// SessionHooks let the broker's other hooks (the durable store, flow
// control) follow sessions that move between pods. Both may be nil.
type SessionHooks struct {
	// Imported: cl, an offline session built from another pod's, now has
	// these subscriptions and queued messages.
	Imported func(cl *mqtt.Client, subs []packets.Subscription, queued []packets.Packet)
	// Gone: the session of cl moved to another pod (or ended there) and was
	// deleted here.
	Gone func(cl *mqtt.Client)
	// TakenOver: a login on another pod is about to end cl's connection.
	TakenOver func(cl *mqtt.Client)
	// CountUser counts username's connections on this pod, but those with
	// client ID exceptID (usercount.go).
	CountUser func(username, exceptID string) int
}

type moving struct {
	cl    *mqtt.Client
	sent  map[uint16]bool
	since time.Time
}

type moves struct {
	mu    sync.Mutex
	byID  map[string]*moving
	slots chan struct{} // releases under way (releasing)
}

// persistentSession reports whether cl's session outlives its connection.
func persistentSession(cl *mqtt.Client) bool {
	if cl.Properties.ProtocolVersion == 5 {
		return cl.Properties.Props.SessionExpiryInterval > 0
	}
	return !cl.Properties.Clean
}

// sendSession sends cl's session to inbox (step 1) and remembers what it
// sent.
func (n *Node) sendSession(nc *nats.Conn, cl *mqtt.Client, inbox string) error {
	p := cl.Properties.Props.Copy(false)
	st := movedSession{User: string(cl.Properties.Username), ProtocolVersion: cl.Properties.ProtocolVersion,
		Props: storage.ClientProperties{
			SessionExpiryInterval: p.SessionExpiryInterval, SessionExpiryIntervalFlag: p.SessionExpiryIntervalFlag,
			RequestProblemInfo: p.RequestProblemInfo, RequestProblemInfoFlag: p.RequestProblemInfoFlag,
			RequestResponseInfo: p.RequestResponseInfo, ReceiveMaximum: p.ReceiveMaximum,
			TopicAliasMaximum: p.TopicAliasMaximum, MaximumPacketSize: p.MaximumPacketSize, User: p.User,
		}}
	for _, sub := range cl.State.Subscriptions.GetAll() {
		st.Subs = append(st.Subs, sub)
	}
	data, err := json.Marshal(st)
	if err != nil {
		return err
	}
	if err := nc.PublishMsg(&nats.Msg{Subject: inbox, Header: nats.Header{hKind: {"s"}}, Data: data}); err != nil {
		return err
	}
	sent := map[uint16]bool{}
	if err := n.sendQueued(nc, cl, inbox, func(pk *packets.Packet) bool { sent[pk.PacketID] = true; return true }); err != nil {
		return err
	}
	n.moves.mu.Lock()
	if n.moves.byID == nil {
		n.moves.byID = map[string]*moving{}
	}
	n.moves.byID[cl.ID] = &moving{cl: cl, sent: sent, since: time.Now()}
	n.moves.mu.Unlock()
	return nil
}

// sendQueued sends cl's queued messages that pick selects, then the end
// marker with their count.
func (n *Node) sendQueued(nc *nats.Conn, cl *mqtt.Client, inbox string, pick func(*packets.Packet) bool) error {
	count := 0
	for _, pk := range cl.State.Inflight.GetAll(false) {
		if !pick(&pk) {
			continue
		}
		m := sessionorder.StoredMessage(pk)
		data, err := m.MarshalBinary()
		if err != nil {
			return err
		}
		if err := nc.PublishMsg(&nats.Msg{Subject: inbox, Header: nats.Header{hKind: {"m"}}, Data: data}); err != nil {
			return err
		}
		count++
	}
	return nc.PublishMsg(&nats.Msg{Subject: inbox, Header: nats.Header{hKind: {"e"}, hEnd: {strconv.Itoa(count)}}})
}

// releasing runs released for a few requests at a time: each waits for a
// barrier (round trips to every pod), which one after the other held a
// draining pod's handover of many sessions to a few hundred a second.
func (n *Node) releasing(m *nats.Msg) {
	select {
	case n.moves.slots <- struct{}{}:
	case <-n.stop:
		return
	}
	go func() {
		defer func() { <-n.moves.slots }()
		n.released(m)
	}()
}

// released answers step 3 on the pod that sent a session.
func (n *Node) released(m *nats.Msg) {
	var req struct {
		ID    string `json:"id"`
		Inbox string `json:"i"`
	}
	answer := "-"
	defer func() { _ = m.Respond([]byte(answer)) }()
	if json.Unmarshal(m.Data, &req) != nil || req.Inbox == "" {
		return
	}
	n.moves.mu.Lock()
	mv := n.moves.byID[req.ID]
	delete(n.moves.byID, req.ID)
	n.moves.mu.Unlock()
	if mv == nil {
		return // timed out: the session stayed here, the other pod gives up
	}
	nc := n.conn()
	if nc == nil {
		return
	}
	// A pod that forwarded a message here before it knew the new pod's
	// subscription (before that pod's barrier ended) has it on its route to
	// this pod ahead of its answer to a ping from here; the drain then
	// hands every such message to the session before it goes.
	n.barrier()
	n.bridge.drained()
	// A publish here that chose its pods before this pod knew the new
	// pod's subscription goes to this session only: it must be in it
	// before the rest is sent (publishing.go). Not in time: the session
	// stays here, and the client tries again.
	if !n.bridge.local.wait(2 * AckTimeout) {
		n.log.Warn("cluster: a publish here was not delivered in time; the session stays here", "clientId", req.ID)
		return
	}
	n.mq.UnsubscribeClient(mv.cl) // nothing more is queued here
	err := n.sendQueued(nc, mv.cl, req.Inbox, func(pk *packets.Packet) bool { return !mv.sent[pk.PacketID] })
	if err != nil {
		n.log.Warn("cluster: could not send the rest of a moved session", "clientId", req.ID, "error", err.Error())
		return
	}
	n.deleteSession(mv.cl)
	answer = okString
	n.log.Info("session moved to another pod", "clientId", req.ID)
}

const okString = "+"

// deleteSession deletes an offline session here (moved, or ended by a
// clean login elsewhere).
func (n *Node) deleteSession(cl *mqtt.Client) {
	n.mq.UnsubscribeClient(cl)
	cl.ClearInflights()
	if current, ok := n.mq.Clients.Get(cl.ID); ok && current == cl {
		n.mq.Clients.Delete(cl.ID)
	}
	if n.Sessions.Gone != nil {
		n.Sessions.Gone(cl)
	}
}

// sweepMoves forgets moves the other pod never finished: the session stays.
func (n *Node) sweepMoves() {
	n.moves.mu.Lock()
	defer n.moves.mu.Unlock()
	for id, mv := range n.moves.byID {
		if time.Since(mv.since) > 2*MoveTimeout {
			delete(n.moves.byID, id)
			n.log.Warn("cluster: a session move was not finished by the other pod; the session stays here", "clientId", id)
		}
	}
}

// transfer collects what pods send to one inbox prefix: <prefix>.<pod>.
type transfer struct {
	prefix string
	sub    *nats.Subscription
	mu     sync.Mutex
	state  map[string]*movedSession
	queued map[string][]packets.Packet
	ended  map[string]chan struct{}
	bad    map[string]error
}

func (n *Node) newTransfer(nc *nats.Conn) (*transfer, error) {
	t := &transfer{prefix: nats.NewInbox(), state: map[string]*movedSession{}, queued: map[string][]packets.Packet{},
		ended: map[string]chan struct{}{}, bad: map[string]error{}}
	sub, err := nc.Subscribe(t.prefix+".*", t.take)
	if err != nil {
		return nil, err
	}
	// A session's queue is bounded by the broker's per-client budget; the
	// callback only decodes.
	_ = sub.SetPendingLimits(-1, -1)
	t.sub = sub
	return t, nil
}

func (t *transfer) endOf(tok string) chan struct{} {
	ch, ok := t.ended[tok]
	if !ok {
		ch = make(chan struct{})
		t.ended[tok] = ch
	}
	return ch
}

func (t *transfer) take(m *nats.Msg) {
	tok := strings.TrimPrefix(m.Subject, t.prefix+".")
	t.mu.Lock()
	defer t.mu.Unlock()
	switch m.Header.Get(hKind) {
	case "s":
		var st movedSession
		if err := json.Unmarshal(m.Data, &st); err != nil {
			t.bad[tok] = err
			return
		}
		t.state[tok] = &st
	case "m":
		var sm storage.Message
		if err := sm.UnmarshalBinary(m.Data); err != nil {
			t.bad[tok] = err
			return
		}
		t.queued[tok] = append(t.queued[tok], sm.ToPacket())
	case "e":
		if want, _ := strconv.Atoi(m.Header.Get(hEnd)); want != len(t.queued[tok]) {
			t.bad[tok] = fmt.Errorf("received %d of %d queued messages", len(t.queued[tok]), want)
		}
		close(t.endOf(tok))
	}
}

// wait waits for the end marker of each pod in toks.
func (t *transfer) wait(toks []string) error {
	deadline := time.After(MoveTimeout)
	for _, tok := range toks {
		t.mu.Lock()
		ch := t.endOf(tok)
		t.mu.Unlock()
		select {
		case <-ch:
		case <-deadline:
			return errors.New("a pod did not finish sending the session in time")
		}
		t.mu.Lock()
		err := t.bad[tok]
		t.mu.Unlock()
		if err != nil {
			return err
		}
	}
	return nil
}

func (t *transfer) close() { _ = t.sub.Unsubscribe() }

// importSession builds the session the pods in from sent (step 2) as an
// offline client mochi's resume takes over, and has them release it
// (step 3). A session held by several pods (they could not reach each
// other) is merged.
func (n *Node) importSession(nc *nats.Conn, cl *mqtt.Client, t *transfer, from []string) error {
	if err := t.wait(from); err != nil {
		return err
	}
	ghost := n.mq.NewClient(nil, cl.Net.Listener, cl.ID, false)
	ghost.Properties.Username = cl.Properties.Username
	ghost.Properties.Clean = false
	var subs []packets.Subscription
	var queued []packets.Packet
	for _, tok := range from {
		st := t.state[tok]
		if st == nil {
			return errors.New("a pod sent no session state")
		}
		ghost.Properties.ProtocolVersion = st.ProtocolVersion
		ghost.Properties.Props = packets.Properties{
			SessionExpiryInterval: st.Props.SessionExpiryInterval, SessionExpiryIntervalFlag: st.Props.SessionExpiryIntervalFlag,
			ReceiveMaximum: st.Props.ReceiveMaximum, TopicAliasMaximum: st.Props.TopicAliasMaximum,
			MaximumPacketSize: st.Props.MaximumPacketSize, User: st.Props.User,
			RequestProblemInfo: st.Props.RequestProblemInfo, RequestProblemInfoFlag: st.Props.RequestProblemInfoFlag,
			RequestResponseInfo: st.Props.RequestResponseInfo,
		}
		subs = append(subs, st.Subs...)
		queued = append(queued, t.queued[tok]...)
	}
	ghost.Stop(packets.ErrSessionTakenOver) // offline, as a session restored from the store
	if old, ok := n.mq.Clients.Get(cl.ID); ok && old.Closed() {
		n.deleteSession(old) // a stale copy here: the other pod's is the one in use
	}
	for _, sub := range subs {
		n.mq.Topics.Subscribe(cl.ID, sub)
		ghost.State.Subscriptions.Add(sub.Filter, sub)
		n.bridge.add(cl.ID, sub.Filter, false)
	}
	queued = n.enqueue(ghost, queued)
	n.mq.Clients.Add(ghost)
	if n.Sessions.Imported != nil {
		n.Sessions.Imported(ghost, subs, queued)
	}
	n.barrier() // every pod now sends this session's messages here too

	t2, err := n.newTransfer(nc)
	if err != nil {
		return err
	}
	defer t2.close()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var failed error
	for _, tok := range from {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := json.Marshal(map[string]string{"id": cl.ID, "i": t2.prefix + "." + tok})
			m, err := nc.Request(releaseSubject(tok), req, MoveTimeout)
			if err == nil && string(m.Data) != okString {
				err = errors.New("the pod had given the session up")
			}
			if err != nil {
				mu.Lock()
				failed = err
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if failed != nil {
		n.deleteSession(ghost)
		return failed
	}
	if err := t2.wait(from); err != nil {
		n.deleteSession(ghost)
		return err
	}
	var rest []packets.Packet
	for _, tok := range from {
		rest = append(rest, t2.queued[tok]...)
	}
	if rest = n.enqueue(ghost, rest); len(rest) > 0 && n.Sessions.Imported != nil {
		n.Sessions.Imported(ghost, nil, rest)
	}
	n.log.Info("session moved here from another pod", "clientId", cl.ID, "subscriptions", len(subs), "queued", len(queued)+len(rest))
	return nil
}

// enqueue adds messages to an offline session's queue, giving a message a
// new packet ID where one is taken (two pods' queues, or what arrived here
// meanwhile); it returns them as queued.
func (n *Node) enqueue(cl *mqtt.Client, msgs []packets.Packet) []packets.Packet {
	out := msgs[:0]
	for _, pk := range msgs {
		if _, taken := cl.State.Inflight.Get(pk.PacketID); taken || pk.PacketID == 0 {
			if pk.FixedHeader.Type != packets.Publish {
				continue // a PUBREC/PUBREL state under a taken ID cannot be renumbered
			}
			id, err := cl.NextPacketID()
			if err != nil {
				n.log.Warn("cluster: no free packet ID for a moved message; dropped", "clientId", cl.ID)
				continue
			}
			pk.PacketID = uint16(id)
		}
		cl.State.Inflight.Set(pk)
		out = append(out, pk)
	}
	return out
}
