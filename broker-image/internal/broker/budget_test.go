package broker_test

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

// Byte budgets: what the broker holds for one subscriber, and for all, is
// bounded in bytes, not only in messages.

const bigMessage = 60_000 // bytes of payload; testConfig's packets are at most 64 KiB

// publishBig logs in as alice and publishes n QoS 0 messages of bigMessage
// bytes to topic.
func publishBig(t *testing.T, addr, topic string, n int) {
	t.Helper()
	conn := rawLogin(t, addr, "big-publisher", "alice", alicePassword)
	w := bufio.NewWriterSize(conn, 256<<10)
	payload := make([]byte, bigMessage)
	for i := range n {
		copy(payload, fmt.Sprintf("%d ", i))
		if _, err := w.Write(encodePublish(nil, 0, 0, topic, payload)); err != nil {
			t.Fatalf("publishing: %v", err)
		}
	}
	if err := w.Flush(); err != nil {
		t.Fatalf("publishing: %v", err)
	}
}

// quietBroker has the brokers the test starts log at info, as in
// production: at debug mochi logs every message it does not deliver, with
// its payload, and the test keeps the log.
func quietBroker(t *testing.T) {
	brokerLogLevel = slog.LevelInfo
	t.Cleanup(func() { brokerLogLevel = slog.LevelDebug })
}

// heapInUse is the heap in use after a collection.
func heapInUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// A subscriber that stops reading while 30 MB of large messages arrive is
// disconnected once it holds more than its budget (1 MiB here); the broker
// never holds much more for it, and a subscriber that reads gets every
// message. (Before, the stuck one held up to a thousand copies.)
func TestStuckSubscriberOverByteBudgetIsDisconnected(t *testing.T) {
	quietBroker(t)
	cfg := testConfig(t.TempDir())
	const budget = 1 << 20
	cfg.Limits.MaxQueuedBytesPerClient = budget
	tb := startBroker(t, cfg, testBundle(t, 1))
	stuck, _ := smallBufferSubscriber(t, tb.tcp, "stuck", "devices/alice/#") // does not read
	_, r := smallBufferSubscriber(t, tb.tcp, "reader", "devices/alice/#")
	before := heapInUse()
	const n = 500
	var got atomic.Int64
	done := make(chan error, 1)
	go func() { done <- countPublishes(r, n, &got, nil) }()
	publishBig(t, tb.tcp, "devices/alice/big", n)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("the reader failed after %d messages: %v", got.Load(), err)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("the reader got %d of %d messages after 30 s", got.Load(), n)
	}
	if grown := int64(heapInUse()) - int64(before); grown > 8<<20 {
		t.Errorf("the heap grew by %d MiB with one stuck subscriber, want at most 8 MiB", grown>>20)
	}
	st := tb.Stats()
	if st.OverBudgetDisconnects != 1 {
		t.Errorf("subscribers disconnected over budget: %d, want 1", st.OverBudgetDisconnects)
	}
	// The stuck client finds its connection closed once it reads again.
	_ = stuck.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.Copy(io.Discard, stuck); err != nil {
		t.Errorf("the stuck subscriber's connection was not closed: %v", err)
	}
}

// An offline persistent session keeps what fits its budget, oldest first,
// and further messages for it are dropped and counted.
func TestOfflineSessionOverByteBudgetDropsNewest(t *testing.T) {
	cfg := testConfig(t.TempDir())
	const budget = 1 << 20
	cfg.Limits.MaxQueuedBytesPerClient = budget
	tb := startBroker(t, cfg, testBundle(t, 1))
	sub := persistentLogin(t, tb.tcp)
	rawSubscribe(t, sub, "devices/alice/#", 1)
	_ = sub.Close()
	deadline := time.Now().Add(5 * time.Second)
	for tb.Stats().ClientsConnected != 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	const n = 40
	pub := rawLogin(t, tb.tcp, "big-qos1", "alice", alicePassword)
	if err := publishWindowed(pub, "devices/alice/big", n, 8, bigMessage); err != nil {
		t.Fatal(err)
	}
	st := tb.Stats()
	if st.OfflineDropped == 0 {
		t.Fatalf("nothing dropped for an offline session sent %d MB with a 1 MiB budget", n*bigMessage>>20)
	}
	sub = persistentLogin(t, tb.tcp)
	first, count := -1, 0
	for {
		_ = sub.SetReadDeadline(time.Now().Add(time.Second))
		p, err := readBigPacket(sub)
		if err != nil {
			break
		}
		if p[0]>>4 == 3 {
			count++
			if first < 0 {
				first = messageNumber(p)
			}
		}
	}
	if max := budget/bigMessage + 1; count == 0 || count > max {
		t.Errorf("the resumed session got %d messages, want 1 to %d", count, max)
	}
	if first != 0 {
		t.Errorf("the first message kept is number %d, want the oldest (0)", first)
	}
	if uint64(count)+st.OfflineDropped != n {
		t.Errorf("kept %d + dropped %d, want %d", count, st.OfflineDropped, n)
	}
}

// persistentLogin logs in as bob with client ID "offline-bob" and clean
// session off.
func persistentLogin(t *testing.T, addr string) net.Conn {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	_, _ = conn.Write(mqttConnect("offline-bob", "bob", bobPassword, false))
	if p := readPacket(t, conn); p[0] != 0x20 || p[len(p)-1] != 0 {
		t.Fatalf("CONNACK %x", p)
	}
	return conn
}

// readBigPacket reads one whole packet of any size and returns its first
// byte followed by its body.
func readBigPacket(conn net.Conn) ([]byte, error) {
	head := make([]byte, 1)
	if _, err := io.ReadFull(conn, head); err != nil {
		return nil, err
	}
	length, mult := 0, 1
	for {
		b := make([]byte, 1)
		if _, err := io.ReadFull(conn, b); err != nil {
			return nil, err
		}
		length += int(b[0]&0x7f) * mult
		mult *= 128
		if b[0]&0x80 == 0 {
			break
		}
	}
	body := make([]byte, length)
	if _, err := io.ReadFull(conn, body); err != nil {
		return nil, err
	}
	return append(head, body...), nil // without the remaining length
}

// messageNumber is the number publishWindowed wrote at the start of a QoS
// 1 PUBLISH's payload ("topic/N ").
func messageNumber(p []byte) int {
	body := p[1:]
	tl := int(body[0])<<8 | int(body[1])
	var topic string
	var n int
	_, _ = fmt.Sscanf(string(body[2+tl+2:2+tl+2+40]), "%s", &topic)
	for i := len(topic) - 1; i >= 0; i-- {
		if topic[i] == '/' {
			_, _ = fmt.Sscanf(topic[i+1:], "%d", &n)
			break
		}
	}
	return n
}
