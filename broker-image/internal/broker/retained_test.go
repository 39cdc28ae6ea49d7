package broker_test

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// Retained messages are bounded in count and bytes: past either, a
// retained PUBLISH is delivered but not kept, and counted; replacing and
// clearing stay possible.
func TestRetainedMessagesAreBounded(t *testing.T) {
	cfg := testConfig(t.TempDir())
	cfg.Limits.MaxRetainedMessages = 5
	cfg.Limits.MaxRetainedBytes = 4 << 10
	tb := startBroker(t, cfg, testBundle(t, 1))
	alice := mustV5(t, tb.tcp, "alice", alicePassword)
	live := mustV5(t, tb.tcp, "bob", bobPassword)
	live.subscribe(t, "devices/alice/#", 1)
	for i := range 8 {
		if err := alice.publish(t, fmt.Sprintf("devices/alice/r%d", i), fmt.Sprintf("reading-%d", i), 1, true); err != nil {
			t.Fatal(err)
		}
		live.expect(t, fmt.Sprintf("reading-%d", i)) // delivered, kept or not
	}
	s := tb.Stats()
	if s.RetainedKept != 5 || s.RetainedRefused != 3 {
		t.Fatalf("%d retained, %d refused; want 5 and 3", s.RetainedKept, s.RetainedRefused)
	}
	// Replacing one that is kept works while full; clearing makes room.
	if err := alice.publish(t, "devices/alice/r0", "reading-0b", 1, true); err != nil {
		t.Fatal(err)
	}
	if err := alice.publish(t, "devices/alice/r1", "", 1, true); err != nil {
		t.Fatal(err)
	}
	if err := alice.publish(t, "devices/alice/r7", "reading-7b", 1, true); err != nil {
		t.Fatal(err)
	}
	if s := tb.Stats(); s.RetainedKept != 5 || s.RetainedRefused != 3 {
		t.Errorf("after replace, clear and a new one: %d retained, %d refused; want 5 and 3", s.RetainedKept, s.RetainedRefused)
	}
	late := mustV5(t, tb.tcp, "bob", bobPassword)
	late.subscribe(t, "devices/alice/#", 1)
	late.expectAll(t, "reading-0b", "reading-2", "reading-3", "reading-4", "reading-7b")

	// Bytes: one message that alone is over the budget is not kept.
	if err := alice.publish(t, "devices/alice/big", strings.Repeat("x", 5<<10), 1, true); err != nil {
		t.Fatal(err)
	}
	if s := tb.Stats(); s.RetainedRefused != 4 {
		t.Errorf("a retained message over the byte budget was kept (%d refused)", s.RetainedRefused)
	}
	if !strings.Contains(tb.logs.String(), "retained message not kept") {
		t.Error("refusals were not logged")
	}
}

// Topic names and filters over the length or level limits are refused.
func TestTopicLimits(t *testing.T) {
	cfg := testConfig(t.TempDir())
	cfg.Limits.MaxTopicLevels = 8
	cfg.Limits.MaxTopicLength = 256
	tb := startBroker(t, cfg, testBundle(t, 1))
	bob := mustV5(t, tb.tcp, "bob", bobPassword)
	if code := bob.subscribe(t, "devices/alice/"+strings.Repeat("x/", 10)+"#", 1); code < 0x80 {
		t.Errorf("a filter of 13 levels was granted (0x%02x) with a limit of 8", code)
	}
	if code := bob.subscribe(t, "devices/alice/"+strings.Repeat("y", 300), 1); code < 0x80 {
		t.Errorf("a 314-byte filter was granted (0x%02x) with a limit of 256", code)
	}
	if code := bob.subscribe(t, "devices/alice/#", 1); code != 1 {
		t.Errorf("an ordinary filter was refused: 0x%02x", code)
	}
	alice := mustV5(t, tb.tcp, "alice", alicePassword)
	_ = alice.publish(t, "devices/alice/"+strings.Repeat("z", 300), "long", 0, false)
	select {
	case d := <-alice.disconnect:
		if d.ReasonCode != 0x90 {
			t.Errorf("disconnected with 0x%02x, want 0x90 (topic name invalid)", d.ReasonCode)
		}
	case <-alice.closed:
		t.Error("closed without a DISCONNECT")
	}
	if n := tb.Stats().TopicTooLong; n != 3 {
		t.Errorf("mqtt_topic_refused_total = %d, want 3", n)
	}
}

// The book of retained messages is rebuilt from the store at start: a full
// broker is still full after a restart.
func TestRetainedLimitHoldsAcrossRestarts(t *testing.T) {
	cfg := testConfig(t.TempDir())
	cfg.Storage.Persistent = true
	cfg.Limits.MaxRetainedMessages = 3
	tb := startBroker(t, cfg, testBundle(t, 1))
	alice := mustV5(t, tb.tcp, "alice", alicePassword)
	for i := range 3 {
		if err := alice.publish(t, fmt.Sprintf("devices/alice/r%d", i), "kept", 1, true); err != nil {
			t.Fatal(err)
		}
	}
	next := restart(t, tb)
	if n := next.Stats().RetainedKept; n != 3 {
		t.Fatalf("%d retained messages after the restart, want 3", n)
	}
	alice = mustV5(t, next.tcp, "alice", alicePassword)
	if err := alice.publish(t, "devices/alice/r9", "one too many", 1, true); err != nil {
		t.Fatal(err)
	}
	if s := next.Stats(); s.RetainedKept != 3 || s.RetainedRefused != 1 {
		t.Errorf("after the restart: %d kept, %d refused; want 3 and 1", s.RetainedKept, s.RetainedRefused)
	}
}

// expectAll waits for messages with all of the payloads, in any order (as
// retained messages arrive), and fails on any other.
func (c *v5) expectAll(t *testing.T, payloads ...string) {
	t.Helper()
	want := map[string]bool{}
	for _, p := range payloads {
		want[p] = true
	}
	deadline := time.After(3 * time.Second)
	for len(want) > 0 {
		select {
		case m := <-c.messages:
			if !want[string(m.Payload)] {
				t.Fatalf("unexpected message %q", m.Payload)
			}
			delete(want, string(m.Payload))
		case <-deadline:
			t.Fatalf("messages not received: %v", want)
		}
	}
}
