package cluster

import (
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/nats-io/nats.go"
)

// A pod this one could reach and no longer can (a partition, a pod killed
// or restarting) leaves no trace of its subscriptions here: nats-server
// forgets a peer's interest with its route. Its subscribers would then
// silently miss every message published here meanwhile, each one
// acknowledged to its publisher. So while a known pod is unreachable, this
// pod holds a copy of every QoS 1/2 message published here, in order, for
// it (its outbox), and sends them when the pod is back, before anything
// newer; that pod hands each to its subscribers as usual (a message nobody
// there subscribes to goes nowhere).
//
// Bounded: all outboxes together hold at most HoldBytes (payload, topic and
// properties), each message at most HoldFor; past either the oldest are
// dropped, counted (mqtt_cluster_partition_dropped_total) and logged once
// per outbox. An outbox is also dropped when the pod leaves the configured
// peers (scaled in). Retained messages are not held: the pods copy each
// other's when they meet (retained.go). QoS 0 messages are not held.

var (
	// HoldBytes bounds the messages held for unreachable pods.
	HoldBytes int64 = 64 << 20
	// HoldFor bounds how long a message is held for an unreachable pod.
	HoldFor = 10 * time.Minute
)

type heldMsg struct {
	m    *nats.Msg
	at   time.Time
	size int64
}

type outbox struct {
	msgs      []heldMsg
	since     time.Time
	dropped   uint64
	replaying bool
	logged    bool // its drops were logged
}

type outboxes struct {
	mu    sync.Mutex
	byTok map[string]*outbox
	bytes int64
	count atomic.Int64 // outboxes open: the publish path looks here first
	seen  map[string]bool
	// reachable: the pods seen reachable at the watch loop's last look.
	reachable atomic.Pointer[[]string]
	// Counters.
	held, dropped, replayed atomic.Uint64
}

func heldSize(m *nats.Msg) int64 {
	size := int64(len(m.Subject) + len(m.Data))
	for k, vs := range m.Header {
		for _, v := range vs {
			size += int64(len(k) + len(v))
		}
	}
	return size + 64
}

// watchPeers opens an outbox for each known pod that stopped being
// reachable, and replays the outbox of each that is back.
func (n *Node) watchPeers(nc *nats.Conn) {
	o := &n.outboxes
	k := n.known.Load()
	if k == nil {
		return
	}
	for _, tok := range *k {
		alive := n.alive(tok)
		o.mu.Lock()
		if o.seen == nil {
			o.seen, o.byTok = map[string]bool{}, map[string]*outbox{}
		}
		wasAlive := o.seen[tok]
		o.seen[tok] = alive
		if wasAlive && !alive {
			n.openOutbox(tok)
		}
		ob := o.byTok[tok]
		startReplay := alive && ob != nil && !ob.replaying
		if startReplay {
			ob.replaying = true
		}
		o.mu.Unlock()
		if startReplay {
			go n.replay(nc, tok)
		}
	}
	o.mu.Lock()
	reachable := make([]string, 0, len(o.seen))
	for tok, alive := range o.seen {
		if alive {
			reachable = append(reachable, tok)
		}
	}
	o.mu.Unlock()
	o.reachable.Store(&reachable)
	n.expireHeld()
}

// openOutbox starts holding messages for the pod tok. o.mu held.
func (n *Node) openOutbox(tok string) {
	o := &n.outboxes
	if o.byTok[tok] != nil {
		return
	}
	o.byTok[tok] = &outbox{since: time.Now()}
	o.count.Add(1)
	n.log.Warn("cluster: lost a pod; holding QoS 1/2 messages for its subscribers until it is back", "pod", tok,
		"holdBytes", HoldBytes, "holdFor", HoldFor.String())
}

// noticeLost opens the outbox of a pod that was reachable at the watch
// loop's last look and is not now, before a QoS 1/2 message is forwarded:
// the loop looks every 50 ms, and a message published in between would
// reach neither that pod nor its outbox.
func (n *Node) noticeLost() {
	o := &n.outboxes
	r := o.reachable.Load()
	if r == nil {
		return
	}
	for _, tok := range *r {
		if n.alive(tok) {
			continue
		}
		o.mu.Lock()
		if o.seen[tok] {
			o.seen[tok] = false
			n.openOutbox(tok)
		}
		o.mu.Unlock()
	}
}

// hold appends a message for each unreachable pod with an outbox; it
// returns the pods it held it for (the publish path sends to them no
// more, so the replay keeps the order).
func (n *Node) hold(subj string, hdr nats.Header, pk *packets.Packet) map[string]bool {
	o := &n.outboxes
	if o.count.Load() == 0 || pk.FixedHeader.Qos == 0 {
		return nil
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	held := make(map[string]bool, len(o.byTok))
	for tok, ob := range o.byTok {
		m := &nats.Msg{Subject: "m." + tok + "." + subj, Header: hdr, Data: pk.Payload}
		h := heldMsg{m: m, at: time.Now(), size: heldSize(m)}
		ob.msgs = append(ob.msgs, h)
		o.bytes += h.size
		o.held.Add(1)
		held[tok] = true
	}
	for o.bytes > HoldBytes && o.dropOldest() {
	}
	return held
}

// dropOldest drops the oldest held message of all outboxes. o.mu held.
func (o *outboxes) dropOldest() bool {
	var oldest *outbox
	for _, ob := range o.byTok {
		if len(ob.msgs) > 0 && (oldest == nil || ob.msgs[0].at.Before(oldest.msgs[0].at)) {
			oldest = ob
		}
	}
	if oldest == nil {
		return false
	}
	o.bytes -= oldest.msgs[0].size
	oldest.msgs[0] = heldMsg{}
	oldest.msgs = oldest.msgs[1:]
	oldest.dropped++
	o.dropped.Add(1)
	return true
}

// expireHeld drops messages held longer than HoldFor, and logs an outbox's
// first drops.
func (n *Node) expireHeld() {
	o := &n.outboxes
	if o.count.Load() == 0 {
		return
	}
	cutoff := time.Now().Add(-HoldFor)
	o.mu.Lock()
	defer o.mu.Unlock()
	for tok, ob := range o.byTok {
		for len(ob.msgs) > 0 && ob.msgs[0].at.Before(cutoff) {
			o.bytes -= ob.msgs[0].size
			ob.msgs[0] = heldMsg{}
			ob.msgs = ob.msgs[1:]
			ob.dropped++
			o.dropped.Add(1)
		}
		if ob.dropped > 0 && !ob.logged {
			ob.logged = true
			n.log.Warn("cluster: dropped messages held for an unreachable pod (past the hold limits); its subscribers miss them",
				"pod", tok, "dropped", ob.dropped, "holdBytes", HoldBytes, "holdFor", HoldFor.String())
		}
	}
}

// replay sends the outbox of the pod tok, which is back, in order and in
// batches, each after the pod answered a ping (so its inbound queue takes
// them), then closes the outbox.
func (n *Node) replay(nc *nats.Conn, tok string) {
	o := &n.outboxes
	sent := 0
	for {
		o.mu.Lock()
		ob := o.byTok[tok]
		if ob == nil {
			o.mu.Unlock()
			return
		}
		if len(ob.msgs) == 0 {
			delete(o.byTok, tok)
			o.count.Add(-1)
			o.mu.Unlock()
			if sent > 0 || ob.dropped > 0 {
				n.log.Info("cluster: a lost pod is back; sent it the messages held for it", "pod", tok, "sent", sent, "dropped", ob.dropped)
			}
			return
		}
		batch := ob.msgs[:min(len(ob.msgs), 128)]
		ob.msgs = ob.msgs[len(batch):]
		for _, h := range batch {
			o.bytes -= h.size
		}
		o.mu.Unlock()
		for _, h := range batch {
			if err := nc.PublishMsg(h.m); err != nil {
				break
			}
			sent++
			o.replayed.Add(1)
		}
		if _, err := n.request(nc, tok, pingSubject(tok), []byte(n.nodeTok)); err != nil {
			// Gone again: what is left stays held until it is back.
			o.mu.Lock()
			if ob := o.byTok[tok]; ob != nil {
				ob.replaying = false
			}
			o.mu.Unlock()
			return
		}
	}
}

// dropOutboxesOf drops the outboxes of pods no longer among peers (scaled
// in), where peers name pods (<pod>.<service>:port, as the operator's do).
func (n *Node) dropOutboxesOf(peers []string) {
	names := map[string]bool{}
	for _, p := range peers {
		host, _, _ := net.SplitHostPort(p)
		if net.ParseIP(host) != nil {
			return // addresses, not names: the hold limits apply
		}
		first, _, _ := strings.Cut(host, ".")
		names[TopicSubject(first)] = true
	}
	o := &n.outboxes
	o.mu.Lock()
	defer o.mu.Unlock()
	for tok, ob := range o.byTok {
		if names[tok] {
			continue
		}
		for _, h := range ob.msgs {
			o.bytes -= h.size
		}
		delete(o.byTok, tok)
		delete(o.seen, tok)
		o.count.Add(-1)
		n.log.Info("cluster: a lost pod left the cluster; dropped what was held for it", "pod", tok, "messages", len(ob.msgs))
	}
}

// PartitionCounters are the messages held for unreachable pods, replayed
// to pods that were back, and dropped past the hold limits.
func (n *Node) PartitionCounters() (held, replayed, dropped uint64) {
	o := &n.outboxes
	return o.held.Load(), o.replayed.Load(), o.dropped.Load()
}
