package broker_test

import (
	"errors"
	"strconv"
	"sync"
	"testing"
	"time"
)

// liveSessions counts the pods where clientID has a live connection.
func liveSessions(pods []*testBroker, clientID string) int {
	n := 0
	for _, p := range pods {
		if cl, ok := p.Server().Clients.Get(clientID); ok && !cl.Closed() {
			n++
		}
	}
	return n
}

func TestClusterClientIDTakeoverAcrossPods(t *testing.T) {
	pods := startCluster(t, 3, clusterOpts{})
	first, err := connectV5(t, pods[0].tcp, v5opts{user: "alice", password: alicePassword, clientID: "device-1", keepAlive: 30})
	if err != nil {
		t.Fatal(err)
	}
	second, err := connectV5(t, pods[1].tcp, v5opts{user: "alice", password: alicePassword, clientID: "device-1", keepAlive: 30})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case d := <-first.disconnect:
		if d.ReasonCode != 0x8E {
			t.Fatalf("the first session was disconnected with 0x%02x, want 0x8E (session taken over)", d.ReasonCode)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("the first session on another pod was not taken over")
	}
	if n := liveSessions(pods, "device-1"); n != 1 {
		t.Fatalf("%d live sessions of device-1", n)
	}
	second.subscribe(t, "still/here", 0) // the new one works
}

func TestClusterClientIDOfAnotherUserIsNotTakenOver(t *testing.T) {
	pods := startCluster(t, 2, clusterOpts{})
	alice, err := connectV5(t, pods[0].tcp, v5opts{user: "alice", password: alicePassword, clientID: "shared-id", keepAlive: 30})
	if err != nil {
		t.Fatal(err)
	}
	_, err = connectV5(t, pods[1].tcp, v5opts{user: "bob", password: bobPassword, clientID: "shared-id", keepAlive: 30})
	var refused *refusedError
	if !errors.As(err, &refused) || refused.code != 0x85 {
		t.Fatalf("bob with alice's client ID on another pod: %v; want refused with 0x85", err)
	}
	alice.subscribe(t, "alice/still/here", 0)
	if n := liveSessions(pods, "shared-id"); n != 1 {
		t.Fatalf("%d live sessions", n)
	}
}

func TestClusterSimultaneousConnectsLeaveOneSession(t *testing.T) {
	pods := startCluster(t, 2, clusterOpts{})
	for round := range 20 {
		id := "race-" + strconv.Itoa(round)
		var wg sync.WaitGroup
		var mu sync.Mutex
		admitted := 0
		for _, p := range pods {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := connectV5(t, p.tcp, v5opts{user: "bob", password: bobPassword, clientID: id, keepAlive: 30}); err == nil {
					mu.Lock()
					admitted++
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		if admitted == 0 {
			t.Fatalf("round %d: both logins refused", round)
		}
		deadline := time.Now().Add(2 * time.Second)
		for liveSessions(pods, id) != 1 {
			if time.Now().After(deadline) {
				t.Fatalf("round %d: %d live sessions of one client ID", round, liveSessions(pods, id))
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	// And it stays: no late takeover ends the one left.
	for round := range 20 {
		if n := liveSessions(pods, "race-"+strconv.Itoa(round)); n != 1 {
			t.Fatalf("round %d: %d live sessions in the end", round, n)
		}
	}
}
