package store

import (
	"bytes"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// FuzzStoreRoundTrip stores a retained message, a resumable session and one
// of its subscriptions built from arbitrary topic, client ID, filter and
// payload (long ones up to MQTT's 64 KiB included), reads them back as a
// restart would, deletes them and checks they are gone: every key the store
// builds fits bbolt, deletes find what puts wrote, and what is read back is
// what was stored. Arbitrary bytes written where records live must be
// skipped on load, never panic.
//
//	go test ./broker-image/internal/store -run '^$' -fuzz FuzzStoreRoundTrip -fuzztime 10m
func FuzzStoreRoundTrip(f *testing.F) {
	h, err := Open(Options{Path: filepath.Join(f.TempDir(), "fuzz.db"), Log: slog.New(slog.NewTextHandler(io.Discard, nil))}, nil)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = h.Stop() })
	f.Add("devices/a/status", "device-a", "devices/+/status", []byte("online"), []byte(`{"id":"x"}`), uint16(0))
	f.Add("t", "c", "#", []byte{}, []byte{0xff, 0x00}, uint16(40<<10))
	f.Add("a/b", "", "a/#", []byte("p"), []byte(`{"t":"retain","payload":"AA=="}`), uint16(65535-3))
	f.Fuzz(func(t *testing.T, topic, clientID, filter string, payload, raw []byte, longBy uint16) {
		// MQTT strings are at most 65,535 bytes; longBy reaches the lengths
		// the fuzzer would not find on its own.
		pad := strings.Repeat("x", int(longBy))
		topic, clientID, filter = clip(topic+pad), clip(clientID+pad), clip(filter+pad)
		for _, s := range []string{topic, clientID, filter} {
			if s == "" || !utf8.ValidString(s) || strings.IndexByte(s, 0) >= 0 {
				return // mochi's decoder refuses these ([MQTT-1.5.4-1]) and assigns empty client IDs one
			}
		}
		before := h.Counters.WritesRefused.Load()

		h.OnRetainMessage(nil, packets.Packet{TopicName: topic, Payload: payload, FixedHeader: packets.FixedHeader{Type: packets.Publish, Retain: true}}, 1)
		cl := &mqtt.Client{ID: clientID}
		cl.Properties.ProtocolVersion = 5
		cl.Properties.Props.SessionExpiryInterval = 60
		h.OnSessionEstablished(cl, packets.Packet{})
		h.OnSubscribed(cl, packets.Packet{Filters: packets.Subscriptions{{Filter: filter, Qos: 1}}}, []byte{1})
		flush(t, h)
		if n := h.Counters.WritesRefused.Load() - before; n != 0 {
			t.Fatalf("%d writes refused (topic %d bytes, client ID %d, filter %d)", n, len(topic), len(clientID), len(filter))
		}
		if !hasRetained(t, h, topic, payload) || !hasClient(t, h, clientID) || !hasSubscription(t, h, clientID, filter) {
			t.Fatal("a stored record did not read back as written")
		}

		h.OnRetainMessage(nil, packets.Packet{TopicName: topic}, -1)
		h.forgetClient(clientID)
		flush(t, h)
		if hasRetained(t, h, topic, nil) || hasClient(t, h, clientID) || hasSubscription(t, h, clientID, filter) {
			t.Fatal("a deleted record is still stored: its delete missed the key its put wrote")
		}

		// Whatever a damaged file holds, loading skips it.
		for _, b := range allBuckets {
			if err := h.w.write(op{bucket: b, key: []byte("fuzz-raw"), val: raw}); err != nil && len(raw) > 0 {
				t.Fatal(err)
			}
		}
		if _, err := h.StoredClients(); err != nil {
			t.Fatal(err)
		}
		_, _ = h.StoredSubscriptions()
		_, _ = h.StoredInflightMessages()
		_, _ = h.StoredRetainedMessages()
		for _, b := range allBuckets {
			_ = h.w.write(op{bucket: b, key: []byte("fuzz-raw")})
		}
	})
}

func clip(s string) string { return s[:min(len(s), 65535)] }

// flush waits until everything queued before it is committed.
func flush(t *testing.T, h *Hook) {
	if err := h.w.write(op{bucket: bucketPending, key: []byte("flush")}); err != nil {
		t.Fatal(err)
	}
}

// hasRetained reports whether the store holds a retained message on topic
// (with payload, unless payload is nil).
func hasRetained(t *testing.T, h *Hook, topic string, payload []byte) bool {
	msgs, err := h.StoredRetainedMessages()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range msgs {
		if m.TopicName == topic && (payload == nil || bytes.Equal(m.Payload, payload)) {
			return true
		}
	}
	return false
}

func hasClient(t *testing.T, h *Hook, id string) bool {
	clients, err := h.StoredClients()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range clients {
		if c.ID == id {
			return true
		}
	}
	return false
}

func hasSubscription(t *testing.T, h *Hook, id, filter string) bool {
	subs, err := h.StoredSubscriptions()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range subs {
		if s.Client == id && s.Filter == filter {
			return true
		}
	}
	return false
}
