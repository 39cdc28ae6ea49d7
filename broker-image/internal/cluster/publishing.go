package cluster

import (
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// Publishes under way, and the barrier of a session move.
//
// A message a client publishes here is sent to the other pods whose
// interest this pod knows (send), then mochi hands it to this pod's
// subscribers, after OnPublish (and after mochi's PUBACK). A move's
// barriers (move.go) proved only that every other pod knows the new pod's
// interest and that what the pods sent before is here; a publish that had
// chosen its pods before the new pod's interest was known, and was not
// through yet, lost an acknowledged message:
//
//   - on the pod giving the session away, it reached mochi's delivery
//     after the release had sent the rest of the session and deleted it,
//     so it went into the deleted session (or found no subscriber);
//   - on a third pod, it was sent to the old pod after that pod's barrier
//     ping had been answered, so it arrived after the drain, and was taken
//     by a session no longer subscribed.
//
// So a send chooses its pods and sends under sending (read), and a ping is
// answered once the sends under way are out (write); and released waits,
// before it lets the session go, for the local delivery of every publish
// that began here before (localPubs).

// sendsOut returns once the sends under way are out.
func (n *Node) sendsOut() {
	n.sending.Lock()
	defer n.sending.Unlock()
}

// localPubs counts, per publishing client, the publishes between the
// bridge's OnPublish and the end of mochi's delivery here (OnPublished; or
// OnDisconnect, when writing the acknowledgement failed and mochi stopped
// there).
type localPubs struct {
	mu   sync.Mutex
	busy map[*mqtt.Client]*localPub
}

type localPub struct {
	n       int
	waiters []chan struct{}
}

func (l *localPubs) begin(cl *mqtt.Client) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.busy == nil {
		l.busy = map[*mqtt.Client]*localPub{}
	}
	p := l.busy[cl]
	if p == nil {
		p = &localPub{}
		l.busy[cl] = p
	}
	p.n++
}

// end ends one of cl's publishes; all, every one (its connection ended).
func (l *localPubs) end(cl *mqtt.Client, all bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	p := l.busy[cl]
	if p == nil {
		return
	}
	if p.n--; all || p.n <= 0 {
		delete(l.busy, cl)
		for _, ch := range p.waiters {
			close(ch)
		}
	}
}

// wait waits until every publish that began before the call was delivered
// here; false if one was not within timeout.
func (l *localPubs) wait(timeout time.Duration) bool {
	l.mu.Lock()
	var chs []chan struct{}
	for _, p := range l.busy {
		ch := make(chan struct{})
		p.waiters = append(p.waiters, ch)
		chs = append(chs, ch)
	}
	l.mu.Unlock()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for _, ch := range chs {
		select {
		case <-ch:
		case <-deadline.C:
			return false
		}
	}
	return true
}

// OnPublished: mochi delivered a client's message here.
func (b *bridge) OnPublished(cl *mqtt.Client, _ packets.Packet) {
	if !localOnly(cl) {
		b.local.end(cl, false)
	}
}
