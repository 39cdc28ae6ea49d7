package policy

import (
	"math/rand/v2"
	"strings"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/mqtt-operator/mqtt-operator/broker-image/internal/acl"
)

// Shared subscriptions ($share/<group>/<filter>, MQTT 5 section 4.8.2; the
// broker takes them from 3.1.1 clients too, as mosquitto does).
//
//   - The ACLs judge the topic filter after the prefix: a client allowed to
//     subscribe to t/# may join any group on t/#. The group name is not a
//     topic and no rule names it.
//   - A group name must be non-empty and free of '+' and '#' (a '/' ends
//     it), and a filter must follow it; otherwise the filter is refused
//     with 0x8F (topic filter invalid; 0x80 for 3.1.1).
//   - mochi sends each message to one member of each group. The hook
//     chooses that member at random among the connected ones that may read
//     the topic and are not stuck (package flow); failing those, among
//     those that may read it (an offline session queues it); failing
//     those, any. So a narrowed ACL or a stuck member costs the group none
//     of its messages while another member can take them.
//   - A shared subscription gets no retained messages (mochi, as the
//     specification says), and NoLocal on one is refused (mochi).
//   - Topic names starting with the share prefix cannot be published to:
//     mochi reads every filter so named as a shared subscription, so no
//     client could ever receive them, and the delivery check (which judges
//     what follows a share prefix) must never see one.

// splitShared returns the group and the topic filter of a shared
// subscription filter, recognised as mochi does (prefix in any case);
// shared is false for every other filter.
func splitShared(filter string) (group, topicFilter string, shared bool) {
	if !mqtt.IsSharedFilter(filter) {
		return "", "", false
	}
	rest := filter[len(mqtt.SharePrefix):]
	if !strings.HasPrefix(rest, "/") {
		return "", "", true // "$share" alone
	}
	group, topicFilter, _ = strings.Cut(rest[1:], "/")
	return group, topicFilter, true
}

// malformedShared reports whether filter is a shared subscription with an
// empty or wildcard group name, or no topic filter.
func malformedShared(filter string) bool {
	group, topicFilter, shared := splitShared(filter)
	return shared && (group == "" || strings.ContainsAny(group, "+#") || topicFilter == "")
}

// aclFilter is the filter the ACLs judge for a subscription: the topic
// filter of a shared one, the filter itself otherwise.
func aclFilter(filter string) string {
	if _, topicFilter, shared := splitShared(filter); shared {
		return topicFilter
	}
	return filter
}

// OnSelectSubscribers chooses the member of each shared subscription that
// gets the message on topic pk.TopicName. It always chooses one per group:
// mochi would otherwise choose again, for every group, at random. Members
// are tried from a random place on, and the first that is ready takes the
// message, so a group of healthy members costs about one check.
func (h *Hook) OnSelectSubscribers(subs *mqtt.Subscribers, pk packets.Packet) *mqtt.Subscribers {
	subs.SharedSelected = make(map[string]packets.Subscription, len(subs.Shared))
	s := h.snap.Load()
	var buf [16]string
	for _, members := range subs.Shared {
		ids := buf[:0]
		for id := range members {
			ids = append(ids, id)
		}
		if len(ids) == 0 {
			continue
		}
		chosen, best := "", 3
		for i, start := 0, rand.IntN(len(ids)); i < len(ids) && best > 0; i++ {
			id := ids[(start+i)%len(ids)]
			if rank := h.memberRank(s, id, pk.TopicName); rank < best {
				chosen, best = id, rank
			}
		}
		sub := members[chosen]
		if cur, ok := subs.SharedSelected[chosen]; ok {
			sub = cur.Merge(sub)
		} else {
			sub = sub.Merge(sub) // as mochi's own choice does: sets the identifiers
		}
		subs.SharedSelected[chosen] = sub
	}
	return subs
}

// memberRank ranks a member of a shared subscription for a message on
// topic: 0 connected, allowed to read it and not stuck; 1 allowed to read
// it; 2 neither (the delivery check will refuse it).
func (h *Hook) memberRank(s *Snapshot, clientID, topic string) int {
	cl, ok := h.server.Clients.Get(clientID)
	if !ok || s == nil {
		return 2
	}
	if !s.index.Allowed(acl.Client{Username: string(cl.Properties.Username), ClientID: cl.ID}, acl.Subscribe, topic) {
		return 2
	}
	if cl.Closed() || cl.Net.Conn == nil {
		return 1
	}
	if st := h.state(cl); st != nil && (st.flow.Stuck() || st.revoked.Load()) {
		return 1
	}
	return 0
}
