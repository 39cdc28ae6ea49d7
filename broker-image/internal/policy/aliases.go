package policy

import (
	"sync"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// Topic aliases (MQTT 5 section 3.3.2.3.4) stand for a topic name for the
// rest of a connection, in each direction; there are at most
// Quotas.TopicAliasMaximum of them each way (0 turns them off), each
// holding one topic name, so their memory is bounded by that times the
// topic length limit.
//
// Client to broker: CONNACK advertises the maximum (connack.go), and
// OnPacketRead resolves an alias before anything judges the topic, so the
// ACLs, the topic limits and flow control see the topic the client meant.
// (mochi resolves it only after its ACL check, which judged the empty
// topic of every PUBLISH that used an alias, and refused it.) An alias of 0
// or above the maximum ends the connection with DISCONNECT 0x94 (topic
// alias invalid); an empty topic with an alias the client never set, with
// 0x82 (protocol error).
//
// Broker to client: when a client advertises a Topic Alias Maximum, the
// first min(its maximum, ours) distinct topics it is sent get an alias
// each, for the life of the connection (an alias is never given to another
// topic). mochi would put the alias in the copy it keeps until the client
// acknowledges it: a message resent on a new connection would then carry
// an alias that connection never set, the stored copy would have lost its
// topic, and flow control would count it short. So mochi's aliasing is
// turned off (OnConnect) and the alias is applied as each packet is
// encoded, to that packet only. A topic is sent as its alias alone only
// once a packet that set the alias has been written: mochi writes from
// more than one goroutine, and the client must learn an alias before it
// first needs it.

// errUnknownAlias ends a connection that used an alias it never set.
var errUnknownAlias = packets.Code{Code: packets.ErrProtocolViolation.Code, Reason: "protocol violation: unknown topic alias"}

// topicAliases are one connection's aliases.
type topicAliases struct {
	// in is the maximum CONNACK advertised. Written when CONNACK is
	// encoded and read by the reader, both on the connection's goroutine.
	in uint16

	mu     sync.Mutex
	outMax uint16
	out    map[string]uint16 // topic -> alias
	sent   []outAlias        // by alias - 1
}

type outAlias struct {
	topic   string
	written bool // a packet that set it was written
}

// takeOutboundAliases turns mochi's outbound aliasing off for cl and
// remembers how many aliases the broker may use with it. OnConnect calls it,
// before mochi lists the client.
func (st *clientState) takeOutboundAliases(cl *mqtt.Client, max uint16) {
	clientMax := cl.Properties.Props.TopicAliasMaximum
	cl.State.TopicAliases.Outbound = mqtt.NewOutboundTopicAliases(0)
	st.aliases.outMax = min(clientMax, max)
}

// resolveAlias replaces an aliased PUBLISH's topic by the one it stands for,
// and registers a new alias; it returns the reason to disconnect the
// client for, or nil.
func (st *clientState) resolveAlias(cl *mqtt.Client, pk *packets.Packet) error {
	if !pk.Properties.TopicAliasFlag {
		return nil
	}
	alias := pk.Properties.TopicAlias
	if alias == 0 || alias > st.aliases.in {
		return packets.ErrTopicAliasInvalid
	}
	// mochi's map holds at most in entries, as aliases above are refused.
	topic := cl.State.TopicAliases.Inbound.Set(alias, pk.TopicName)
	if topic == "" {
		return errUnknownAlias
	}
	pk.TopicName = topic
	return nil
}

// aliasOutbound gives pk, about to be encoded for cl, its alias.
func (h *Hook) aliasOutbound(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	pk.Properties.TopicAlias, pk.Properties.TopicAliasFlag = 0, false
	st := h.state(cl)
	if st == nil || pk.TopicName == "" {
		return pk
	}
	a := &st.aliases
	a.mu.Lock()
	defer a.mu.Unlock()
	alias, ok := a.out[pk.TopicName]
	switch {
	case ok && a.sent[alias-1].written:
		pk.TopicName = ""
	case ok:
	case len(a.sent) < int(a.outMax):
		if a.out == nil {
			a.out = map[string]uint16{}
		}
		a.sent = append(a.sent, outAlias{topic: pk.TopicName})
		alias = uint16(len(a.sent))
		a.out[pk.TopicName] = alias
	default:
		return pk // every alias is taken
	}
	pk.Properties.TopicAlias, pk.Properties.TopicAliasFlag = alias, true
	return pk
}

// aliasSent notes that pk, a PUBLISH, was written to the client, and
// returns the length of the topic it left out for its alias (0 when it
// named its topic).
func (st *clientState) aliasSent(pk *packets.Packet) int {
	if !pk.Properties.TopicAliasFlag || pk.Properties.TopicAlias == 0 {
		return 0
	}
	a := &st.aliases
	a.mu.Lock()
	defer a.mu.Unlock()
	i := int(pk.Properties.TopicAlias) - 1
	if i >= len(a.sent) {
		return 0
	}
	if pk.TopicName != "" {
		a.sent[i].written = true
		return 0
	}
	return len(a.sent[i].topic)
}
