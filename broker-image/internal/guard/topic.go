package guard

import (
	"bytes"
	"unicode/utf8"
)

// A PUBLISH whose topic name is not valid UTF-8 or contains U+0000 is a
// malformed packet: mochi's decoder fails it and closes the connection
// without a word. MQTT 5 asks the server to say why first (DISCONNECT
// 0x81), but once mochi's decoder has failed no hook runs before the close.
// So the guard, which reads every frame anyway, checks each PUBLISH's topic
// name the way the decoder does, and when one fails the close that follows
// writes the DISCONNECT to an MQTT 5 client (conn.Close). Packets before it
// are processed and answered as usual; mochi reads nothing after it.

// topicCheck follows one PUBLISH's topic name across reads.
type topicCheck struct {
	active    bool // in a PUBLISH body, topic not yet checked
	lenBytes  uint8
	left      int
	buf       []byte // a topic split across reads; empty otherwise
	malformed bool   // a topic failed; stays set
}

func (t *topicCheck) begin() {
	t.active, t.lenBytes, t.left = true, 0, 0
}

// feed takes the next bytes of the PUBLISH body and returns how many of them
// belong to the topic name (with its length); the caller skips the rest.
func (t *topicCheck) feed(b []byte) int {
	n := 0
	for t.lenBytes < 2 && n < len(b) {
		t.left = t.left<<8 | int(b[n])
		t.lenBytes++
		n++
	}
	if t.lenBytes < 2 {
		return n
	}
	take := min(t.left, len(b)-n)
	chunk := b[n : n+take]
	n += take
	t.left -= take
	switch {
	case t.left == 0 && len(t.buf) == 0:
		t.check(chunk)
	case t.left == 0:
		t.check(append(t.buf, chunk...))
		t.buf = t.buf[:0]
		if cap(t.buf) > 4<<10 {
			t.buf = nil
		}
	default:
		t.buf = append(t.buf, chunk...)
	}
	return n
}

// end is called at the end of the PUBLISH frame: a topic that did not fit
// in it is malformed too.
func (t *topicCheck) end() {
	if t.active {
		t.malformed = true
		t.active = false
		t.buf = t.buf[:0]
	}
}

func (t *topicCheck) check(topic []byte) {
	t.active = false
	if !utf8.Valid(topic) || bytes.IndexByte(topic, 0) >= 0 { // as mochi's decoder: [MQTT-1.5.4-1] [MQTT-1.5.4-2]
		t.malformed = true
	}
}
