package policy

import (
	"strings"
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// Retained messages live in memory for as long as the broker runs, and are
// all loaded again at every start: without a bound, one client could store
// 200,000 messages of 1 KiB (2 GB with mochi's overhead) and leave a pod
// that is OOM-killed at every restart. So the broker holds at most
// MaxRetainedMessages of them and MaxRetainedBytes of topics and payloads.
//
// A retained PUBLISH that would go past either is still delivered to the
// subscribers of the moment, and acknowledged as usual, but not retained:
// refusing the publish outright would take it from its subscribers, and
// MQTT 3.1.1 has no way to tell the publisher. Each such message is
// counted (mqtt_retained_refused_total), and logged at most once a second.
// Replacing or clearing a retained message is always allowed.

// retainedBook is the size of every retained message, by topic. mochi
// stores the message after the hooks' OnPublish, which checks against this
// book and enters the new size; the book is rebuilt from mochi's own store
// at start and when messages expire.
type retainedBook struct {
	mu         sync.Mutex
	size       map[string]int
	bytes      int
	lastLogged time.Time
}

func retainedSize(pk *packets.Packet) int { return len(pk.TopicName) + len(pk.Payload) }

// retainWithinLimits keeps retained messages within the limits: it
// returns pk, without its retain flag when keeping it would go past them.
// OnPublish calls it.
func (h *Hook) retainWithinLimits(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	s := h.snap.Load()
	if !pk.FixedHeader.Retain || s == nil || !s.Quotas.RetainAvailable {
		return pk
	}
	b := &h.retained
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.size == nil {
		b.size = map[string]int{}
	}
	old, exists := b.size[pk.TopicName]
	if len(pk.Payload) == 0 { // clears the retained message
		b.bytes -= old
		delete(b.size, pk.TopicName)
		return pk
	}
	size := retainedSize(&pk)
	count := len(b.size)
	if !exists {
		count++
	}
	q := s.Quotas
	if (q.MaxRetainedMessages > 0 && count > q.MaxRetainedMessages) || (q.MaxRetainedBytes > 0 && b.bytes-old+size > q.MaxRetainedBytes) {
		h.Counters.RetainedRefused.Add(1)
		if now := time.Now(); now.Sub(b.lastLogged) >= time.Second {
			b.lastLogged = now
			h.log.Warn("retained message not kept: the broker holds as many retained messages as its limits allow; it was delivered, not retained",
				"clientId", cl.ID, "retainedMessages", len(b.size), "retainedBytes", b.bytes,
				"maxRetainedMessages", q.MaxRetainedMessages, "maxRetainedBytes", q.MaxRetainedBytes)
		}
		pk.FixedHeader.Retain = false
		return pk
	}
	b.bytes += size - old
	b.size[pk.TopicName] = size
	return pk
}

// OnRetainedExpired rebuilds the book: mochi dropped an expired message.
func (h *Hook) OnRetainedExpired(string) { h.RecountRetained() }

// RecountRetained rebuilds the book from mochi's retained messages; the
// broker calls it once the store restored them.
func (h *Hook) RecountRetained() {
	b := &h.retained
	b.mu.Lock()
	defer b.mu.Unlock()
	b.size, b.bytes = map[string]int{}, 0
	for topic, pk := range h.server.Topics.Retained.GetAll() {
		if strings.HasPrefix(topic, "$SYS/") {
			continue // mochi's own $SYS messages, not the clients'
		}
		size := retainedSize(&pk)
		b.size[topic] = size
		b.bytes += size
	}
}

// RetainedKept is how many retained messages of clients the broker keeps.
func (h *Hook) RetainedKept() int64 {
	h.retained.mu.Lock()
	defer h.retained.mu.Unlock()
	return int64(len(h.retained.size))
}

// RetainedBytes is the size of the retained messages' topics and payloads.
func (h *Hook) RetainedBytes() int64 {
	h.retained.mu.Lock()
	defer h.retained.mu.Unlock()
	return int64(h.retained.bytes)
}

// topicTooLong reports whether a topic name or filter exceeds the length or
// level limits (0 = none).
func (q *Quotas) topicTooLong(topic string) bool {
	if q.MaxTopicLength > 0 && len(topic) > q.MaxTopicLength {
		return true
	}
	return q.MaxTopicLevels > 0 && strings.Count(topic, "/")+1 > q.MaxTopicLevels
}
