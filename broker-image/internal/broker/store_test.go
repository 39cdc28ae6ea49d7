package broker_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// restart drains tb and starts a broker with the same configuration and
// storage directory.
func restart(t *testing.T, tb *testBroker) *testBroker {
	t.Helper()
	drain(t, tb)
	return startBroker(t, tb.cfg, testBundle(t, 1))
}

// drain stops tb, closing its store.
func drain(t *testing.T, tb *testBroker) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	tb.Drain(ctx, 0)
}

func persistentConfig(t *testing.T) *testBroker {
	cfg := testConfig(t.TempDir())
	cfg.Storage.Persistent = true
	return startBroker(t, cfg, testBundle(t, 1))
}

// What the store keeps across a restart: resumable sessions with their
// granted subscriptions; not clean sessions, not refused subscriptions, not
// a session its client ended with a clean start.
func TestStoreKeepsOnlyResumableState(t *testing.T) {
	tb := persistentConfig(t)
	// A resumable session with one granted and one refused subscription.
	bob, err := connectV5(t, tb.tcp, v5opts{user: "bob", password: bobPassword, clientID: "bob-keep", sessionExpiry: 600, keepAlive: 30})
	if err != nil {
		t.Fatal(err)
	}
	bob.subscribe(t, "devices/alice/#", 1)
	if code := bob.subscribe(t, "secrets/#", 1); code < 0x80 {
		t.Fatalf("subscription to a denied filter granted: 0x%02x", code)
	}
	_ = bob.Disconnect(&paho.Disconnect{})
	// A clean session, and a resumable one that a clean start then ends.
	clean, err := connectV5(t, tb.tcp, v5opts{user: "alice", password: alicePassword, clientID: "alice-clean", keepAlive: 30})
	if err != nil {
		t.Fatal(err)
	}
	clean.subscribe(t, "commands/alice/#", 1)
	_ = clean.Disconnect(&paho.Disconnect{})
	gone, err := connectV5(t, tb.tcp, v5opts{user: "alice", password: alicePassword, clientID: "alice-gone", sessionExpiry: 600, keepAlive: 30})
	if err != nil {
		t.Fatal(err)
	}
	gone.subscribe(t, "commands/alice/#", 1)
	_ = gone.Disconnect(&paho.Disconnect{})
	waitOffline(t, tb, "alice-gone")
	again, err := connectV5(t, tb.tcp, v5opts{user: "alice", password: alicePassword, clientID: "alice-gone", cleanStart: true, keepAlive: 30})
	if err != nil {
		t.Fatal(err)
	}
	_ = again.Disconnect(&paho.Disconnect{})
	waitOffline(t, tb, "alice-gone")

	tb2 := restart(t, tb)
	cl, ok := tb2.Server().Clients.Get("bob-keep")
	if !ok {
		t.Fatal("the resumable session was not restored")
	}
	subs := cl.State.Subscriptions.GetAll()
	if _, ok := subs["devices/alice/#"]; !ok || len(subs) != 1 {
		t.Errorf("restored subscriptions %v, want only the granted devices/alice/#", subs)
	}
	for _, id := range []string{"alice-clean", "alice-gone"} {
		if _, ok := tb2.Server().Clients.Get(id); ok {
			t.Errorf("session %s was restored, but it ended with its connection", id)
		}
	}
	if n := tb2.Stats().Subscriptions; n != 1 {
		t.Errorf("%d subscriptions after restart, want 1", n)
	}
}

// A retained message that is cleared (empty payload) stays cleared after a
// restart, and the one still retained is delivered.
func TestStoreRetainedClearSurvivesRestart(t *testing.T) {
	tb := persistentConfig(t)
	alice := mustV5(t, tb.tcp, "alice", alicePassword)
	if err := alice.publish(t, "devices/alice/status", "online", 1, true); err != nil {
		t.Fatal(err)
	}
	if err := alice.publish(t, "devices/alice/status", "", 1, true); err != nil { // clears it
		t.Fatal(err)
	}
	if err := alice.publish(t, "devices/alice/model", "v2", 1, true); err != nil {
		t.Fatal(err)
	}
	tb2 := restart(t, tb)
	n := 0
	for topic := range tb2.Server().Topics.Retained.GetAll() {
		if !strings.HasPrefix(topic, "$SYS") {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d retained messages after restart, want 1 (the cleared one must stay cleared)", n)
	}
	viewer := mustV5(t, tb2.tcp, "bob", bobPassword)
	viewer.subscribe(t, "devices/alice/#", 1)
	viewer.expect(t, "v2")
}
