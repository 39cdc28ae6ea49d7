package cluster

import (
	"errors"
	"sync"
)

// The acknowledged forward of a QoS 1/2 message (CLUSTERING.md measured
// the schemes): the publishing pod sends one copy to each pod whose bridge
// has matching interest (nats-server's own interest table, which follows
// route loss at once), each with a reply subject naming that pod, and holds
// the publisher's PUBACK/PUBREC until every one of them answered that it
// handed the message to its subscribers' sessions. A pod that stops being
// reachable fails its pending answers at once (the watch loop); AckTimeout
// is the backstop.

var (
	errPeerGone    = errors.New("a pod with subscribers left before taking the message")
	errPeerRefused = errors.New("a pod with subscribers could not take the message")
	errAckTimeout  = errors.New("a pod with subscribers did not confirm the message in time")
)

type waiter struct {
	need   map[string]bool // node tokens still to answer
	shared bool            // still waiting for a shared group's answer
	done   chan error      // one value
	ended  bool
}

type ackTable struct {
	mu   sync.Mutex
	next uint64
	w    map[uint64]*waiter
}

func newAckTable() *ackTable { return &ackTable{w: map[uint64]*waiter{}} }

func (t *ackTable) add(nodes []string, shared bool) (uint64, *waiter) {
	w := &waiter{need: make(map[string]bool, len(nodes)), shared: shared, done: make(chan error, 1)}
	for _, n := range nodes {
		w.need[n] = true
	}
	t.mu.Lock()
	t.next++
	id := t.next
	t.w[id] = w
	t.mu.Unlock()
	return id, w
}

func (t *ackTable) remove(id uint64) {
	t.mu.Lock()
	delete(t.w, id)
	t.mu.Unlock()
}

func (w *waiter) end(err error) {
	if !w.ended {
		w.ended = true
		w.done <- err
	}
}

// answer records one pod's (node != "") or a shared group's answer.
func (t *ackTable) answer(id uint64, node string, ok bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	w := t.w[id]
	if w == nil || w.ended {
		return
	}
	if !ok {
		w.end(errPeerRefused)
		return
	}
	if node == "" {
		w.shared = false
	} else {
		delete(w.need, node)
	}
	if len(w.need) == 0 && !w.shared {
		w.end(nil)
	}
}

// failGone fails every pending forward that waits for a pod no longer
// reachable.
func (t *ackTable) failGone(alive func(node string) bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.w) == 0 {
		return
	}
	checked := map[string]bool{}
	for _, w := range t.w {
		for n := range w.need {
			up, seen := checked[n]
			if !seen {
				up = alive(n)
				checked[n] = up
			}
			if !up {
				w.end(errPeerGone)
				break
			}
		}
	}
}

func (t *ackTable) failAll() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, w := range t.w {
		w.end(errPeerGone)
	}
}
