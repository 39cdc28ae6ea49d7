package flow

import (
	"sync/atomic"
	"unsafe"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// Byte budgets. mochi copies every message for every subscriber; a copy
// stays in the subscriber's queue of pending writes until written, and a QoS
// 1/2 copy in its inflight map until acknowledged, also while a persistent
// session is offline. Counting only messages let one subscriber that stopped
// reading hold a thousand copies of 900 KB messages. flow counts the bytes
// each subscriber holds from the moment a delivery is let through to the
// moment the copy is freed, and bounds them per subscriber and in total:
// a stuck live subscriber over a budget is disconnected, an offline session
// over one refuses new messages (the newest are dropped, the queue it has is
// kept, in order). A subscriber that is reading is never refused: its
// publishers wait for it instead (see BeforeDelivery).

// entryOverhead is what one queued copy costs beyond its topic and payload:
// mochi's packets.Packet and the queue's pointer to it.
const entryOverhead = int64(unsafe.Sizeof(packets.Packet{})) + 8

// SizeOf is what a queued copy of pk costs, in bytes.
func SizeOf(pk *packets.Packet) int64 {
	return int64(len(pk.Payload)+len(pk.TopicName)) + entryOverhead
}

// SizeOfMessage is SizeOf for a message known by its topic and payload length.
func SizeOfMessage(topic string, payload int) int64 {
	return int64(payload+len(topic)) + entryOverhead
}

// queuedBytes is what one subscriber holds.
type queuedBytes struct{ n atomic.Int64 }

// Queued is the bytes the subscriber holds, as counted.
func (s *Subscriber) Queued() int64 { return s.queue.n.Load() }

// budget is the limits and the broker-wide count.
type budget struct {
	perClient, total atomic.Int64 // 0 = no limit
	used             atomic.Int64
}

// SetBudget sets the per-subscriber and broker-wide limits in bytes (0 = no
// limit). Safe while deliveries run.
func (c *Control) SetBudget(perClient, total int64) {
	c.budget.perClient.Store(perClient)
	c.budget.total.Store(total)
}

// QueuedBytes is the bytes held for all subscribers.
func (c *Control) QueuedBytes() int64 { return c.budget.used.Load() }

// overClient reports whether size more bytes take sub past its budget. An
// empty queue always takes one message, so a message larger than the budget
// is not refused for good.
func (b *budget) overClient(sub *Subscriber, size int64) bool {
	limit := b.perClient.Load()
	q := sub.queue.n.Load()
	return limit > 0 && q > 0 && q+size > limit
}

// overTotal reports whether size more bytes take the broker past its budget.
func (b *budget) overTotal(size int64) bool {
	limit := b.total.Load()
	return limit > 0 && b.used.Load()+size > limit
}

func (b *budget) add(sub *Subscriber, size int64) {
	sub.queue.n.Add(size)
	b.used.Add(size)
}

// release takes up to size bytes off sub; never below zero, so a copy the
// count missed cannot make it negative.
func (b *budget) release(sub *Subscriber, size int64) {
	for size > 0 {
		cur := sub.queue.n.Load()
		r := min(size, cur)
		if r <= 0 {
			return
		}
		if sub.queue.n.CompareAndSwap(cur, cur-r) {
			b.used.Add(-r)
			return
		}
	}
}

// Forget releases everything sub holds: its session ended.
func (c *Control) Forget(sub *Subscriber) {
	c.budget.release(sub, sub.queue.n.Load())
}

// Inherit sets what a resumed session holds: the queue it took over.
func (c *Control) Inherit(sub *Subscriber, size int64) {
	c.budget.add(sub, size)
}

// resync clears the count of a subscriber that holds nothing: copies freed
// without flow seeing them (expired messages) are forgotten here.
func (c *Control) resync(cl *mqtt.Client, sub *Subscriber) {
	if sub.queue.n.Load() == 0 {
		return
	}
	if n, _ := pending(cl); n == 0 && cl.State.Inflight.Len() == 0 {
		c.Forget(sub)
	}
}

// offline decides a delivery to a session whose client is not connected:
// mochi keeps QoS 1/2 messages (queued) for it, and drops the rest itself.
func (c *Control) offline(sub *Subscriber, size int64, queued bool) Verdict {
	if !queued {
		return Deliver
	}
	if c.budget.overClient(sub, size) || c.budget.overTotal(size) {
		c.Stats.OfflineDropped.Add(1)
		if sub.overBudget.CompareAndSwap(false, true) {
			return RefuseFirst
		}
		return Refuse
	}
	c.budget.add(sub, size)
	return Deliver
}
