package guard

import (
	"bytes"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// recordingConn is a socket that records each Write as one system call
// would be, and serves reads from a channel.
type recordingConn struct {
	net.Conn // nil: only what is overridden is used
	mu       sync.Mutex
	writes   [][]byte
	reads    chan []byte
	closed   bool
}

func newRecordingConn() *recordingConn { return &recordingConn{reads: make(chan []byte, 16)} }

func (r *recordingConn) Read(p []byte) (int, error) {
	b, ok := <-r.reads
	if !ok {
		return 0, io.EOF
	}
	return copy(p, b), nil
}

func (r *recordingConn) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return 0, net.ErrClosed
	}
	r.writes = append(r.writes, bytes.Clone(p))
	return len(p), nil
}

func (r *recordingConn) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	return nil
}

func (r *recordingConn) SetWriteDeadline(time.Time) error { return nil }
func (r *recordingConn) SetReadDeadline(time.Time) error  { return nil }
func (r *recordingConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }

func (r *recordingConn) recorded() [][]byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([][]byte(nil), r.writes...)
}

func guarded(raw net.Conn) *conn {
	return &conn{Conn: raw, limits: NewLimits(1<<20, 10, time.Second), stats: &Stats{}}
}

var (
	puback  = []byte{0x40, 0x02, 0x00, 0x01}
	puback2 = []byte{0x40, 0x02, 0x00, 0x02}
	publish = []byte{0x30, 0x03, 0x00, 0x01, 't'}
)

// Three QoS 1 PUBLISHes arrive in one read; their PUBACKs leave in one write
// when the reader asks for more input, not in three.
func TestAcksOfOneReadLeaveInOneWrite(t *testing.T) {
	raw := newRecordingConn()
	c := guarded(raw)
	raw.reads <- bytes.Repeat([]byte{0x32, 0x05, 0x00, 0x01, 't', 0x00, 0x01}, 3)
	buf := make([]byte, 64)
	if _, err := c.Read(buf); err != nil {
		t.Fatal(err)
	}
	for _, ack := range [][]byte{puback, puback2, puback} {
		if _, err := c.Write(ack); err != nil {
			t.Fatal(err)
		}
	}
	if got := raw.recorded(); len(got) != 0 {
		t.Fatalf("acks written while the reader was busy: %d writes", len(got))
	}
	raw.reads <- []byte{0xc0, 0x00} // PINGREQ: the reader comes back
	if _, err := c.Read(buf); err != nil {
		t.Fatal(err)
	}
	got := raw.recorded()
	want := append(append(append([]byte(nil), puback...), puback2...), puback...)
	if len(got) != 1 || !bytes.Equal(got[0], want) {
		t.Fatalf("writes %x, want one write %x", got, want)
	}
}

// A reader that does not come back (a durable store waiting for fsync)
// still gets its acknowledgements out within maxHold.
func TestHeldAckLeavesWhenTheReaderStalls(t *testing.T) {
	raw := newRecordingConn()
	c := guarded(raw)
	raw.reads <- []byte{0x32, 0x05, 0x00, 0x01, 't', 0x00, 0x01}
	if _, err := c.Read(make([]byte, 64)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write(puback); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(raw.recorded()) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the held PUBACK was never written")
		}
		time.Sleep(time.Millisecond)
	}
	if got := raw.recorded(); len(got) != 1 || !bytes.Equal(got[0], puback) {
		t.Fatalf("writes %x, want %x", got, puback)
	}
}

// Deliveries are never held; one written while acks are held follows them in
// the same write, so the stream keeps the order of the Writes.
func TestPublishIsNotHeldAndKeepsTheOrder(t *testing.T) {
	raw := newRecordingConn()
	c := guarded(raw)
	if _, err := c.Write(publish); err != nil { // reader idle: straight out
		t.Fatal(err)
	}
	if got := raw.recorded(); len(got) != 1 {
		t.Fatalf("an idle connection's PUBLISH was not written at once: %x", got)
	}
	raw.reads <- []byte{0x32, 0x05, 0x00, 0x01, 't', 0x00, 0x01}
	if _, err := c.Read(make([]byte, 64)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write(puback); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write(publish); err != nil {
		t.Fatal(err)
	}
	// The PUBLISH went out before Write returned, after the PUBACK: in
	// the same write, unless the hold's timer (maxHold, 1 ms) flushed the
	// PUBACK first on a machine that starved the test of CPU.
	got := raw.recorded()
	want := append(append([]byte(nil), puback...), publish...)
	if len(got) < 2 || !bytes.Equal(bytes.Join(got[1:], nil), want) {
		t.Fatalf("writes %x, want the PUBACK then the PUBLISH %x", got, want)
	}
	if len(got) != 2 {
		t.Logf("the hold's timer fired before the PUBLISH: %d writes", len(got))
	}
}

// Close writes what is held (a DISCONNECT above all) before the socket goes.
func TestCloseWritesHeldBytesFirst(t *testing.T) {
	raw := newRecordingConn()
	c := guarded(raw)
	raw.reads <- []byte{0xc0, 0x00}
	if _, err := c.Read(make([]byte, 64)); err != nil {
		t.Fatal(err)
	}
	disconnect := []byte{0xe0, 0x01, 0x8e}
	if _, err := c.Write(disconnect); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if got := raw.recorded(); len(got) != 1 || !bytes.Equal(got[0], disconnect) {
		t.Fatalf("writes %x before close, want the DISCONNECT", got)
	}
	if _, err := c.Write(puback); err == nil {
		t.Fatal("a Write after Close succeeded")
	}
}

// Reads, held writes, deliveries and the timer from several goroutines: the
// race detector watches, and every byte arrives once and whole.
func TestHeldWritesUnderConcurrency(t *testing.T) {
	raw := newRecordingConn()
	c := guarded(raw)
	const rounds = 2000
	var wg sync.WaitGroup
	var writeMu sync.Mutex // mochi's client lock: one Write at a time
	wg.Add(2)
	go func() { // the reader: each read answered with an ack
		defer wg.Done()
		buf := make([]byte, 64)
		for range rounds {
			if _, err := c.Read(buf); err != nil {
				t.Error(err)
				return
			}
			writeMu.Lock()
			_, _ = c.Write(puback)
			writeMu.Unlock()
		}
	}()
	go func() { // the delivery goroutine
		defer wg.Done()
		for range rounds {
			writeMu.Lock()
			_, _ = c.Write(publish)
			writeMu.Unlock()
		}
	}()
	for range rounds {
		raw.reads <- []byte{0xc0, 0x00}
	}
	wg.Wait()
	deadline := time.Now().Add(5 * time.Second)
	for {
		var all []byte
		for _, w := range raw.recorded() {
			all = append(all, w...)
		}
		if len(all) == rounds*(len(puback)+len(publish)) {
			acks := bytes.Count(all, puback)
			if acks != rounds {
				t.Fatalf("%d PUBACKs in the stream, want %d", acks, rounds)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d bytes written, want %d", len(all), rounds*(len(puback)+len(publish)))
		}
		time.Sleep(time.Millisecond)
	}
}
