package broker_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// MQTT allows topics and client IDs of 64 KiB, bbolt keys of 32 KiB. One
// retained message on a 40 KiB topic used to fail its write and roll back
// the whole batch with it: after a restart 127 of 200 ordinary retained
// messages were left. Every one, the long topic's and a session with a
// 40 KiB client ID included, must survive a restart.
func TestStoreKeepsEverythingAroundOverlongKeys(t *testing.T) {
	// Limits that let such keys in: the defaults (a 16 KiB CONNECT, 4 KiB
	// topics) refuse them at the protocol layer.
	cfg := testConfig(t.TempDir())
	cfg.Storage.Persistent = true
	cfg.Limits.MaxConnectPacketSize = 60 << 10
	cfg.Limits.MaxTopicLength = 60 << 10
	tb := startBroker(t, cfg, testBundle(t, 1))
	longID := "alice-" + strings.Repeat("i", 40<<10)
	session, err := connectV5(t, tb.tcp, v5opts{user: "alice", password: alicePassword, clientID: longID, sessionExpiry: 600, keepAlive: 30})
	if err != nil {
		t.Fatal(err)
	}
	session.subscribe(t, "commands/alice/#", 1)
	_ = session.Disconnect(&paho.Disconnect{})
	waitOffline(t, tb, longID)

	alice := mustV5(t, tb.tcp, "alice", alicePassword)
	longTopic := "devices/alice/" + strings.Repeat("t", 40<<10)
	const ordinary = 200
	for i := range ordinary { // QoS 0: queued for the store in a burst, as one batch
		if i == ordinary/2 {
			if err := alice.publish(t, longTopic, "long", 0, true); err != nil {
				t.Fatal(err)
			}
		}
		if err := alice.publish(t, fmt.Sprintf("devices/alice/r%03d", i), "v", 0, true); err != nil {
			t.Fatal(err)
		}
	}
	waitRetained(t, tb, ordinary+1)

	tb2 := restart(t, tb)
	retained := tb2.Server().Topics.Retained.GetAll()
	missing := 0
	for i := range ordinary {
		if _, ok := retained[fmt.Sprintf("devices/alice/r%03d", i)]; !ok {
			missing++
		}
	}
	if _, ok := retained[longTopic]; !ok || missing > 0 {
		t.Errorf("after a restart %d of %d ordinary retained messages are missing; the long topic's is there: %v", missing, ordinary, ok)
	}
	cl, ok := tb2.Server().Clients.Get(longID)
	if !ok {
		t.Fatal("the session with a 40 KiB client ID was not restored")
	}
	if _, ok := cl.State.Subscriptions.Get("commands/alice/#"); !ok {
		t.Error("the long client ID's subscription was not restored")
	}
}

// waitRetained waits until mochi holds n retained messages outside $SYS.
func waitRetained(t *testing.T, tb *testBroker, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := 0
		for topic := range tb.Server().Topics.Retained.GetAll() {
			if !strings.HasPrefix(topic, "$SYS") {
				got++
			}
		}
		if got == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d retained messages, want %d", got, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
