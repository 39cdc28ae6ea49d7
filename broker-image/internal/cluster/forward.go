package cluster

import (
	"encoding/base64"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/nats-io/nats.go"
)

// forward sends pk to every other pod with matching interest (a retained
// message to every other pod: retained.go); for QoS 1/2 with wait, it waits
// until each took it.
//
// A retained message is stamped (retained.go); st receives the stamp.
func (n *Node) forward(pk packets.Packet, wait bool, st *stamp) error {
	f, err := n.send(pk, wait, st)
	if f == nil {
		return err
	}
	return f.wait()
}

// sent is a QoS 1/2 message sent to other pods whose answers are awaited.
// One goroutine at a time waits for it.
type sent struct {
	n   *Node
	id  uint64
	w   *waiter
	at  time.Time
	got bool // the answer is in res
	res error
}

// wait returns once every pod answered, one refused, or AckTimeout after
// the message was sent.
func (f *sent) wait() error {
	if err, ok := f.poll(); ok {
		return err
	}
	t := time.NewTimer(AckTimeout - time.Since(f.at))
	defer t.Stop()
	select {
	case err := <-f.w.done:
		return f.settle(err)
	case <-t.C:
		return f.settle(errAckTimeout)
	}
}

// poll is wait without waiting: ok is false while the answers are awaited.
func (f *sent) poll() (err error, ok bool) {
	if f.got {
		return f.res, true
	}
	select {
	case err := <-f.w.done:
		return f.settle(err), true
	default:
	}
	if time.Since(f.at) >= AckTimeout {
		return f.settle(errAckTimeout), true
	}
	return nil, false
}

func (f *sent) settle(err error) error {
	f.n.acks.remove(f.id)
	f.got, f.res = true, err
	return err
}

// send is forward without the wait: for a QoS 1/2 message with wait that
// went to other pods it returns what to wait for.
func (n *Node) send(pk packets.Packet, wait bool, st *stamp) (*sent, error) {
	nc := n.conn()
	if wait && pk.FixedHeader.Qos > 0 {
		n.learnNewRoutes()
	}
	subj := TopicSubject(pk.TopicName)
	acc := n.srv.GlobalAccount()
	// From choosing the pods until the message is sent to them: a barrier
	// ping is answered after (publishing.go).
	n.sending.RLock()
	defer n.sending.RUnlock()
	var targets []string
	if k := n.known.Load(); k != nil {
		for _, tok := range *k {
			if acc.Interest("m."+tok+"."+subj) > 0 {
				targets = append(targets, tok)
			}
		}
	}
	shared := acc.Interest("s."+subj) > 0
	var stores []string // pods that only store a retained message (retained.go)
	if pk.FixedHeader.Retain {
		*st = n.stampLocal(pk.TopicName, len(pk.Payload) == 0)
		stores = n.storeTargets(targets)
	}
	if pk.FixedHeader.Qos > 0 {
		n.noticeLost()
	}
	if n.outboxes.count.Load() > 0 && pk.FixedHeader.Qos > 0 {
		// A pod that is unreachable, or back and still being sent what was
		// held for it, gets this message after those (partition.go).
		if hdr, ok := headersOf(pk); ok {
			if pk.FixedHeader.Retain {
				hdr.Set(hStamp, st.header())
			}
			if held := n.hold(subj, hdr, &pk); len(held) > 0 {
				targets = slices.DeleteFunc(targets, func(t string) bool { return held[t] })
			}
		}
	}
	if len(targets) == 0 && len(stores) == 0 && !shared {
		return nil, nil
	}
	if nc == nil {
		return nil, errPeerGone
	}
	var hdr nats.Header // none for a plain message (packetOf)
	if !plain(pk) || (pk.FixedHeader.Qos > 0 && !wait) {
		var ok bool
		if hdr, ok = headersOf(pk); !ok {
			return nil, nil // expired before it left
		}
	}
	if pk.FixedHeader.Retain {
		hdr.Set(hStamp, st.header())
	}
	if pk.FixedHeader.Qos == 0 || !wait {
		for _, tok := range targets {
			n.publish(nc, &nats.Msg{Subject: "m." + tok + "." + subj, Header: hdr, Data: pk.Payload})
		}
		for _, tok := range stores {
			n.publish(nc, &nats.Msg{Subject: retainedSubject(tok) + subj, Header: hdr, Data: pk.Payload})
		}
		if shared {
			n.publish(nc, &nats.Msg{Subject: "s." + subj, Header: hdr, Data: pk.Payload})
		}
		return nil, nil
	}
	id, w := n.acks.add(append(targets, stores...), shared)
	f := &sent{n: n, id: id, w: w, at: time.Now()}
	reply := "_a." + n.nodeTok + "." + strconv.FormatUint(id, 10) + "."
	var msgs []*nats.Msg
	for _, tok := range targets {
		msgs = append(msgs, &nats.Msg{Subject: "m." + tok + "." + subj, Reply: reply + "n." + tok, Header: hdr, Data: pk.Payload})
	}
	for _, tok := range stores {
		msgs = append(msgs, &nats.Msg{Subject: retainedSubject(tok) + subj, Reply: reply + "n." + tok, Header: hdr, Data: pk.Payload})
	}
	if shared {
		msgs = append(msgs, &nats.Msg{Subject: "s." + subj, Reply: reply + "s", Header: hdr, Data: pk.Payload})
	}
	for _, m := range msgs {
		if err := n.publish(nc, m); err != nil {
			n.acks.remove(id)
			return nil, err
		}
	}
	return f, nil
}

func (n *Node) publish(nc *nats.Conn, m *nats.Msg) error {
	if err := nc.PublishMsg(m); err != nil {
		return fmt.Errorf("cluster: forwarding: %w", err)
	}
	n.Counters.Forwarded.Add(1)
	return nil
}

// Headers carrying a message's MQTT attributes (pitfall 10). Values that
// may hold any byte are base64url.
const (
	hQoS, hRetain, hFormat, hExpiry  = "Q", "R", "F", "E"
	hContentType, hResponse, hCorrel = "C", "T", "D"
	hUser                            = "U"
)

var b64 = base64.RawURLEncoding

// plain reports whether pk is a QoS 0 or 1 message with nothing headersOf
// would carry but its QoS. It is sent without headers, which cost the
// sending and the receiving pod a map and its encoding per message (a
// third of the CPU a QoS 0 message across pods cost): one with a reply
// subject (an answer awaited) is QoS 1, one without QoS 0 (packetOf). A
// QoS 1 message sent without awaiting answers keeps its headers.
func plain(pk packets.Packet) bool {
	p := &pk.Properties
	return pk.FixedHeader.Qos <= 1 && !pk.FixedHeader.Retain && pk.Expiry == 0 && p.MessageExpiryInterval == 0 &&
		!p.PayloadFormatFlag && p.ContentType == "" && p.ResponseTopic == "" && len(p.CorrelationData) == 0 && len(p.User) == 0
}

func headersOf(pk packets.Packet) (nats.Header, bool) {
	h := nats.Header{hQoS: {strconv.Itoa(int(pk.FixedHeader.Qos))}}
	if pk.FixedHeader.Retain {
		h[hRetain] = []string{"1"}
	}
	p := &pk.Properties
	if p.PayloadFormatFlag {
		h[hFormat] = []string{strconv.Itoa(int(p.PayloadFormat))}
	}
	if pk.Expiry > 0 || p.MessageExpiryInterval > 0 {
		left := int64(p.MessageExpiryInterval)
		if pk.Expiry > 0 {
			left = pk.Expiry - time.Now().Unix()
		}
		if left <= 0 {
			return nil, false
		}
		h[hExpiry] = []string{strconv.FormatInt(left, 10)}
	}
	if p.ContentType != "" {
		h[hContentType] = []string{b64.EncodeToString([]byte(p.ContentType))}
	}
	if p.ResponseTopic != "" {
		h[hResponse] = []string{b64.EncodeToString([]byte(p.ResponseTopic))}
	}
	if len(p.CorrelationData) > 0 {
		h[hCorrel] = []string{b64.EncodeToString(p.CorrelationData)}
	}
	for _, u := range p.User {
		h[hUser] = append(h[hUser], b64.EncodeToString([]byte(u.Key))+":"+b64.EncodeToString([]byte(u.Val)))
	}
	return h, true
}

func decode64(s string) string {
	b, _ := b64.DecodeString(s)
	return string(b)
}

// packetOf rebuilds the PUBLISH a pod forwarded (one without headers:
// plain).
func packetOf(topic string, m *nats.Msg) packets.Packet {
	h := m.Header
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish}, TopicName: topic, Payload: m.Data}
	if h == nil {
		if m.Reply != "" {
			pk.FixedHeader.Qos, pk.PacketID = 1, 1
		}
		return pk
	}
	if q, err := strconv.Atoi(h.Get(hQoS)); err == nil && q >= 0 && q <= 2 {
		pk.FixedHeader.Qos = byte(q)
		pk.PacketID = uint16(q) // as mochi's Server.Publish: inline clients need one for QoS > 0
	}
	pk.FixedHeader.Retain = h.Get(hRetain) == "1"
	p := &pk.Properties
	if f, err := strconv.Atoi(h.Get(hFormat)); err == nil {
		p.PayloadFormat, p.PayloadFormatFlag = byte(f), true
	}
	if e, err := strconv.ParseUint(h.Get(hExpiry), 10, 32); err == nil {
		p.MessageExpiryInterval = uint32(e)
	}
	if v := h.Get(hContentType); v != "" {
		p.ContentType = decode64(v)
	}
	if v := h.Get(hResponse); v != "" {
		p.ResponseTopic = decode64(v)
	}
	if v := h.Get(hCorrel); v != "" {
		p.CorrelationData = []byte(decode64(v))
	}
	for _, kv := range h[hUser] {
		k, v, _ := strings.Cut(kv, ":")
		p.User = append(p.User, packets.UserProperty{Key: decode64(k), Val: decode64(v)})
	}
	return pk
}

// learnNewRoutes learns the names of pods whose routes came up since the
// last look, before a QoS 1/2 forward picks its targets: a pod that just
// joined may already have interest (sessions it restored at start) before
// the watch loop saw it. Counting routes is cheap; listing them happens
// only when the count changed.
func (n *Node) learnNewRoutes() {
	r := int64(n.srv.NumRoutes())
	if r == n.routeCount.Load() {
		return
	}
	for _, name := range n.routes() {
		n.learn(TopicSubject(name))
	}
	n.routeCount.Store(r)
}
