package cluster

import (
	"encoding/binary"
	"strconv"
	"strings"
	"sync"

	"github.com/nats-io/nats.go"
)

// hold stops (on) or resumes the delivering goroutine; see HoldInbound.
func (b *bridge) hold(on bool) {
	if on && !b.holding.Load() {
		b.holdMu.Lock()
		b.holding.Store(true)
	} else if !on && b.holding.Load() {
		b.holding.Store(false)
		b.holdMu.Unlock()
	}
}

// inboundBytes bounds the messages from other pods waiting for this pod's
// delivering goroutine, in bytes of payload, subject and headers (plus
// inboxOverhead each), whatever their number.
const (
	inboundBytes  = 64 << 20
	inboxOverhead = 256
)

// inbox is the queue between nats.go and the delivering goroutine. nats.go
// hands every subscription's messages, in the order they came, to one
// channel (b.in), which drops what does not fit; counted in messages, that
// channel had to be small enough for messages of the largest size (256 of
// them with 1 MiB packets), so a burst of small ones overflowed it: eight
// QoS 1 publishers with 64 messages in flight each had most of theirs
// refused. pump moves each message at once from the channel to this queue,
// which is bounded in bytes.
type inbox struct {
	mu    sync.Mutex
	q     []queued
	head  int
	bytes int
	limit int
	ready chan struct{} // a message was queued
}

type queued struct {
	m    *nats.Msg
	size int
}

func newInbox(limit int) *inbox { return &inbox{limit: limit, ready: make(chan struct{}, 1)} }

// sizeOf is what m counts against the inbox's bound.
func sizeOf(m *nats.Msg) int {
	n := inboxOverhead + len(m.Subject) + len(m.Reply) + len(m.Data)
	for k, vs := range m.Header {
		n += len(k)
		for _, v := range vs {
			n += len(v)
		}
	}
	return n
}

// push queues m; unless always, only within the bound (false: dropped).
func (q *inbox) push(m *nats.Msg, always bool) bool {
	size := sizeOf(m)
	q.mu.Lock()
	if !always && q.bytes+size > q.limit {
		q.mu.Unlock()
		return false
	}
	q.q = append(q.q, queued{m, size})
	q.bytes += size
	q.mu.Unlock()
	select {
	case q.ready <- struct{}{}:
	default:
	}
	return true
}

// pop returns the oldest message, waiting for one until stop closes.
func (q *inbox) pop(stop <-chan struct{}) (*nats.Msg, bool) {
	for {
		if m, ok := q.tryPop(); ok {
			return m, true
		}
		select {
		case <-q.ready:
		case <-stop:
			return nil, false
		}
	}
}

// tryPop returns the oldest message, if any.
func (q *inbox) tryPop() (*nats.Msg, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.head == len(q.q) {
		return nil, false
	}
	e := q.q[q.head]
	q.q[q.head] = queued{}
	q.head++
	q.bytes -= e.size
	switch {
	case q.head == len(q.q):
		q.q, q.head = q.q[:0], 0
	case q.head >= 1024 && q.head*2 >= len(q.q):
		n := copy(q.q, q.q[q.head:])
		clear(q.q[n:])
		q.q, q.head = q.q[:n], 0
	}
	return e.m, true
}

// setLimit changes the bound; for tests.
func (q *inbox) setLimit(limit int) {
	q.mu.Lock()
	q.limit = limit
	q.mu.Unlock()
}

// pump moves messages from nats.go's channel to the inbox as they come, in
// their order. A message over the bound is dropped and counted; a QoS 1/2
// one is refused to the pod that sent it at once (it refuses its publisher)
// rather than left to its AckTimeout. The broker's own messages (markers,
// copies of retained messages) are never dropped.
func (b *bridge) pump() {
	for {
		select {
		case <-b.closed:
			return
		case m := <-b.in:
			if b.inq.push(m, m.Sub == nil) {
				continue
			}
			b.n.Counters.Dropped.Add(1)
			b.n.droppedInbound()
			if m.Reply != "" {
				_ = m.Respond([]byte("-"))
			}
		}
	}
}

// deliver is the pod's one goroutine that hands messages from other pods
// to mochi, in the order they arrived (order per publisher and topic).
// Its answers to QoS 1/2 messages go out once nothing more is waiting, or
// maxAnswers of them are due, and before it waits for anything.
func (b *bridge) deliver() {
	for {
		m, ok := b.inq.tryPop()
		if !ok {
			b.flushAnswers()
			if m, ok = b.inq.pop(b.closed); !ok {
				return
			}
		}
		if ch, ok := b.markers.LoadAndDelete(m); ok {
			close(ch.(chan struct{}))
			continue
		}
		if !b.holdMu.TryRLock() {
			b.flushAnswers()
			b.holdMu.RLock()
		}
		b.inject(m)
		b.holdMu.RUnlock()
	}
}

// inject hands one message to mochi and, for a QoS 1/2 one, answers the
// publishing pod: "+" once mochi queued it for every local subscriber.
func (b *bridge) inject(m *nats.Msg) {
	ok := b.injectOne(m)
	if m.Reply != "" {
		b.answer(m.Reply, ok)
	}
}

// maxAnswers bounds the answers deliver holds before sending them.
const maxAnswers = 128

// answer queues the answer to a message whose reply subject is reply,
// _a.<pod>.<id>.<target>: answers to one pod for one target travel
// together on _a.<pod>.b.<target>, nine bytes each ('+' or '-', then the
// ID, big-endian). One NATS message per answer cost the two pods as much
// as the message itself. Only the delivering goroutine calls it.
func (b *bridge) answer(reply string, ok bool) {
	flag := byte('+')
	if !ok {
		flag = '-'
	}
	rest, isOurs := strings.CutPrefix(reply, "_a.")
	pod, rest, _ := strings.Cut(rest, ".")
	idStr, target, _ := strings.Cut(rest, ".")
	id, err := strconv.ParseUint(idStr, 10, 64)
	if !isOurs || err != nil || target == "" {
		if nc := b.n.conn(); nc != nil { // not a forward's: answered alone
			_ = nc.Publish(reply, []byte{flag})
		}
		return
	}
	subj := "_a." + pod + ".b." + target
	b.answers[subj] = binary.BigEndian.AppendUint64(append(b.answers[subj], flag), id)
	if b.answerCount++; b.answerCount >= maxAnswers {
		b.flushAnswers()
	}
}

// flushAnswers sends the answers answer queued.
func (b *bridge) flushAnswers() {
	if b.answerCount == 0 {
		return
	}
	nc := b.n.conn()
	for subj, p := range b.answers {
		if nc != nil {
			_ = nc.Publish(subj, p)
		}
		delete(b.answers, subj)
	}
	b.answerCount = 0
}

func (b *bridge) injectOne(m *nats.Msg) bool {
	var subj string
	var group *[2]string
	storeOnly := false
	if rest, ok := strings.CutPrefix(m.Subject, retainedSubject(b.n.nodeTok)); ok {
		subj, storeOnly = rest, true
	} else if rest, ok := strings.CutPrefix(m.Subject, "s."); ok {
		subj = rest
		b.mu.Lock()
		g, known := b.groups[m.Sub.Queue]
		b.mu.Unlock()
		if !known {
			return false
		}
		group = &g
	} else if rest, ok := strings.CutPrefix(m.Subject, "m."+b.n.nodeTok+"."); ok {
		subj = rest
	} else {
		return false
	}
	topic, err := SubjectTopic(subj)
	if err != nil {
		b.n.log.Warn("cluster: dropped a message with a subject this broker did not encode")
		return false
	}
	if group != nil && !b.hasMember(topic, *group) {
		// The member left since: mochi would hand the message to the pod's
		// plain subscribers instead, which have their own copy.
		return false
	}
	pk := packetOf(topic, m)
	if storeOnly && !pk.FixedHeader.Retain {
		return false
	}
	if pk.FixedHeader.Retain {
		// Decided and stored under storing, as a publisher's here.
		b.n.retained.storing.Lock()
		defer b.n.retained.storing.Unlock()
		var keep bool
		if pk, keep = b.injectRetained(pk, stampOf(m.Header), storeOnly); !keep {
			return true // a later retained message is here: nothing to do
		}
	}
	b.delivering.Store(group)
	defer b.delivering.Store(nil)
	if storeOnly {
		b.storing.Store(true)
		defer b.storing.Store(false)
	}
	if err := b.n.mq.InjectPacket(b.client, pk); err != nil {
		b.n.log.Warn("cluster: could not deliver a message from another pod", "error", err.Error())
		return false
	}
	b.n.Counters.Received.Add(1)
	return true
}

func (b *bridge) hasMember(topic string, g [2]string) bool {
	for key, members := range b.n.mq.Topics.Subscribers(topic).Shared {
		if grp, f, _ := splitShared(key); grp == g[0] && f == g[1] && len(members) > 0 {
			return true
		}
	}
	return false
}

// drained returns once the delivering goroutine handled every message
// queued before the call (false if the node stopped first).
func (b *bridge) drained() bool {
	m, ch := &nats.Msg{}, make(chan struct{})
	b.markers.Store(m, ch)
	select {
	case b.in <- m:
	case <-b.n.stop:
		b.markers.Delete(m)
		return false
	}
	select {
	case <-ch:
		return true
	case <-b.n.stop:
		return false
	}
}
