package policy

import (
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/mqtt-operator/mqtt-operator/broker-image/internal/flow"
)

// clientState is what the quotas remember about one connection.
type clientState struct {
	// connectedAt is when the connection sent its CONNECT; a rebalance
	// moves the oldest connections first (ConnectedAt).
	connectedAt time.Time
	mu          sync.Mutex
	windowStart time.Time
	published   int32
	// refusing holds the filters of the SUBSCRIBE being processed that exceed
	// a quota or limit, each with the reason code an MQTT 5 client gets
	// (0 leaves mochi's 0x87); OnACLCheck refuses them, OnSubscribed sets the
	// codes and clears it.
	refusing atomic.Pointer[map[string]byte]
	// limiter slows the client to its user's publish rate (userlimits.go).
	limiter limiter
	// certificate is the fingerprint of the client certificate the client
	// logged in with, nil after a password or anonymous login.
	certificate atomic.Pointer[string]
	// admittedBy is the snapshot the client's CONNECT was checked against.
	admittedBy atomic.Pointer[Snapshot]
	// revoked is set by the first revocation of the session.
	revoked atomic.Bool
	// flow is what flow control remembers about the client as a subscriber.
	flow flow.Subscriber
	// aliases are the connection's topic aliases (aliases.go).
	aliases topicAliases
	// deniedPublish is set when the ACLs denied the PUBLISH being
	// processed of an MQTT 3.1.1 client (denied.go). Only the client's read
	// goroutine touches it.
	deniedPublish bool
	// fanningOut is the topic string of the message the client published
	// last, while mochi fans it out (see messageSizes). Only the client's
	// read goroutine touches it.
	fanningOut *byte
}

func (st *clientState) refused(filter string) bool {
	m := st.refusing.Load()
	if m == nil {
		return false
	}
	_, ok := (*m)[filter]
	return ok
}

// refuse marks filter as refused with code (see refusing).
func refuse(m *map[string]byte, filter string, code byte) {
	if *m == nil {
		*m = map[string]byte{}
	}
	(*m)[filter] = code
}

// ConnectedAt is when the client's connection sent its CONNECT; false for
// a client the hook does not know (an inline client, or one that ended).
func (h *Hook) ConnectedAt(cl *mqtt.Client) (time.Time, bool) {
	if st := h.state(cl); st != nil {
		return st.connectedAt, true
	}
	return time.Time{}, false
}

func (h *Hook) state(cl *mqtt.Client) *clientState {
	v, ok := h.clients.Load(cl)
	if !ok {
		return nil
	}
	return v.(*clientState)
}

// OnConnect caps the keepalive a client asks for: a client that asks for none
// or for more than the limit gets the limit (MQTT 5 clients are told so in
// CONNACK), so no idle connection lives forever.
func (h *Hook) OnConnect(cl *mqtt.Client, _ packets.Packet) error {
	if h.Full != nil && h.Full() {
		// maxConnections clients are logged in. Answered before any
		// password check: a full broker does no work for newcomers.
		h.Counters.ServerFull.Add(1)
		code := packets.ErrServerBusy
		if cl.Properties.ProtocolVersion < 5 {
			code = packets.ErrServerUnavailable // 3.1.1 has no "busy"
		}
		_ = h.server.SendConnack(cl, code, false, nil)
		return code
	}
	st := &clientState{connectedAt: time.Now()}
	h.clients.Store(cl, st)
	h.startSession(cl)
	s := h.snap.Load()
	if s == nil {
		return nil
	}
	st.takeOutboundAliases(cl, s.Quotas.TopicAliasMaximum)
	max := s.Quotas.MaxKeepaliveSeconds
	if max > 0 && (cl.State.Keepalive == 0 || cl.State.Keepalive > max) {
		cl.State.Keepalive = max
		cl.State.ServerKeepalive = true
	}
	return nil
}

// OnDisconnect lets go of publishers waiting for room in the client's
// queue. A session that ends with the connection is forgotten; a persistent
// one stays, so that what is queued for it while offline is counted (see
// OnClientExpired and OnSessionEstablish), unless its user no longer exists
// (a revoked session): then it is deleted. Sessions the store restores (no
// connection) are judged once they are all loaded (DeleteOrphanedSessions).
func (h *Hook) OnDisconnect(cl *mqtt.Client, _ error, expire bool) {
	h.userConns.remove(cl, string(cl.Properties.Username))
	st := h.state(cl)
	if st != nil && h.Flow != nil {
		h.Flow.Release(&st.flow)
		if expire {
			h.Flow.Forget(&st.flow)
		}
	}
	if expire || st == nil || h.Flow == nil {
		h.clients.Delete(cl)
	}
	if s := h.snap.Load(); !expire && s != nil && cl.Net.Conn != nil && !cl.IsTakenOver() && !s.hasUser(string(cl.Properties.Username)) {
		h.deleteSession(cl)
	}
}

// OnPacketRead enforces what a PUBLISH may be. A QoS above maxQoS or a
// retained message while retain is off disconnects the client (MQTT 5
// reasons 0x9B and 0x9A; mochi would instead downgrade the QoS and then
// acknowledge with the wrong packet, or silently not retain). A client that
// sends more PUBLISH packets in one second than allowed is disconnected
// (reason 0x96).
func (h *Hook) OnPacketRead(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if pk.FixedHeader.Type != packets.Publish {
		h.completed(cl, pk)
		h.acknowledged(cl, pk)
		return pk, nil
	}
	s := h.snap.Load()
	st := h.state(cl)
	if s == nil || st == nil {
		return pk, nil
	}
	if err := st.resolveAlias(cl, &pk); err != nil {
		h.Counters.TopicAliasRefused.Add(1)
		h.log.Info("client used a topic alias it may not; disconnecting", "clientId", cl.ID,
			"alias", pk.Properties.TopicAlias, "topicAliasMaximum", st.aliases.in, "reason", err.Error())
		_ = h.server.DisconnectClient(cl, err.(packets.Code))
		return pk, packets.ErrRejectPacket
	}
	if pk.FixedHeader.Qos > s.Quotas.MaxQoS {
		h.Counters.QoSRefused.Add(1)
		h.log.Info("client published above the maximum QoS; disconnecting", "clientId", cl.ID, "qos", pk.FixedHeader.Qos, "maxQoS", s.Quotas.MaxQoS)
		_ = h.server.DisconnectClient(cl, packets.ErrQosNotSupported)
		return pk, packets.ErrRejectPacket
	}
	if s.Quotas.topicTooLong(pk.TopicName) {
		h.Counters.TopicTooLong.Add(1)
		h.log.Info("client published to a topic over the length or level limit; disconnecting", "clientId", cl.ID,
			"topicBytes", len(pk.TopicName), "maxTopicLength", s.Quotas.MaxTopicLength, "maxTopicLevels", s.Quotas.MaxTopicLevels)
		_ = h.server.DisconnectClient(cl, packets.ErrTopicNameInvalid)
		return pk, packets.ErrRejectPacket
	}
	if pk.FixedHeader.Retain && !s.Quotas.RetainAvailable {
		h.Counters.RetainRefused.Add(1)
		h.log.Info("client published a retained message while retain is off; disconnecting", "clientId", cl.ID)
		_ = h.server.DisconnectClient(cl, packets.ErrRetainNotSupported)
		return pk, packets.ErrRejectPacket
	}
	if lim := s.users[string(cl.Properties.Username)].limits; lim != nil && !h.slowPublisher(cl, st, lim, &pk) {
		return pk, packets.ErrRejectPacket // closed while it waited
	}
	if h.overPublishRate(st, s) {
		h.Counters.RateLimited.Add(1)
		h.log.Info("client exceeded the publish rate; disconnecting", "clientId", cl.ID, "limitPerSecond", s.Quotas.PublishRatePerClient)
		_ = h.server.DisconnectClient(cl, packets.ErrMessageRateTooHigh)
		return pk, packets.ErrRejectPacket
	}
	h.answerSysPublish(cl, pk)
	return pk, nil
}

// overPublishRate counts a PUBLISH against the client's rate and reports
// whether it is one too many.
func (h *Hook) overPublishRate(st *clientState, s *Snapshot) bool {
	if s.Quotas.PublishRatePerClient <= 0 {
		return false
	}
	now := time.Now()
	st.mu.Lock()
	defer st.mu.Unlock()
	if now.Sub(st.windowStart) >= time.Second {
		st.windowStart, st.published = now, 0
	}
	st.published++
	return st.published > s.Quotas.PublishRatePerClient
}

// OnSubscribe marks the filters that would take the client past its
// subscription quota; OnACLCheck refuses them (SUBACK 0x87) while the rest of
// the SUBSCRIBE proceeds. A malformed shared subscription (shared.go) is
// replaced by the empty filter, which mochi refuses as invalid (0x8F, 3.1.1
// 0x80): the only way a hook has to give that answer.
func (h *Hook) OnSubscribe(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	for i := range pk.Filters {
		if malformedShared(pk.Filters[i].Filter) {
			pk.Filters[i].Filter = ""
		}
	}
	s := h.snap.Load()
	st := h.state(cl)
	if s == nil || st == nil {
		return pk
	}
	count := cl.State.Subscriptions.Len()
	limit, userLimit := s.Quotas.MaxSubscriptionsPerClient, int32(0)
	if lim := s.users[string(cl.Properties.Username)].limits; lim != nil {
		userLimit = lim.MaxSubscriptions
	}
	var refusing map[string]byte
	for _, f := range pk.Filters {
		if f.Filter == "" {
			continue // refused by mochi
		}
		if s.Quotas.filterTooLong(f.Filter) {
			h.Counters.TopicTooLong.Add(1)
			refuse(&refusing, f.Filter, 0)
			continue
		}
		if _, already := cl.State.Subscriptions.Get(f.Filter); already {
			continue
		}
		count++
		switch {
		case userLimit > 0 && int32(count) > userLimit:
			h.UserQuotas.SubscriptionsRefused.Add(1)
			refuse(&refusing, f.Filter, packets.ErrQuotaExceeded.Code)
		case int32(count) > limit:
			h.Counters.SubscriptionQuota.Add(1)
			refuse(&refusing, f.Filter, packets.ErrQuotaExceeded.Code)
		}
	}
	if refusing != nil {
		st.refusing.Store(&refusing)
	}
	return pk
}

// OnSubscribed gives an MQTT 5 client the reason of each filter refused
// over a quota (0x97, quota exceeded, rather than mochi's 0x87): mochi
// builds the SUBACK from the codes it passes here. It then clears the
// refusals of the SUBSCRIBE just answered.
func (h *Hook) OnSubscribed(cl *mqtt.Client, pk packets.Packet, codes []byte) {
	st := h.state(cl)
	if st == nil {
		return
	}
	if m := st.refusing.Load(); m != nil && cl.Properties.ProtocolVersion == 5 && len(codes) == len(pk.Filters) {
		for i, f := range pk.Filters {
			if code := (*m)[f.Filter]; code != 0 && codes[i] == packets.ErrNotAuthorized.Code {
				codes[i] = code
			}
		}
	}
	st.refusing.Store(nil)
}

// filterTooLong is topicTooLong for a subscription filter: a shared one is
// bounded in bytes as a whole, and in levels by its topic filter.
func (q *Quotas) filterTooLong(filter string) bool {
	if q.MaxTopicLength > 0 && len(filter) > q.MaxTopicLength {
		return true
	}
	return q.topicTooLong(aclFilter(filter))
}
