package broker_test

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

func persistentOn(t *testing.T, p *testBroker, id string) *v5 {
	t.Helper()
	c, err := connectV5(t, p.tcp, v5opts{user: "bob", password: bobPassword, clientID: id, sessionExpiry: 600, keepAlive: 30})
	if err != nil {
		t.Fatalf("%s on %s: %v", id, p.cfg.Cluster.NodeName, err)
	}
	return c
}

// leave ends c's connection with a DISCONNECT and waits until p has ended
// it (the session stays, offline). Waiting for the client's own end is no
// use: paho reports no error for a connection it closed itself.
func leave(t *testing.T, p *testBroker, c *v5, id string) {
	t.Helper()
	_ = c.Disconnect(&paho.Disconnect{})
	deadline := time.Now().Add(5 * time.Second)
	for {
		cl, ok := p.Server().Clients.Get(id)
		if !ok || cl.Closed() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: the connection of %s is still open 5s after its DISCONNECT", p.cfg.Cluster.NodeName, id)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func holds(p *testBroker, id string) bool {
	_, ok := p.Server().Clients.Get(id)
	return ok
}

// A persistent session resumed on another pod comes with its subscriptions
// and everything queued for it while its client was away, in order.
func TestClusterPersistentSessionMovesBetweenPods(t *testing.T) {
	pods := startCluster(t, 3, clusterOpts{})
	sub := persistentOn(t, pods[0], "mover")
	if sub.connack.SessionPresent {
		t.Fatal("a new session said present")
	}
	sub.subscribe(t, "move/#", 1)
	leave(t, pods[0], sub, "mover")

	pub := mustV5(t, pods[1].tcp, "alice", alicePassword)
	for i := range 50 {
		if err := pub.publish(t, "move/x", "m"+strconv.Itoa(i), 1, false); err != nil {
			t.Fatal(err)
		}
	}
	back := persistentOn(t, pods[2], "mover")
	if !back.connack.SessionPresent {
		t.Fatal("the session resumed on another pod is not present")
	}
	for i := range 50 {
		select {
		case m := <-back.messages:
			if got := string(m.Payload); got != "m"+strconv.Itoa(i) {
				t.Fatalf("queued message %d is %q: out of order or missing", i, got)
			}
		case <-time.After(3 * time.Second):
			t.Fatalf("queued message %d not received on the new pod", i)
		}
	}
	if err := pub.publish(t, "move/y", "after the move", 1, false); err != nil {
		t.Fatal(err)
	}
	back.expect(t, "after the move") // the subscription came along
	if holds(pods[0], "mover") {
		t.Fatal("the old pod still holds the moved session")
	}
	if n := liveSessions(pods, "mover"); n != 1 {
		t.Fatalf("%d live sessions", n)
	}
}

// A client that moves between pods while a publisher keeps sending QoS 1
// receives every acknowledged message at least once.
func TestClusterSessionMovingUnderLoadLosesNothing(t *testing.T) {
	pods := startCluster(t, 3, clusterOpts{})
	var mu sync.Mutex
	seen := map[string]bool{}
	record := func(c *v5, stop chan struct{}, done chan struct{}) {
		defer close(done)
		for {
			select {
			case m := <-c.messages:
				mu.Lock()
				seen[string(m.Payload)] = true
				mu.Unlock()
			case <-stop:
				for { // what is already in the channel
					select {
					case m := <-c.messages:
						mu.Lock()
						seen[string(m.Payload)] = true
						mu.Unlock()
					default:
						return
					}
				}
			}
		}
	}
	first := persistentOn(t, pods[0], "roamer")
	first.subscribe(t, "load/#", 1)
	stop, done := make(chan struct{}), make(chan struct{})
	go record(first, stop, done)

	pub := mustV5(t, pods[1].tcp, "alice", alicePassword)
	acked := make(chan []string, 1)
	go func() {
		var ok []string
		for i := range 1500 {
			p := "n" + strconv.Itoa(i)
			if err := pub.publish(t, "load/x", p, 1, false); err == nil {
				ok = append(ok, p)
			}
			if i%50 == 0 {
				time.Sleep(2 * time.Millisecond)
			}
		}
		acked <- ok
	}()
	var clients []*v5
	for hop := range 4 {
		time.Sleep(100 * time.Millisecond)
		next := persistentOn(t, pods[(hop+1)%3], "roamer") // takes the session over, live
		clients = append(clients, next)
		if !next.connack.SessionPresent {
			t.Fatalf("hop %d: session not present", hop)
		}
		close(stop)
		<-done
		stop, done = make(chan struct{}), make(chan struct{})
		go record(next, stop, done)
	}
	ok := <-acked
	deadline := time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		var missing []string
		for _, p := range ok {
			if !seen[p] {
				missing = append(missing, p)
			}
		}
		mu.Unlock()
		if len(missing) == 0 {
			break
		}
		if time.Now().After(deadline) {
			dropped, late := first.dropped.Load(), 0
			for _, c := range append(clients, first) {
				dropped += c.dropped.Load()
				for len(c.messages) > 0 { // delivered to a connection after the test stopped reading it
					m := <-c.messages
					if slices.Contains(missing, string(m.Payload)) {
						late++
					}
				}
			}
			t.Fatalf("%d of %d acknowledged messages never reached the roaming client, e.g. %v (the test's channels dropped %d; %d came late on an old connection)",
				len(missing), len(ok), missing[:min(5, len(missing))], dropped, late)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if len(ok) < 1000 {
		t.Fatalf("only %d of 1500 publishes acknowledged", len(ok))
	}
	close(stop)
	<-done
}

// A clean start on another pod ends the session held elsewhere, and the
// new session starts empty.
func TestClusterCleanStartEndsTheSessionOnAnotherPod(t *testing.T) {
	pods := startCluster(t, 2, clusterOpts{})
	old := persistentOn(t, pods[0], "fresh")
	old.subscribe(t, "fresh/#", 1)
	leave(t, pods[0], old, "fresh")
	c, err := connectV5(t, pods[1].tcp, v5opts{user: "bob", password: bobPassword, clientID: "fresh", cleanStart: true, sessionExpiry: 600, keepAlive: 30})
	if err != nil {
		t.Fatal(err)
	}
	if c.connack.SessionPresent {
		t.Fatal("a clean start said session present")
	}
	deadline := time.Now().Add(2 * time.Second)
	for holds(pods[0], "fresh") {
		if time.Now().After(deadline) {
			t.Fatal("the old pod still holds the session a clean start ended")
		}
		time.Sleep(10 * time.Millisecond)
	}
	pub := mustV5(t, pods[0].tcp, "alice", alicePassword)
	c.subscribe(t, "marker/#", 0)
	_ = pub.publish(t, "fresh/x", "to the old session", 1, false)
	_ = pub.publish(t, "marker/x", "marker", 0, false)
	c.expectNoneBefore(t, "to the old session", "marker")
}

// A session moved to a pod with a persistent store is stored there: it
// survives that pod's restart, with its subscriptions and queue.
func TestClusterMovedSessionIsStoredOnItsNewPod(t *testing.T) {
	pod0, pod1, cfg1 := startPersistentPair(t)

	first := persistentOn(t, pod0, "stored")
	first.subscribe(t, "stored/#", 1)
	leave(t, pod0, first, "stored")
	pub := mustV5(t, pod0.tcp, "alice", alicePassword)
	if err := pub.publish(t, "stored/a", "queued before the move", 1, false); err != nil {
		t.Fatal(err)
	}
	moved := persistentOn(t, pod1, "stored")
	moved.expect(t, "queued before the move")
	leave(t, pod1, moved, "stored")
	pod1.Drain(context.Background(), 0)
	waitNoRoutes(t, pod0)

	restarted := startClusterPod(t, cfg1)
	waitReady(t, restarted, 10*time.Second)
	if err := pub.publish(t, "stored/b", "after the restart", 1, false); err != nil {
		t.Fatal(err)
	}
	back := persistentOn(t, restarted, "stored")
	if !back.connack.SessionPresent {
		t.Fatal("the moved session did not survive its new pod's restart")
	}
	back.expect(t, "after the restart")
}

// A new connection to a session cancels its delayed will, on whichever pod
// it arrives; a will without a delay is still sent when a takeover ends
// its connection.
func TestClusterTakeoverCancelsADelayedWill(t *testing.T) {
	pods := startCluster(t, 2, clusterOpts{})
	watcher := mustV5(t, pods[1].tcp, "alice", alicePassword)
	watcher.subscribe(t, "wills/#", 1)
	for _, c := range []struct {
		id    string
		delay uint32
		sent  bool
	}{{"delayed", 1, false}, {"undelayed", 0, true}} {
		_, err := connectV5(t, pods[0].tcp, v5opts{user: "bob", password: bobPassword, clientID: c.id, sessionExpiry: 600, keepAlive: 30,
			will: &paho.WillMessage{Topic: "wills/" + c.id, Payload: []byte(c.id + " is gone"), QoS: 1}, willDelay: c.delay})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := connectV5(t, pods[1].tcp, v5opts{user: "bob", password: bobPassword, clientID: c.id, sessionExpiry: 600, keepAlive: 30}); err != nil {
			t.Fatal(err)
		}
		if c.sent {
			watcher.expect(t, c.id+" is gone")
		}
	}
	time.Sleep(2 * time.Second) // past the 1 s delay
	_ = mustV5(t, pods[0].tcp, "alice", alicePassword).publish(t, "wills/marker", "marker", 1, false)
	watcher.expectNoneBefore(t, "delayed is gone", "marker")
}

// A delayed will (sent by the broker's own timer) reaches the other pods.
func TestClusterDelayedWillReachesOtherPods(t *testing.T) {
	pods := startCluster(t, 2, clusterOpts{})
	watcher := mustV5(t, pods[1].tcp, "alice", alicePassword)
	watcher.subscribe(t, "wills/#", 1)
	c, err := connectV5(t, pods[0].tcp, v5opts{user: "bob", password: bobPassword, clientID: "late-will", sessionExpiry: 600, keepAlive: 30,
		will: &paho.WillMessage{Topic: "wills/late", Payload: []byte("late will"), QoS: 1}, willDelay: 1})
	if err != nil {
		t.Fatal(err)
	}
	_ = c.raw.Close() // no DISCONNECT: the will is due after its delay
	watcher.expect(t, "late will")
}

// A draining pod stays, within its drain period, until the persistent
// sessions of the clients it sent elsewhere have moved: a client that logs
// in on another pod after the drain's last step pulls its session from the
// draining pod, which closed at that step before (the kind e2e lost a
// session that way when a pod drained as its client arrived).
func TestClusterDrainWaitsForTheSessionsItSentElsewhere(t *testing.T) {
	pods := startCluster(t, 2, clusterOpts{})
	c := persistentOn(t, pods[1], "drained-away")
	c.subscribe(t, "drain/#", 1)
	const period = 3 * time.Second
	drained := make(chan struct{})
	start := time.Now()
	go func() { defer close(drained); pods[1].Drain(context.Background(), period) }()
	// Its one step is period/2; the client comes back after it.
	time.Sleep(period*2/3 - time.Since(start))
	select {
	case <-drained:
		t.Fatalf("the drain ended after %v with the session still on its pod", time.Since(start))
	default:
	}
	back := persistentOn(t, pods[0], "drained-away")
	if !back.connack.SessionPresent {
		t.Fatal("the session did not follow its client to the other pod")
	}
	select {
	case <-drained:
	case <-time.After(period):
		t.Fatal("the drain did not end once the session had moved")
	}
	if d := time.Since(start); d > period+time.Second {
		t.Fatalf("the drain took %v for a %v period", d, period)
	}
}

// A draining pod hands its offline persistent sessions to the other pods:
// a client away during a scale-in finds its session, with what was queued
// for it before and after, on whichever pod it returns to.
func TestClusterDrainHandsOfflineSessionsOver(t *testing.T) {
	pods := startCluster(t, 3, clusterOpts{})
	c := persistentOn(t, pods[2], "away")
	c.subscribe(t, "away/#", 1)
	leave(t, pods[2], c, "away")
	pub := mustV5(t, pods[0].tcp, "alice", alicePassword)
	if err := pub.publish(t, "away/1", "queued before the drain", 1, false); err != nil {
		t.Fatal(err)
	}

	pods[2].Drain(context.Background(), 0)
	if holds(pods[2], "away") {
		t.Fatal("the drained pod still holds the session")
	}
	if !holds(pods[0], "away") && !holds(pods[1], "away") {
		t.Fatal("no other pod adopted the session")
	}
	if err := pub.publish(t, "away/2", "queued after the drain", 1, false); err != nil {
		t.Fatal(err)
	}
	back := persistentOn(t, pods[1], "away")
	if !back.connack.SessionPresent {
		t.Fatal("the session did not survive its pod's drain")
	}
	back.expect(t, "queued before the drain")
	back.expect(t, "queued after the drain")
}

// Pods draining together (a scale-in by several) do not adopt each other's
// sessions: every one ends on the pod that stays.
func TestClusterDrainingPodsDoNotAdoptEachOthersSessions(t *testing.T) {
	pods := startCluster(t, 3, clusterOpts{})
	var ids []string
	for _, p := range pods[1:] {
		for i := range 4 {
			id := fmt.Sprintf("%s-away-%d", p.cfg.Cluster.NodeName, i)
			c := persistentOn(t, p, id)
			c.subscribe(t, "away/"+id, 1)
			leave(t, p, c, id)
			ids = append(ids, id)
		}
	}
	pods[1].Cluster().SetDraining()
	pods[2].Cluster().SetDraining()
	var wg sync.WaitGroup
	for _, p := range pods[1:] {
		wg.Add(1)
		go func() { defer wg.Done(); p.Drain(context.Background(), 0) }()
	}
	wg.Wait()
	for _, id := range ids {
		if !holds(pods[0], id) {
			t.Errorf("%s: not on the pod that stays", id)
		}
	}
}
