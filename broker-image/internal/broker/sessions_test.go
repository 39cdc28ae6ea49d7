package broker_test

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/mqtt-operator/mqtt-operator/internal/brokerconfig"
)

// offlineSessionWithMessage leaves alice's session "dev-1" offline with a
// QoS 1 message queued for it (bob's status, which alice may read).
func offlineSessionWithMessage(t *testing.T, tb *testBroker, payload string) {
	t.Helper()
	alice, err := connectV5(t, tb.tcp, v5opts{user: "alice", password: alicePassword, clientID: "dev-1", sessionExpiry: 600, keepAlive: 30})
	if err != nil {
		t.Fatal(err)
	}
	if code := alice.subscribe(t, "devices/+/status", 1); code != 1 {
		t.Fatalf("subscription refused: 0x%02x", code)
	}
	_ = alice.Disconnect(&paho.Disconnect{})
	waitOffline(t, tb, "dev-1")
	bob := mustV5(t, tb.tcp, "bob", bobPassword)
	if err := bob.publish(t, "devices/bob/status", payload, 1, false); err != nil {
		t.Fatal(err)
	}
	_ = bob.Disconnect(&paho.Disconnect{})
}

// Another user connecting with the client ID of an offline session neither
// resumes it nor receives its queued messages, and the session stays its
// owner's, messages included.
func TestOfflineSessionOfAnotherUserCannotBeTaken(t *testing.T) {
	tb := startBroker(t, testConfig(t.TempDir()), testBundle(t, 1))
	offlineSessionWithMessage(t, tb, "queued-for-alice")

	_, err := connectV5(t, tb.tcp, v5opts{user: "bob", password: bobPassword, clientID: "dev-1", sessionExpiry: 600, keepAlive: 30})
	var refused *refusedError
	if !errors.As(err, &refused) || refused.code != 0x85 {
		t.Fatalf("bob connecting with alice's offline client ID: got %v, want CONNACK 0x85 (client identifier not valid)", err)
	}
	// The same with MQTT 3.1.1: return code 2 (identifier rejected).
	if c, err := connectV3(tb.tcp, "bob", bobPassword, "dev-1"); err == nil {
		c.Disconnect(0)
		t.Fatal("bob resumed alice's offline session with MQTT 3.1.1")
	} else if err.Error() != "identifier rejected" {
		t.Errorf("MQTT 3.1.1 refusal: %v, want identifier rejected", err)
	}
	if n := tb.Stats().ClientIDRefused; n != 2 {
		t.Errorf("mqtt_client_id_refused_total = %d, want 2", n)
	}

	alice, err := connectV5(t, tb.tcp, v5opts{user: "alice", password: alicePassword, clientID: "dev-1", sessionExpiry: 600, keepAlive: 30})
	if err != nil {
		t.Fatal(err)
	}
	if !alice.connack.SessionPresent {
		t.Fatal("alice's session was lost to the refused attempts")
	}
	alice.expect(t, "queued-for-alice")
}

// A user removed from the bundle loses its sessions: the offline one at
// once, with its queue, and its client ID is free for others.
func TestRemovedUsersSessionsAreDeleted(t *testing.T) {
	tb := startBroker(t, testConfig(t.TempDir()), testBundle(t, 1))
	offlineSessionWithMessage(t, tb, "queued-for-alice")
	// alice's second, live session is revoked and then deleted as it ends.
	live, err := connectV5(t, tb.tcp, v5opts{user: "alice", password: alicePassword, clientID: "dev-2", sessionExpiry: 600, keepAlive: 30})
	if err != nil {
		t.Fatal(err)
	}
	live.subscribe(t, "devices/+/status", 1)

	withoutAlice := testBundle(t, 2)
	withoutAlice.Users = slices.DeleteFunc(withoutAlice.Users, func(u brokerconfig.User) bool { return u.Username == "alice" })
	tb.apply(t, withoutAlice)

	waitGone(t, tb, "dev-1")
	waitGone(t, tb, "dev-2")
	if n := tb.Stats().SessionsDeleted; n != 2 {
		t.Errorf("mqtt_sessions_deleted_total = %d, want 2", n)
	}
	bob, err := connectV5(t, tb.tcp, v5opts{user: "bob", password: bobPassword, clientID: "dev-1", sessionExpiry: 600, keepAlive: 30})
	if err != nil {
		t.Fatalf("the removed user's client ID is still held: %v", err)
	}
	if bob.connack.SessionPresent {
		t.Error("bob was handed the removed user's session")
	}
}

// A user removed while the broker was down: its stored session is deleted
// when the broker starts with the new bundle, and stays deleted.
func TestStoredSessionOfARemovedUserIsDeletedAtStart(t *testing.T) {
	tb := persistentConfig(t)
	offlineSessionWithMessage(t, tb, "queued-for-alice")
	withoutAlice := testBundle(t, 2)
	withoutAlice.Users = slices.DeleteFunc(withoutAlice.Users, func(u brokerconfig.User) bool { return u.Username == "alice" })

	drain(t, tb)
	next := startBroker(t, tb.cfg, withoutAlice)
	if _, ok := next.Server().Clients.Get("dev-1"); ok {
		t.Fatal("the removed user's stored session was restored")
	}
	drain(t, next)
	again := startBroker(t, tb.cfg, withoutAlice)
	if _, ok := again.Server().Clients.Get("dev-1"); ok {
		t.Fatal("the removed user's session came back from the store after another restart")
	}
}

func waitGone(t *testing.T, tb *testBroker, clientID string) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for {
		if _, ok := tb.Server().Clients.Get(clientID); !ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("session %s still exists", clientID)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
