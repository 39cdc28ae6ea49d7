// Package flow slows a publisher down, briefly, while a subscriber's queue of
// pending writes is nearly full, so a burst is delivered rather than dropped.
//
// mochi hands each delivery to the subscriber's write goroutine through a
// bounded queue (MaximumClientWritesPending) and drops the message when the
// queue is full. The queue fills not only for subscribers on slow networks:
// when many publishers feed one subscriber, their reader goroutines share
// the CPU with that subscriber's single writer, out-produce it, and the
// broker threw away messages it had the capacity to deliver a moment later
// (a third of a QoS 0 fan-in burst on two cores).
//
// So before a delivery to a subscriber whose queue is at least three
// quarters full, the publisher's goroutine waits, giving its CPU to the
// writer, until the writer has taken the queue down to half. It waits as
// long as the writer makes headway: at least a sixteenth of the queue in
// every MaxWait. A writer that does not is held up by its client (a slow
// network, a client that stopped reading), not by the CPU: for the next
// SlowFor nobody waits for that subscriber and mochi drops what does not
// fit, as before, so one slow subscriber holds its publishers back for at
// most MaxWait a second.
package flow

import (
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
)

// Defaults for Control.
const (
	MaxWait = 20 * time.Millisecond
	SlowFor = time.Second
)

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

// Subscriber is what flow remembers about one client.
type Subscriber struct {
	slowUntil atomic.Int64  // unix nanoseconds; 0 = not slow
	waiting   atomic.Bool   // a publisher waits for room
	written   atomic.Uint64 // packets the client's writer wrote
	mu        sync.Mutex
	room      chan struct{} // closed when there is room again
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

// Stats count what flow did.
type Stats struct {
	Waits    atomic.Uint64 // deliveries that waited for room
	WaitNano atomic.Uint64 // time spent waiting, in total
	Slow     atomic.Uint64 // waits that ran out: the subscriber was marked slow
}

// Control decides when a delivery waits. The zero value never waits; New
// returns one with the defaults.
type Control struct {
	MaxWait, SlowFor time.Duration
	Stats            Stats
}

// New returns a Control with the package defaults, or one that never waits
// when mochi's queue cannot be seen.
func New() *Control {
	if !Available() {
		return &Control{}
	}
	return &Control{MaxWait: MaxWait, SlowFor: SlowFor}
}

// BeforeDelivery is called on the publisher's goroutine just before mochi
// queues a message for cl; it returns once there is room, or the wait ran
// out. The wake-up comes from the subscriber's writer (AfterWrite), not from
// polling: on a busy machine the Go runtime fires timers late, by tens of
// milliseconds, while the writer is running anyway.
func (c *Control) BeforeDelivery(cl *mqtt.Client, sub *Subscriber) {
	if c.MaxWait <= 0 || sub == nil {
		return
	}
	n, capacity := pending(cl)
	limit := capacity * 3 / 4
	if capacity == 0 || n < limit {
		return
	}
	start := time.Now()
	if until := sub.slowUntil.Load(); until != 0 && start.UnixNano() < until {
		return
	}
	c.Stats.Waits.Add(1)
	timeout := time.NewTimer(c.MaxWait)
	defer timeout.Stop()
	written := sub.written.Load()
wait:
	for {
		woken := sub.await()
		if n, _ = pending(cl); n < limit || cl.Closed() {
			break
		}
		select {
		case <-woken:
			// A publisher that waited may use the room up to seven eighths,
			// which newcomers may not: otherwise it could lose the race for
			// room to the others again and again.
			limit = capacity * 7 / 8
		case <-timeout.C:
			// The writer is slow, not merely starved of CPU, when it took
			// less than a sixteenth of the queue off in MaxWait.
			if now := sub.written.Load(); now-written >= uint64(capacity/16) {
				written = now
				timeout.Reset(c.MaxWait)
				continue
			}
			sub.slowUntil.Store(time.Now().Add(c.SlowFor).UnixNano())
			c.Stats.Slow.Add(1)
			break wait
		}
	}
	c.Stats.WaitNano.Add(uint64(time.Since(start)))
}

// AfterWrite is called on cl's write goroutine after each packet it wrote:
// once the queue is down to half, waiting publishers go on.
func (c *Control) AfterWrite(cl *mqtt.Client, sub *Subscriber) {
	sub.written.Add(1)
	if !sub.waiting.Load() {
		return
	}
	if n, capacity := pending(cl); n <= capacity/2 {
		sub.wake()
	}
}

// Release lets every publisher waiting for cl go: it disconnected.
func (c *Control) Release(sub *Subscriber) {
	if sub.waiting.Load() {
		sub.wake()
	}
}
