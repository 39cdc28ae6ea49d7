// Package flow decides, for each delivery to a subscriber, whether the
// publisher waits, the message is queued, or it is refused; and it bounds
// what is queued for each subscriber, and for all of them, in bytes.
//
// mochi hands each delivery to the subscriber's write goroutine through a
// bounded queue (MaximumClientWritesPending) and keeps each QoS 1/2 message
// in the subscriber's inflight map until it is acknowledged
// (MaximumInflight); it drops a message when either is full. Both fill not
// only for subscribers that stopped reading: when many publishers feed one
// subscriber, they out-produce its single writer, and a subscriber that
// acknowledges once per read of its socket holds many messages
// unacknowledged. Dropping those would lose acknowledged QoS 1 messages for
// a subscriber that is reading.
//
// So a delivery to a subscriber whose queue or inflight map is three
// quarters full, or whose queued bytes would pass its budget, waits on the
// publisher's goroutine until the subscriber has made room. It waits as
// long as the subscriber makes headway: its writer wrote a packet, or it
// acknowledged one, within StuckAfter. A subscriber that makes none for
// StuckAfter while it has work is judged stuck, once, on its own clock (not
// per publisher or per wait), and stays stuck until it makes headway again.
// Nobody ever waits for a stuck subscriber: deliveries to it are queued
// while there is room and refused (counted) when there is none, and when
// its queued bytes pass its budget it is disconnected. So however many
// subscribers stop reading, each costs a publisher at most one wait of
// StuckAfter, and the waits for subscribers that stopped at the same time
// overlap.
package flow

import (
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
)

// StuckAfter is how long a subscriber with a full queue may make no headway
// before it is judged stuck: a dozen times the 20 ms the earlier flow
// control allowed a writer, and short enough that a queue of a thousand
// messages filling at up to three thousand a second is three quarters full
// only after its subscriber would be judged stuck, so the publisher does not
// wait for it at all.
const StuckAfter = 250 * time.Millisecond

// outboundField locates mochi's per-client queue of pending writes
// (ClientState.outbound, unexported). Only its length is ever read. When a
// mochi upgrade renames or retypes it, Available reports false, the broker
// says so at start, and deliveries behave as in plain mochi; a test fails
// first.
var outboundField = func() []int {
	f, ok := reflect.TypeOf(mqtt.ClientState{}).FieldByName("outbound")
	if !ok || f.Type.Kind() != reflect.Chan {
		return nil
	}
	return f.Index
}()

// Available reports whether this build of mochi lets flow see the queue.
func Available() bool { return outboundField != nil }

// pending returns the length and capacity of cl's queue of pending writes.
func pending(cl *mqtt.Client) (n, capacity int) {
	q := reflect.ValueOf(&cl.State).Elem().FieldByIndex(outboundField)
	if q.IsNil() {
		return 0, 0
	}
	return q.Len(), q.Cap()
}

// Subscriber is what flow remembers about one client's session.
type Subscriber struct {
	// progressAt is when the subscriber last showed headway (unix
	// nanoseconds): wrote or acknowledged a packet, or had nothing to
	// write. Deliveries do not move it, so subscribers that stopped reading
	// at about the same time are judged stuck together, however long the
	// first judgement kept the publisher.
	progressAt atomic.Int64
	stuck      atomic.Bool
	// overBudget is set once the subscriber was disconnected, or its
	// offline queue first refused a message, for its bytes.
	overBudget atomic.Bool
	waiting    atomic.Bool // a publisher waits for room
	mu         sync.Mutex
	room       chan struct{} // closed when there is room again
	queue      queuedBytes
}

// await returns the channel that is closed when there is room.
func (s *Subscriber) await() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.room == nil {
		s.room = make(chan struct{})
	}
	s.waiting.Store(true)
	return s.room
}

// wake lets every waiting publisher go.
func (s *Subscriber) wake() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.room != nil {
		close(s.room)
		s.room = nil
	}
	s.waiting.Store(false)
}

// Stuck reports whether the subscriber is judged stuck.
func (s *Subscriber) Stuck() bool { return s.stuck.Load() }

// Stats count what flow did.
type Stats struct {
	Waits    atomic.Uint64 // deliveries that waited for room
	WaitNano atomic.Uint64 // time spent waiting, in total
	Stuck    atomic.Uint64 // times a subscriber was judged stuck
	// StuckSkips are deliveries to a subscriber already judged stuck that
	// found it full and did not wait.
	StuckSkips atomic.Uint64
	// Refused are deliveries to a stuck subscriber refused for want of room
	// (mochi would have dropped them).
	Refused atomic.Uint64
	// OverBudgetDisconnects are live subscribers disconnected for their
	// queued bytes; OfflineDropped are messages not queued for an offline
	// session over its budget.
	OverBudgetDisconnects, OfflineDropped atomic.Uint64
}

// Control decides what happens to each delivery. The zero value never
// waits and bounds nothing; New returns one with the defaults.
type Control struct {
	StuckAfter time.Duration
	// InflightLimit is mochi's MaximumInflight: the QoS 1/2 messages it
	// holds for one client before it drops.
	InflightLimit int
	budget        budget
	Stats         Stats
}

// New returns a Control with the package defaults, or one that never waits
// when mochi's queue cannot be seen.
func New(inflightLimit int) *Control {
	if !Available() {
		return &Control{}
	}
	return &Control{StuckAfter: StuckAfter, InflightLimit: inflightLimit}
}

// Verdict is what becomes of one delivery.
type Verdict int

const (
	// Deliver lets mochi queue the message.
	Deliver Verdict = iota
	// Refuse drops the message for this subscriber (counted).
	Refuse
	// RefuseFirst is the first Refuse of an offline session for its bytes:
	// worth a log line.
	RefuseFirst
	// Disconnect refuses the message and asks for the subscriber to be
	// disconnected: it is stuck and over its byte budget.
	Disconnect
)

// levels are the thresholds of a subscriber's queue, in eighths of its
// capacity: newcomers wait from 6, a woken waiter from 7, waiters are woken
// at 4 and below.
const (
	newcomerEighths = 6
	waiterEighths   = 7
	wakeEighths     = 4
)

// full reports whether cl has less room than eighths/8 of its queue, its
// inflight map and its byte budget, for a message of size bytes.
func (c *Control) full(cl *mqtt.Client, sub *Subscriber, size int64, eighths int) bool {
	n, capacity := pending(cl)
	if capacity > 0 && n >= capacity*eighths/8 {
		return true
	}
	if c.InflightLimit > 0 && cl.State.Inflight.Len() >= c.InflightLimit*eighths/8 {
		return true
	}
	return c.budget.overClient(sub, size)
}

// BeforeDelivery is called on the publisher's goroutine just before mochi
// queues a message of size bytes (see SizeOf) for cl; queued says whether
// mochi keeps it while cl is offline (QoS 1/2). It returns once there
// is room, or the subscriber is judged stuck, with what to do with the
// message. The wake-up comes from the subscriber (AfterWrite, AfterAck), not
// from polling: on a busy machine the Go runtime fires timers late.
func (c *Control) BeforeDelivery(cl *mqtt.Client, sub *Subscriber, size int64, queued bool) Verdict {
	if sub == nil {
		return Deliver
	}
	if cl.Closed() || cl.Net.Conn == nil {
		return c.offline(sub, size, queued)
	}
	if c.StuckAfter <= 0 || !c.full(cl, sub, size, newcomerEighths) {
		if n, _ := pending(cl); n == 0 {
			// Nothing waits to be written: the writer is not behind, and an
			// idle subscriber's clock starts now, not at its last write.
			sub.progressAt.Store(time.Now().UnixNano())
		}
		c.budget.add(sub, size)
		return Deliver
	}
	if !sub.stuck.Load() {
		c.wait(cl, sub, size)
	} else {
		c.Stats.StuckSkips.Add(1)
	}
	if !sub.stuck.Load() {
		c.budget.add(sub, size)
		return Deliver
	}
	return c.stuckVerdict(cl, sub, size)
}

// stuckVerdict decides a delivery to a subscriber judged stuck.
func (c *Control) stuckVerdict(cl *mqtt.Client, sub *Subscriber, size int64) Verdict {
	if c.budget.overClient(sub, size) || c.budget.overTotal(size) {
		c.Stats.Refused.Add(1)
		if sub.overBudget.CompareAndSwap(false, true) {
			c.Stats.OverBudgetDisconnects.Add(1)
			return Disconnect
		}
		return Refuse
	}
	n, capacity := pending(cl)
	if n >= capacity || (c.InflightLimit > 0 && cl.State.Inflight.Len() >= c.InflightLimit) {
		c.Stats.Refused.Add(1)
		return Refuse
	}
	c.budget.add(sub, size)
	return Deliver
}

// wait holds the publisher until sub has room, or is judged stuck.
func (c *Control) wait(cl *mqtt.Client, sub *Subscriber, size int64) {
	start := time.Now()
	c.Stats.Waits.Add(1)
	defer func() { c.Stats.WaitNano.Add(uint64(time.Since(start))) }()
	var timeout *time.Timer
	defer func() {
		if timeout != nil {
			timeout.Stop()
		}
	}()
	eighths := newcomerEighths
	for {
		woken := sub.await()
		if !c.full(cl, sub, size, eighths) || cl.Closed() || sub.stuck.Load() {
			return
		}
		left := time.Duration(sub.progressAt.Load()+int64(c.StuckAfter)) - time.Duration(time.Now().UnixNano())
		if left <= 0 {
			if sub.stuck.CompareAndSwap(false, true) {
				c.Stats.Stuck.Add(1)
			}
			return
		}
		if timeout == nil {
			timeout = time.NewTimer(left)
		} else {
			timeout.Reset(left)
		}
		select {
		case <-woken:
			// A publisher that waited may use the room up to seven eighths,
			// which newcomers may not: otherwise it could lose the race for
			// room to the others again and again.
			eighths = waiterEighths
		case <-timeout.C:
		}
	}
}

// progress records headway: the subscriber is not stuck, and waiting
// publishers go on once there is room.
func (c *Control) progress(cl *mqtt.Client, sub *Subscriber) {
	c.resync(cl, sub)
	sub.progressAt.Store(time.Now().UnixNano())
	if sub.stuck.Load() {
		sub.stuck.Store(false)
	}
	if sub.waiting.Load() && !c.full(cl, sub, 0, wakeEighths) {
		sub.wake()
	}
}

// AfterWrite is called on cl's write goroutine after each packet it wrote;
// released is the bytes of queue the packet leaves (see Released).
func (c *Control) AfterWrite(cl *mqtt.Client, sub *Subscriber, released int64) {
	c.budget.release(sub, released)
	c.progress(cl, sub)
}

// AfterAck is called on cl's read goroutine when it acknowledged a message
// of released bytes (PUBACK, or PUBREC for QoS 2).
func (c *Control) AfterAck(cl *mqtt.Client, sub *Subscriber, released int64) {
	c.budget.release(sub, released)
	c.progress(cl, sub)
}

// Release lets every publisher waiting for cl go: it disconnected.
func (c *Control) Release(sub *Subscriber) {
	if sub.waiting.Load() {
		sub.wake()
	}
}
