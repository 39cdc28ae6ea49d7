package broker_test

import (
	"bufio"
	"fmt"
	"net"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/mqtt-operator/mqtt-operator/broker-image/internal/broker"
	"github.com/mqtt-operator/mqtt-operator/broker-image/internal/flow"
)

// Flow control is about a subscriber's queue of pending writes. With the
// queue shrunk to 64 and the subscriber's socket buffer to a few KiB, a
// publisher writing flat out fills it at once.

func smallQueues(t *testing.T) {
	old := broker.ClientWritesPending
	broker.ClientWritesPending = 64
	t.Cleanup(func() { broker.ClientWritesPending = old })
}

// smallBufferSubscriber logs in as bob over MQTT 3.1.1 with a small receive buffer,
// subscribes to filter at QoS 0 and returns the connection, its reader
// positioned after the SUBACK.
func smallBufferSubscriber(t *testing.T, addr, clientID, filter string) (net.Conn, *bufio.Reader) {
	t.Helper()
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		return rc.Control(func(fd uintptr) { _ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
	}}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	_, _ = conn.Write(mqttConnect(clientID, "bob", bobPassword, true))
	if p := readPacket(t, conn); p[0] != 0x20 || p[len(p)-1] != 0 {
		t.Fatalf("CONNACK %x", p)
	}
	body := append([]byte{0, 1, 0, byte(len(filter))}, filter...)
	_, _ = conn.Write(append([]byte{0x82, byte(len(body) + 1)}, append(body, 0)...))
	if p := readPacket(t, conn); p[0] != 0x90 || p[len(p)-1] != 0 {
		t.Fatalf("SUBACK %x", p)
	}
	_ = conn.SetReadDeadline(time.Time{})
	return conn, bufio.NewReaderSize(conn, 16<<10)
}

// countPublishes reads PUBLISH packets from r until want arrived or reading
// fails; pause, when set, runs after each read of the socket.
func countPublishes(r *bufio.Reader, want int, count *atomic.Int64, pause func()) error {
	for count.Load() < int64(want) {
		head, err := r.ReadByte()
		if err != nil {
			return err
		}
		length, mult := 0, 1
		for {
			b, err := r.ReadByte()
			if err != nil {
				return err
			}
			length += int(b&0x7f) * mult
			mult *= 128
			if b&0x80 == 0 {
				break
			}
		}
		if _, err := r.Discard(length); err != nil {
			return err
		}
		if head>>4 == 3 {
			count.Add(1)
		}
		if pause != nil && r.Buffered() == 0 {
			pause()
		}
	}
	return nil
}

// burst is what publishFlat sends: 5,000 messages of 2 KB, 10 MB, more
// than the broker's socket send buffer can hold (4 MiB at most on Linux).
const burst = 5000

// publishFlat logs in as alice and writes n QoS 0 PUBLISHes of 2,000 bytes
// to topic as fast as the socket takes them.
func publishFlat(t *testing.T, addr, topic string, n int) {
	t.Helper()
	conn := rawPublish(t, addr, 0, 0, topic, "first")
	w := bufio.NewWriterSize(conn, 64<<10)
	for i := range n - 1 {
		body := append([]byte{0, byte(len(topic))}, topic...)
		body = fmt.Appendf(body, "%-2000d", i)
		// Remaining length in two bytes: 128 to 16,383.
		if _, err := w.Write(append([]byte{0x30, byte(len(body)&0x7f | 0x80), byte(len(body) >> 7)}, body...)); err != nil {
			t.Fatalf("publishing: %v", err)
		}
	}
	if err := w.Flush(); err != nil {
		t.Fatalf("publishing: %v", err)
	}
}

// burstReaches publishes a burst and fails unless the subscriber reading r
// gets all of it; pause is as for countPublishes.
func burstReaches(t *testing.T, tb *testBroker, r *bufio.Reader, pause func()) {
	t.Helper()
	var got atomic.Int64
	done := make(chan error, 1)
	go func() { done <- countPublishes(r, burst, &got, pause) }()
	publishFlat(t, tb.tcp, "devices/alice/burst", burst)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("the subscriber failed after %d messages: %v", got.Load(), err)
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("the subscriber got %d of %d messages after 60 s", got.Load(), burst)
	}
}

// A subscriber that reads more slowly than a publisher writes, but keeps
// reading, gets every message: the publisher is held back instead of its
// messages being dropped.
func TestSlowerSubscriberGetsEveryMessageOfABurst(t *testing.T) {
	smallQueues(t)
	tb := startBroker(t, testConfig(t.TempDir()), testBundle(t, 1))
	tb.Policy.Flow.StuckAfter = 10 * time.Second // headway, however slow, keeps it waiting
	_, r := smallBufferSubscriber(t, tb.tcp, "slow-reader", "devices/alice/#")
	burstReaches(t, tb, r, func() { time.Sleep(time.Millisecond) })
	st := tb.Stats()
	if st.MessagesDropped != 0 || st.FlowSlowSubscribers != 0 {
		t.Errorf("dropped %d, slow subscribers %d; want none", st.MessagesDropped, st.FlowSlowSubscribers)
	}
	if st.FlowWaits == 0 {
		t.Error("the publisher never waited: the test did not fill the queue")
	}
}

// A subscriber that stopped reading holds the publisher back once, for
// StuckAfter; then its full queue drops, and another subscriber of the same
// messages gets all of them.
func TestStuckSubscriberDoesNotHoldOthersBack(t *testing.T) {
	smallQueues(t)
	tb := startBroker(t, testConfig(t.TempDir()), testBundle(t, 1))
	tb.Policy.Flow.StuckAfter = 500 * time.Millisecond
	smallBufferSubscriber(t, tb.tcp, "stuck", "devices/alice/#") // never read
	_, r := smallBufferSubscriber(t, tb.tcp, "reader", "devices/alice/#")
	burstReaches(t, tb, r, nil)
	st := tb.Stats()
	if st.FlowSlowSubscribers != 1 {
		t.Errorf("slow subscribers %d, want 1 (the stuck one)", st.FlowSlowSubscribers)
	}
	if st.MessagesDropped+st.FlowRefused == 0 {
		t.Error("nothing dropped for the stuck subscriber")
	}
}

// A publisher waiting for a subscriber's queue goes on when that subscriber
// disconnects.
func TestDisconnectReleasesWaitingPublishers(t *testing.T) {
	smallQueues(t)
	tb := startBroker(t, testConfig(t.TempDir()), testBundle(t, 1))
	tb.Policy.Flow.StuckAfter = time.Hour
	stuck, _ := smallBufferSubscriber(t, tb.tcp, "stuck", "devices/alice/#")
	published := make(chan struct{})
	go func() { defer close(published); publishFlat(t, tb.tcp, "devices/alice/burst", burst) }()
	deadline := time.Now().Add(30 * time.Second)
	for tb.Stats().FlowWaits == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the publisher never waited")
		}
		time.Sleep(5 * time.Millisecond)
	}
	_ = stuck.Close()
	select {
	case <-published:
	case <-time.After(30 * time.Second):
		t.Fatal("the publisher was still held 30 s after the subscriber left")
	}
}

// flow reads mochi's unexported queue; an upgrade that renames it must fail
// here, not silently turn flow control off.
func TestFlowControlSeesMochisQueue(t *testing.T) {
	if !flow.Available() {
		t.Fatal("flow control cannot see mochi's per-client write queue (ClientState.outbound)")
	}
}
