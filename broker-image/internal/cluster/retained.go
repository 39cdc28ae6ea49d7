package cluster

import (
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/nats-io/nats.go"
)

// Retained messages are cluster-wide: every pod holds every retained
// message in its own mochi store (and its durable store, in durable mode),
// so a SUBSCRIBE on any pod is answered locally, at once.
//
//   - A retained PUBLISH goes to each pod once: to the pods with matching
//     subscribers as usual (m.<node>.<topic>, delivered and stored), to every
//     other pod as r.<node>.<topic> (stored only). A QoS 1/2 publisher gets
//     its PUBACK/PUBREC once every pod stored it; an empty retained PUBLISH
//     clears it the same way.
//   - Each retained message carries a stamp of the login clock (takeover.go):
//     of two retained PUBLISHes to one topic on two pods at once, the later
//     stamp wins on every pod, whatever order they arrive in (header S).
//   - A pod that meets another (it starts, a partition heals, its bridge
//     reconnected) asks it for all of its retained messages (_r.<node>) and
//     keeps each one whose stamp is later than its own; a starting pod is
//     not Ready before one such copy finished (or the join grace passed).
//
// The stamps live in a map beside mochi's store: one entry per retained
// topic, and a bounded number of tombstones of cleared topics so that a
// late copy of an older message does not bring a cleared one back.

const (
	hStamp = "S" // <unix nanoseconds>.<node>
	// hTopic carries the topic of a retained message in a copy (its subject
	// is the requester's inbox); hEnd marks the copy's last message, with
	// the count sent.
	hTopic, hEnd = "P", "X"
	// hSettled on the end marker: the sender had itself copied from the
	// cluster (or started it), so its retained messages are the cluster's.
	hSettled = "L"
	// maxTombstoneBytes bounds the topics of cleared retained messages kept
	// for their stamp; past it a clear leaves no tombstone (a concurrent
	// older set arriving later could then bring the message back).
	maxTombstoneBytes = 8 << 20
	tombstoneFor      = 5 * time.Minute
)

func retainedSubject(tok string) string     { return "r." + tok + "." }
func retainedCopySubject(tok string) string { return "_r." + tok }

type retainedEntry struct {
	stamp   stamp
	cleared time.Time // zero while the message exists
}

type retainedStamps struct {
	// storing is held from the decision to store a retained message to
	// mochi's storing it, on the publisher's goroutine (released by
	// OnRetainMessage) as on the delivering one: without it, a later
	// message from another pod stored between a publisher's check and
	// mochi's store was overwritten by the earlier one, and pods disagreed
	// for good (TestClusterConcurrentRetainedSetsAgree, 1 run in 15).
	storing sync.Mutex
	// storingFor are the publishers whose OnRetainMessage releases storing.
	storingFor sync.Map
	mu         sync.Mutex
	byTopic    map[string]retainedEntry
	tombBytes  int
	loaded     atomic.Bool // a copy from another pod finished (or none was needed)
	copyingMu  sync.Mutex
	// copying: pods a copy is being taken from; pulled: pods copied from
	// since they became reachable; failed: when the last copy from a pod
	// failed.
	copying, pulled map[string]bool
	failed          map[string]time.Time
	copies          atomic.Int64
}

func (st stamp) header() string { return strconv.FormatInt(st.T, 10) + "." + st.Node }

func stampOf(h nats.Header) stamp {
	v := h.Get(hStamp)
	t, node, _ := strings.Cut(v, ".")
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil {
		return stamp{}
	}
	return stamp{T: n, Node: node}
}

// stampLocal stamps a retained PUBLISH of a client of this pod: later than
// every stamp seen, so it wins here.
func (n *Node) stampLocal(topic string, clear bool) stamp {
	s := &n.sess
	s.mu.Lock()
	st := s.next(n.node)
	s.mu.Unlock()
	n.retained.set(topic, st, clear)
	return st
}

// keepRemote reports whether a retained message stamped st from another
// pod replaces what this pod holds for topic (held: mochi has one), and
// records its stamp if so.
func (n *Node) keepRemote(topic string, st stamp, clear, held bool) bool {
	s := &n.sess
	s.mu.Lock()
	if st.T > s.last {
		s.last = st.T
	}
	s.mu.Unlock()
	r := &n.retained
	r.mu.Lock()
	cur, known := r.byTopic[topic]
	r.mu.Unlock()
	if (known || held) && !st.after(cur.stamp) {
		return false
	}
	r.set(topic, st, clear)
	return true
}

func (r *retainedStamps) set(topic string, st stamp, clear bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.byTopic == nil {
		r.byTopic = map[string]retainedEntry{}
	}
	old, had := r.byTopic[topic]
	if had && !old.cleared.IsZero() {
		r.tombBytes -= len(topic)
	}
	e := retainedEntry{stamp: st}
	if clear {
		if r.tombBytes+len(topic) > maxTombstoneBytes {
			delete(r.byTopic, topic)
			return
		}
		e.cleared = time.Now()
		r.tombBytes += len(topic)
	}
	r.byTopic[topic] = e
}

// sweep forgets tombstones older than tombstoneFor, and the stamps of
// topics mochi no longer holds (expired, or not kept for the limits).
func (r *retainedStamps) sweep(held func(string) bool) {
	cutoff := time.Now().Add(-tombstoneFor)
	r.mu.Lock()
	defer r.mu.Unlock()
	for topic, e := range r.byTopic {
		switch {
		case !e.cleared.IsZero() && e.cleared.Before(cutoff):
			r.tombBytes -= len(topic)
			delete(r.byTopic, topic)
		case e.cleared.IsZero() && !held(topic):
			delete(r.byTopic, topic)
		}
	}
}

// current reports whether st is still the latest stamp of topic.
func (r *retainedStamps) current(topic string, st stamp) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.byTopic[topic]
	return !ok || !e.stamp.after(st)
}

func (r *retainedStamps) stampFor(topic string) stamp {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.byTopic[topic].stamp
}

// held reports whether mochi holds a retained message on topic.
func (n *Node) held(topic string) bool {
	_, ok := n.mq.Topics.Retained.Get(topic)
	return ok
}

// storeTargets are the pods a retained message goes to as r.<node>: the
// reachable ones without matching subscribers.
func (n *Node) storeTargets(targets []string) []string {
	k := n.known.Load()
	if k == nil {
		return nil
	}
	var out []string
outer:
	for _, tok := range *k {
		for _, t := range targets {
			if t == tok {
				continue outer
			}
		}
		if n.alive(tok) {
			out = append(out, tok)
		}
	}
	return out
}

// copyRetained answers another pod's request for every retained message
// (_r.<self>): one NATS message each to the requester's inbox, then an end
// marker with the count.
func (n *Node) copyRetained(m *nats.Msg) {
	if m.Reply == "" {
		return
	}
	nc := n.conn()
	if nc == nil {
		return
	}
	go func() {
		sent := 0
		for topic, pk := range n.mq.Topics.Retained.GetAll() {
			if sysTopic(topic) {
				continue
			}
			hdr, ok := headersOf(pk)
			if !ok {
				continue // expired
			}
			hdr.Set(hRetain, "1")
			hdr.Set(hTopic, b64.EncodeToString([]byte(topic)))
			hdr.Set(hStamp, n.retained.stampFor(topic).header())
			if err := nc.PublishMsg(&nats.Msg{Subject: m.Reply, Header: hdr, Data: pk.Payload}); err != nil {
				return
			}
			sent++
		}
		end := nats.Header{hEnd: {strconv.Itoa(sent)}}
		if n.retained.loaded.Load() {
			end.Set(hSettled, "1")
		}
		_ = nc.PublishMsg(&nats.Msg{Subject: m.Reply, Header: end})
	}()
}

// pullRetained takes copies of the retained messages of every reachable
// pod not copied from since it became reachable, in the background; each
// message joins the inbound queue as a store-only one, so it is ordered
// with the live messages and judged by its stamp. A copy that fails is
// tried again a second later.
func (n *Node) pullRetained(nc *nats.Conn, routes []string) {
	r := &n.retained
	r.copyingMu.Lock()
	defer r.copyingMu.Unlock()
	if r.copying == nil {
		r.copying, r.pulled, r.failed = map[string]bool{}, map[string]bool{}, map[string]time.Time{}
	}
	for tok := range r.pulled {
		if !n.alive(tok) {
			delete(r.pulled, tok)
		}
	}
	for tok := range r.failed {
		if !n.alive(tok) {
			delete(r.failed, tok)
		}
	}
	for _, name := range routes {
		tok := TopicSubject(name)
		if r.pulled[tok] || !n.alive(tok) {
			continue
		}
		if r.copying[tok] || time.Since(r.failed[tok]) < time.Second {
			continue
		}
		r.copying[tok] = true
		go func() {
			ok := n.copyFrom(nc, tok)
			r.copyingMu.Lock()
			defer r.copyingMu.Unlock()
			delete(r.copying, tok)
			if ok {
				delete(r.failed, tok)
				r.pulled[tok] = true
				r.loaded.Store(true)
				return
			}
			r.failed[tok] = time.Now()
		}()
	}
}

// copyFrom takes one copy of the pod tok's retained messages.
//
// Messages restored from a durable store at start carry no stamp (zero).
// Such a message in a copy is taken only by a pod that has not finished a
// copy yet and holds nothing on its topic (a whole broker restarting
// together merges its pods' stores). And a restarted pod whose first copy
// comes from a settled pod drops the restored messages that pod does not
// hold: they were cleared while it was away, and must not come back.
func (n *Node) copyFrom(nc *nats.Conn, tok string) bool {
	inbox := nats.NewInbox()
	type end struct {
		want    int
		settled bool
	}
	done := make(chan end, 1)
	received := 0
	topics := map[string]struct{}{}
	sub, err := nc.Subscribe(inbox, func(m *nats.Msg) {
		if e := m.Header.Get(hEnd); e != "" {
			want, _ := strconv.Atoi(e)
			done <- end{want, m.Header.Get(hSettled) == "1"}
			return
		}
		topic := decode64(m.Header.Get(hTopic))
		if topic == "" {
			return
		}
		received++
		topics[topic] = struct{}{}
		n.queueInbound(&nats.Msg{Subject: retainedSubject(n.nodeTok) + TopicSubject(topic), Header: m.Header, Data: m.Data})
	})
	if err != nil {
		return false
	}
	defer func() { _ = sub.Unsubscribe() }()
	// The copy is as large as the other pod's retained store, which its
	// limits bound; the callback waits for the inbound queue.
	_ = sub.SetPendingLimits(-1, -1)
	if err := nc.PublishRequest(retainedCopySubject(tok), inbox, nil); err != nil {
		return false
	}
	select {
	case e := <-done:
		if received != e.want {
			n.log.Warn("cluster: a copy of another pod's retained messages was incomplete; asking again", "pod", tok, "received", received, "sent", e.want)
			return false
		}
		if e.settled && !n.retained.loaded.Load() {
			n.dropRestoredNotIn(topics)
		}
		// Stored, not just queued, before the pod may call itself loaded
		// (Ready) and judge unstamped messages as a settled pod.
		if !n.bridge.drained() {
			return false
		}
		n.retained.copies.Add(1)
		return true
	case <-time.After(time.Minute):
		n.log.Warn("cluster: no complete copy of another pod's retained messages within a minute; asking again", "pod", tok)
	case <-n.stop:
	}
	return false
}

// queueInbound hands a message to the delivering goroutine (deliver.go).
func (n *Node) queueInbound(m *nats.Msg) {
	select {
	case n.bridge.in <- m:
	case <-n.stop:
	}
}

// restoredStamp is later than no stamp at all, earlier than every real one:
// it clears a message restored from the store without a stamp.
var restoredStamp = stamp{T: 1}

func (n *Node) dropRestoredNotIn(topics map[string]struct{}) {
	dropped := 0
	for topic := range n.mq.Topics.Retained.GetAll() {
		if _, in := topics[topic]; in || sysTopic(topic) || n.retained.stampFor(topic) != (stamp{}) {
			continue
		}
		n.queueInbound(&nats.Msg{Subject: retainedSubject(n.nodeTok) + TopicSubject(topic),
			Header: nats.Header{hQoS: {"0"}, hRetain: {"1"}, hStamp: {restoredStamp.header()}}})
		dropped++
	}
	if dropped > 0 {
		n.log.Info("cluster: dropped retained messages restored from the store that the cluster cleared meanwhile", "messages", dropped)
	}
}

// injectRetained judges a retained message from another pod by its stamp:
// kept (its stamp recorded), delivered but not stored over a later one, or
// (store only) dropped.
func (b *bridge) injectRetained(pk packets.Packet, st stamp, storeOnly bool) (packets.Packet, bool) {
	clear := len(pk.Payload) == 0
	held := b.n.held(pk.TopicName)
	if st == (stamp{}) && b.n.retained.loaded.Load() {
		held = true // restored elsewhere without a stamp: see copyFrom
	}
	if !b.n.keepRemote(pk.TopicName, st, clear, held) {
		if storeOnly {
			return pk, false // a later one is here already
		}
		pk.FixedHeader.Retain = false // delivered, not stored over the later one
	}
	return pk, true
}

// RetainedCopies counts the complete copies of other pods' retained
// messages this pod took.
func (n *Node) RetainedCopies() uint64 { return uint64(n.retained.copies.Load()) }
