package cluster

import (
	"strings"

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

// deliver is the pod's one goroutine that hands messages from other pods
// to mochi, in the order they arrived (order per publisher and topic).
func (b *bridge) deliver() {
	for {
		select {
		case <-b.closed:
			return
		case m := <-b.in:
			if ch, ok := b.markers.LoadAndDelete(m); ok {
				close(ch.(chan struct{}))
				continue
			}
			b.holdMu.RLock()
			b.inject(m)
			b.holdMu.RUnlock()
		}
	}
}

// inject hands one message to mochi and, for a QoS 1/2 one, answers the
// publishing pod: "+" once mochi queued it for every local subscriber.
func (b *bridge) inject(m *nats.Msg) {
	ok := b.injectOne(m)
	if m.Reply != "" {
		answer := okAnswer
		if !ok {
			answer = []byte("-")
		}
		_ = m.Respond(answer)
	}
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
