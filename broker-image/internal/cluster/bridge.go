package cluster

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/nats-io/nats.go"
)

// Subjects of the bridge. Every MQTT topic lives under a prefix, so none is
// ever in a NATS '$' namespace:
//
//	m.<node>.<topic>   a message for the pod <node>'s subscribers;
//	s.<topic>          a message for shared subscriptions, wherever their members are;
//	_p.<node>          the barrier ping (and liveness) of the pod <node>;
//	_k.<node>, _s.<node>  client ID takeovers and session exchanges (takeover.go);
//	_v.<node>          releases of sessions the pod <node> sent to another (move.go);
//	_h.<node>          requests to adopt a draining pod's session (handover.go);
//	_u.<node>          how many connections a user has on the pod <node> (usercount.go);
//	r.<node>.<topic>   a retained message for the pod <node> to store only;
//	_r.<node>          requests for a copy of the pod <node>'s retained messages (retained.go);
//	_a.<node>.<id>.n.<target> / .s   answers to a QoS 1/2 forward of the pod <node>;
//	_a.<node>.b.n.<target> / .s       many of them in one message (deliver.go).
const (
	podQueue = "p" // one queue group per pod: one copy per pod (pitfall 2)
)

func pingSubject(tok string) string { return "_p." + tok }

// bridgeClientID names the inline client that injects messages from other
// pods; a NUL byte keeps it apart from every MQTT client ID.
const bridgeClientID = "\x00mqtt-operator-cluster-bridge"

type interest struct {
	clients map[string]struct{}
	subs    []*nats.Subscription
	known   chan struct{} // closed once every pod has the interest (the barrier)
}

type bridge struct {
	mqtt.HookBase
	n      *Node
	client *mqtt.Client

	mu      sync.Mutex
	filters map[string]*interest // by mochi filter ($share/g/f included)
	groups  map[string][2]string // queue name -> group, filter
	nodeSub []*nats.Subscription
	stores  *nats.Subscription // retained messages to store, feeding in

	in      chan *nats.Msg // what nats.go hands over, moved to inq by pump
	inq     *inbox
	closed  chan struct{}
	holdMu  sync.RWMutex
	holding atomic.Bool
	// delivering is the shared group the delivering goroutine is injecting
	// a message for (nil: a message for the pod's subscribers); storing, a
	// retained message to store without delivering it. Only that goroutine
	// sets them; OnSelectSubscribers reads them for its packets.
	delivering atomic.Pointer[[2]string]
	storing    atomic.Bool
	markers    sync.Map // *nats.Msg -> chan struct{}: see drained
	// dropSeen is, per subscription feeding in, how many of its messages
	// nats.go had dropped (inbound queue full) when last counted. b.mu.
	dropSeen map[*nats.Subscription]int
	// held are the PUBACKs owed to publishers (pipeline.go), an *ackQueue
	// per *mqtt.Client.
	held sync.Map
	// answers are the delivering goroutine's answers not sent yet, by
	// subject (deliver.go), answerCount how many.
	answers     map[string][]byte
	answerCount int
	// local are the clients' publishes not yet delivered here
	// (publishing.go).
	local localPubs
}

func newBridge(n *Node) *bridge {
	return &bridge{n: n, client: n.mq.NewClient(nil, mqtt.LocalListener, bridgeClientID, true),
		filters: map[string]*interest{}, groups: map[string][2]string{}, dropSeen: map[*nats.Subscription]int{},
		in: make(chan *nats.Msg, handoverQueue), inq: newInbox(inboundBytes), answers: map[string][]byte{}, closed: make(chan struct{})}
}

func (b *bridge) ID() string { return "mqtt-operator-cluster" }

func (b *bridge) Provides(x byte) bool {
	switch x {
	case mqtt.OnSubscribed, mqtt.OnUnsubscribed, mqtt.OnPublish, mqtt.OnSelectSubscribers, mqtt.OnWillSent, mqtt.OnClientExpired, mqtt.OnDisconnect, mqtt.OnSessionEstablished,
		mqtt.OnRetainMessage, mqtt.OnPublished:
		return true
	}
	return false
}

func (b *bridge) close() { close(b.closed) }

func shareQueue(group, filter string) string {
	sum := sha256.Sum256([]byte(group + "\x00" + filter))
	return "g" + hex.EncodeToString(sum[:12])
}

// subscribe makes the NATS subscriptions of one mochi filter. b.mu held.
func (b *bridge) subscribe(nc *nats.Conn, filter string) ([]*nats.Subscription, error) {
	prefix, queue := "m."+b.n.nodeTok+".", podQueue
	f := filter
	if group, topicFilter, ok := splitShared(filter); ok {
		if group == "" || topicFilter == "" {
			return nil, nil // refused by the policy; never here
		}
		prefix, queue, f = "s.", shareQueue(group, topicFilter), topicFilter
		b.groups[queue] = [2]string{group, topicFilter}
	}
	var subs []*nats.Subscription
	for _, s := range FilterSubjects(f) {
		sub, err := nc.ChanQueueSubscribe(prefix+s, queue, b.in)
		if err != nil {
			for _, s := range subs {
				_ = s.Unsubscribe()
			}
			return nil, fmt.Errorf("cluster: subscribing %q: %w", filter, err)
		}
		subs = append(subs, sub)
	}
	return subs, nil
}

// add records that client clientID holds filter; the pod's first holder
// subscribes on NATS and, with barrier, waits until every other pod has the
// interest (pitfall 3: mochi writes the SUBACK after OnSubscribed).
func (b *bridge) add(clientID, filter string, barrier bool) {
	b.mu.Lock()
	it := b.filters[filter]
	first := it == nil
	if first {
		it = &interest{clients: map[string]struct{}{}, known: make(chan struct{})}
		b.filters[filter] = it
		if nc := b.n.conn(); nc != nil {
			subs, err := b.subscribe(nc, filter)
			if err != nil {
				b.n.log.Warn("cluster: could not subscribe", "error", err.Error())
			}
			it.subs = subs
		}
	}
	it.clients[clientID] = struct{}{}
	b.mu.Unlock()
	switch {
	case first && barrier:
		b.n.barrier()
		close(it.known)
	case first:
		close(it.known)
	case barrier:
		// A second subscriber while the first one's barrier runs gets
		// its SUBACK no earlier.
		select {
		case <-it.known:
		case <-time.After(AckTimeout):
		}
	}
}

func (b *bridge) remove(clientID, filter string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	it := b.filters[filter]
	if it == nil {
		return
	}
	delete(it.clients, clientID)
	if len(it.clients) > 0 {
		return
	}
	b.countDrops(it.subs, true)
	for _, s := range it.subs {
		_ = s.Unsubscribe()
	}
	delete(b.filters, filter)
	if group, topicFilter, ok := splitShared(filter); ok {
		q := shareQueue(group, topicFilter)
		for other := range b.filters { // "$SHARE/g/f" is the same group
			if g, f, ok := splitShared(other); ok && shareQueue(g, f) == q {
				return
			}
		}
		delete(b.groups, q)
	}
}

// resubscribe makes every subscription again on a new connection.
func (b *bridge) resubscribe(nc *nats.Conn) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	clear(b.dropSeen) // the old connection's subscriptions are gone
	// The ping subject last: one route carries the subscriptions in order,
	// so a pod that sees this pod's ping interest (alive) sees the others.
	acks, err := nc.Subscribe("_a."+b.n.nodeTok+".>", b.answered)
	if err != nil {
		return fmt.Errorf("cluster: subscribing the answers: %w", err)
	}
	kicks, err := nc.Subscribe(kickSubject(b.n.nodeTok), b.n.kicked)
	if err != nil {
		return fmt.Errorf("cluster: subscribing the takeovers: %w", err)
	}
	syncs, err := nc.Subscribe(syncSubject(b.n.nodeTok), b.n.synced)
	if err != nil {
		return fmt.Errorf("cluster: subscribing the session exchange: %w", err)
	}
	releases, err := nc.Subscribe(releaseSubject(b.n.nodeTok), b.n.releasing)
	if err != nil {
		return fmt.Errorf("cluster: subscribing the session releases: %w", err)
	}
	adoptions, err := nc.Subscribe(handoverSubject(b.n.nodeTok), b.n.adopt)
	if err != nil {
		return fmt.Errorf("cluster: subscribing the session handovers: %w", err)
	}
	stores, err := nc.ChanQueueSubscribe(retainedSubject(b.n.nodeTok)+">", podQueue, b.in)
	if err != nil {
		return fmt.Errorf("cluster: subscribing the retained messages: %w", err)
	}
	copies, err := nc.Subscribe(retainedCopySubject(b.n.nodeTok), b.n.copyRetained)
	if err != nil {
		return fmt.Errorf("cluster: subscribing the retained copies: %w", err)
	}
	counts, err := nc.Subscribe(userCountSubject(b.n.nodeTok), b.n.countUser)
	if err != nil {
		return fmt.Errorf("cluster: subscribing the user connection counts: %w", err)
	}
	ping, err := nc.Subscribe(pingSubject(b.n.nodeTok), func(m *nats.Msg) {
		if len(m.Data) > 0 {
			b.n.learn(string(m.Data))
		}
		// After the sends under way: they chose their pods before this
		// ping came (publishing.go).
		b.n.sendsOut()
		_ = m.Respond([]byte(b.n.nodeTok))
	})
	if err != nil {
		return fmt.Errorf("cluster: subscribing the ping subject: %w", err)
	}
	b.nodeSub = []*nats.Subscription{acks, kicks, syncs, releases, adoptions, stores, copies, counts, ping}
	b.stores = stores
	for filter, it := range b.filters {
		subs, err := b.subscribe(nc, filter)
		if err != nil {
			return err
		}
		it.subs = subs
	}
	return nc.Flush()
}

// countDrops adds to Counters.Dropped the messages subs dropped since
// they were last counted (nats.go drops a message when the inbound queue
// is full, and reports only the first of a run); forget, for
// subscriptions about to end. b.mu held.
func (b *bridge) countDrops(subs []*nats.Subscription, forget bool) {
	for _, s := range subs {
		if d, err := s.Dropped(); err == nil && d > b.dropSeen[s] {
			b.n.Counters.Dropped.Add(uint64(d - b.dropSeen[s]))
			b.dropSeen[s] = d
		}
		if forget {
			delete(b.dropSeen, s)
		}
	}
}

// DroppedMessages is how many messages from other pods this pod dropped
// because its inbound queue was full.
func (n *Node) DroppedMessages() uint64 {
	b := n.bridge
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.stores != nil {
		b.countDrops([]*nats.Subscription{b.stores}, false)
	}
	for _, it := range b.filters {
		b.countDrops(it.subs, false)
	}
	return n.Counters.Dropped.Load()
}

// answered takes a pod's answer to a QoS 1/2 forward:
// _a.<self>.<id>.n.<node> or _a.<self>.<id>.s, payload "+" when taken.
func (b *bridge) answered(m *nats.Msg) {
	rest := strings.TrimPrefix(m.Subject, "_a."+b.n.nodeTok+".")
	idStr, target, _ := strings.Cut(rest, ".")
	node := strings.TrimPrefix(target, "n.")
	if target == "s" {
		node = ""
	}
	if idStr == "b" { // a batch: see answer
		for p := m.Data; len(p) >= 9; p = p[9:] {
			b.n.acks.answer(binary.BigEndian.Uint64(p[1:9]), node, p[0] == '+')
		}
		return
	}
	id, err := strconv.ParseUint(idStr, 10, 64)
	if err != nil {
		return
	}
	b.n.acks.answer(id, node, bytes.Equal(m.Data, okAnswer))
}

var okAnswer = []byte("+")

// barrier sends a ping to every pod this one has a route to and waits for
// the answers (at most AckTimeout): each answer comes after this pod's
// subscription on the same ordered route, so proves the pod has it.
func (n *Node) barrier() {
	nc := n.conn()
	if nc == nil {
		return
	}
	names := n.routes()
	var wg sync.WaitGroup
	for _, name := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if m, err := nc.Request(pingSubject(TopicSubject(name)), []byte(n.nodeTok), AckTimeout); err == nil {
				n.learn(string(m.Data))
			}
		}()
	}
	wg.Wait()
}

// OnSubscribed subscribes on NATS for the pod's first holder of a filter.
func (b *bridge) OnSubscribed(cl *mqtt.Client, pk packets.Packet, codes []byte) {
	for i, sub := range pk.Filters {
		if i < len(codes) && codes[i] < packets.ErrUnspecifiedError.Code {
			b.add(cl.ID, sub.Filter, true)
		}
	}
}

// OnUnsubscribed unsubscribes on NATS when the pod's last holder goes.
func (b *bridge) OnUnsubscribed(cl *mqtt.Client, pk packets.Packet) {
	for _, sub := range pk.Filters {
		b.remove(cl.ID, sub.Filter)
	}
}

// OnClientExpired drops the interest of an expired session: mochi calls no
// OnUnsubscribed for it.
func (b *bridge) OnClientExpired(cl *mqtt.Client) {
	for filter := range cl.State.Subscriptions.GetAll() {
		b.remove(cl.ID, filter)
	}
}

// OnRetainMessage ends what OnPublish began for a retained message it let
// mochi store: see retainedStamps.storing.
func (b *bridge) OnRetainMessage(cl *mqtt.Client, _ packets.Packet, _ int64) {
	if _, ok := b.n.retained.storingFor.LoadAndDelete(cl); ok {
		b.n.retained.storing.Unlock()
	}
}

// OnPublish forwards a client's message to the pods with matching
// subscribers. A QoS 1/2 message is acknowledged to its publisher only once
// every such pod took it; otherwise an MQTT 5 publisher gets 0x80 and an
// MQTT 3.1.1 one is disconnected without an acknowledgement, so it sends the
// message again. A QoS 1 message's PUBACK is written by the bridge when the
// answers come, while mochi goes on with the publisher's next packets
// (pipeline.go); the others wait here (mochi writes the acknowledgement
// when this returns).
func (b *bridge) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if localOnly(cl) {
		return pk, nil
	}
	// Until mochi delivered it here (OnPublished): see publishing.go.
	b.local.begin(cl)
	pk, err := b.publish(cl, pk)
	if err != nil {
		b.local.end(cl, false) // mochi goes no further
	}
	return pk, err
}

func (b *bridge) publish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if sysTopic(pk.TopicName) {
		return pk, nil
	}
	pipelined := b.pipelined(cl, pk)
	owed, dup := false, false
	if pipelined {
		owed, dup = b.owes(cl, pk.PacketID)
	}
	if dup && pk.FixedHeader.Dup {
		// Sent again before its PUBACK (MQTT 3.1.1 allows it): the first
		// copy is on its way, and the PUBACK owed for it answers both.
		// Without the DUP flag it is a new message reusing an ID whose
		// PUBACK was just written (still in the queue for a moment).
		return pk, packets.ErrRejectPacket
	}
	var st stamp
	f, err := b.n.send(pk, true, &st)
	// Once the bridge owes this publisher a PUBACK, the next ones are the
	// bridge's too: they go out in order.
	pipelined = pipelined && (f != nil || owed)
	if pipelined && !pk.FixedHeader.Retain {
		if err != nil {
			b.owe(cl, pk.PacketID, nil, err, false)
			return pk, packets.ErrRejectPacket
		}
		b.owe(cl, pk.PacketID, f, nil, true)
		return pk, nil
	}
	if f != nil {
		err = f.wait()
	}
	if pk.FixedHeader.Retain {
		r := &b.n.retained
		r.storing.Lock()
		if !r.current(pk.TopicName, st) {
			// A later retained message from another pod arrived while this
			// one waited for its acknowledgements: mochi must not store
			// this one over it here (every other pod kept the later one).
			// Its subscribers here still get it, as a live message.
			pk.FixedHeader.Retain = false
		}
		if pk.FixedHeader.Retain && b.n.mq.Options.Capabilities.RetainAvailable != 0 && (err == nil || pk.FixedHeader.Qos == 0) {
			r.storingFor.Store(cl, true) // mochi stores it next: OnRetainMessage
		} else {
			r.storing.Unlock()
		}
	}
	switch {
	case pipelined && err != nil:
		b.owe(cl, pk.PacketID, nil, err, false)
		return pk, packets.ErrRejectPacket
	case pipelined:
		b.owe(cl, pk.PacketID, nil, nil, true)
		return pk, nil
	case err == nil || pk.FixedHeader.Qos == 0:
		return pk, nil
	}
	b.refuse(cl, pk, err)
	return pk, packets.ErrRejectPacket
}

// OnWillSent forwards a will mochi published here (it does not pass
// OnPublish); nobody waits for its acknowledgement.
func (b *bridge) OnWillSent(_ *mqtt.Client, pk packets.Packet) {
	if !sysTopic(pk.TopicName) {
		var st stamp
		_ = b.n.forward(pk, false, &st)
	}
}

// localOnly reports whether a message from cl stays on this pod: the
// bridge's own injections and mochi's inline client (Server.Publish). A
// delayed will the policy publishes on its timer comes from an inline client
// with the will's client ID, and goes to every pod like mochi's own wills.
func localOnly(cl *mqtt.Client) bool {
	return cl.Net.Inline && (cl.ID == bridgeClientID || cl.ID == mqtt.InlineClientId)
}

func sysTopic(topic string) bool {
	return len(topic) >= len(mqtt.SysPrefix) && strings.EqualFold(topic[:len(mqtt.SysPrefix)], mqtt.SysPrefix)
}

func splitShared(filter string) (group, topicFilter string, shared bool) {
	if !mqtt.IsSharedFilter(filter) {
		return "", "", false
	}
	rest := filter[len(mqtt.SharePrefix):]
	if !strings.HasPrefix(rest, "/") {
		return "", "", true
	}
	group, topicFilter, _ = strings.Cut(rest[1:], "/")
	return group, topicFilter, true
}

// noShared selects no local member of any shared subscription: mochi
// selects one itself when the selection is empty, so it holds an ID no
// client can have.
var noShared = map[string]packets.Subscription{bridgeClientID: {}}

// OnSelectSubscribers runs after the policy hook chose one local member
// per shared group (pitfall 9). Shared groups are served through NATS queue
// groups, one member cluster-wide: so a message published on this pod, or
// arriving for this pod's plain subscribers, goes to no local member here;
// a message arriving for a shared group goes to that group's chosen member
// only.
func (b *bridge) OnSelectSubscribers(subs *mqtt.Subscribers, pk packets.Packet) *mqtt.Subscribers {
	if pk.Origin == mqtt.InlineClientId || sysTopic(pk.TopicName) {
		return subs // never forwarded: stays on this pod, as mochi chose
	}
	var g *[2]string
	if pk.Origin == bridgeClientID {
		if b.storing.Load() {
			subs.Subscriptions = map[string]packets.Subscription{}
			subs.InlineSubscriptions = nil
			subs.SharedSelected = noShared
			return subs
		}
		g = b.delivering.Load()
	}
	if g == nil {
		subs.SharedSelected = noShared
		return subs
	}
	chosen, found := "", false
	var sub packets.Subscription
	for key, members := range subs.Shared {
		if grp, f, _ := splitShared(key); grp != g[0] || f != g[1] {
			continue
		}
		for id, s := range members {
			if sel, ok := subs.SharedSelected[id]; ok {
				chosen, sub, found = id, sel, true
				break
			}
			if !found {
				chosen, sub, found = id, s, true
			}
		}
	}
	subs.Subscriptions = map[string]packets.Subscription{}
	subs.InlineSubscriptions = nil
	if !found {
		subs.SharedSelected = noShared
		return subs
	}
	subs.SharedSelected = map[string]packets.Subscription{chosen: sub}
	return subs
}
