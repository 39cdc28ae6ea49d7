package broker_test

import (
	"context"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/mqtt-operator/mqtt-operator/broker-image/internal/broker"
)

// A shed sends the oldest connections elsewhere, spread over its period: an
// MQTT 5 client is told 0x9C (use another server), a 3.1.1 client has its
// connection closed; the newer clients stay, the pod keeps accepting, one
// shed runs at a time, and each moved client is counted.
func TestShedSendsTheOldestClientsElsewhereOverThePeriod(t *testing.T) {
	tb := startBroker(t, testConfig(t.TempDir()), testBundle(t, 1))
	oldV3, err := connectV3(tb.tcp, "alice", alicePassword, "oldest-v3")
	if err != nil {
		t.Fatal(err)
	}
	defer oldV3.Disconnect(0)
	var v5s []*v5
	for i := range 3 {
		time.Sleep(5 * time.Millisecond) // distinct connect times
		c, err := connectV5(t, tb.tcp, v5opts{user: "bob", password: bobPassword, clientID: "v5-" + strconv.Itoa(i), keepAlive: 30})
		if err != nil {
			t.Fatal(err)
		}
		v5s = append(v5s, c)
	}
	const period = time.Second
	start := time.Now()
	moving, err := tb.Shed(2, period)
	if err != nil || moving != 2 {
		t.Fatalf("Shed(2) = %d, %v; want 2 moving", moving, err)
	}
	if _, err := tb.Shed(1, 0); !errors.Is(err, broker.ErrShedding) {
		t.Errorf("a second shed while the first runs: %v, want ErrShedding", err)
	}
	select {
	case d := <-v5s[0].disconnect:
		if d.ReasonCode != 0x9C {
			t.Errorf("the MQTT 5 client was told 0x%02x, want 0x9C (use another server)", d.ReasonCode)
		}
		// The 3.1.1 client went first, the MQTT 5 one a step (period/2) later.
		if since := time.Since(start); since < period/4 {
			t.Errorf("the second client was moved %v after the first: not spread over the %v period", since, period)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("the second-oldest client was not moved")
	}
	for deadline := time.Now().Add(3 * time.Second); oldV3.IsConnectionOpen(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the oldest (MQTT 3.1.1) client was not moved")
		}
	}
	// The pod keeps accepting while and after it sheds.
	newcomer := mustV5(t, tb.tcp, "alice", alicePassword)
	for _, c := range append(v5s[1:], newcomer) {
		select {
		case <-c.closed:
			t.Fatal("a newer client was moved too")
		case <-time.After(100 * time.Millisecond):
		}
	}
	if got := tb.Stats().ClientsShed; got != 2 {
		t.Errorf("ClientsShed = %d, want 2", got)
	}
	if got := tb.Clients(); got != 3 {
		t.Errorf("Clients() = %d, want the 3 that stayed", got)
	}
	for deadline := time.Now().Add(time.Second); ; time.Sleep(10 * time.Millisecond) {
		if _, err := tb.Shed(1, 0); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("a shed after the first ended: %v", err)
		}
	}
	if _, err := tb.Shed(0, 0); err == nil {
		t.Error("a shed of 0 clients was accepted")
	}
}

// A drain takes over from a shed under way, and no shed starts during a
// drain.
func TestShedStopsForADrain(t *testing.T) {
	tb := startBroker(t, testConfig(t.TempDir()), testBundle(t, 1))
	for range 2 {
		_ = mustV5(t, tb.tcp, "alice", alicePassword)
	}
	if _, err := tb.Shed(2, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	// The first client goes at once; the second would go 5 s later.
	for deadline := time.Now().Add(3 * time.Second); tb.Stats().ClientsShed < 1; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the shed did not move its first client")
		}
	}
	drained := make(chan struct{})
	go func() { defer close(drained); tb.Drain(context.Background(), time.Second) }()
	for deadline := time.Now().Add(3 * time.Second); tb.Ready() == nil; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the drain did not begin")
		}
	}
	if _, err := tb.Shed(1, 0); !errors.Is(err, broker.ErrDraining) {
		t.Errorf("a shed during a drain: %v, want ErrDraining", err)
	}
	select {
	case <-drained:
	case <-time.After(5 * time.Second):
		t.Fatal("the drain did not end within its period")
	}
	if got := tb.Stats().ClientsShed; got != 1 {
		t.Errorf("ClientsShed = %d, want 1 (the drain moved the other)", got)
	}
}

// A client a shed sent from one pod logs in on another with its persistent
// session: subscriptions and what was queued while it moved.
func TestClusterShedClientResumesItsSessionOnAnotherPod(t *testing.T) {
	pods := startCluster(t, 2, clusterOpts{})
	c := persistentOn(t, pods[0], "shed-mover")
	c.subscribe(t, "shed/#", 1)
	if st, _ := pods[0].ClusterStatus(); st.Clients != 1 {
		t.Fatalf("pod-0 reports %d clients, want 1", st.Clients)
	}
	if _, err := pods[0].Shed(1, 0); err != nil {
		t.Fatal(err)
	}
	select {
	case d := <-c.disconnect:
		if d.ReasonCode != 0x9C {
			t.Fatalf("told 0x%02x, want 0x9C", d.ReasonCode)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("the client was not moved")
	}
	pub := mustV5(t, pods[1].tcp, "alice", alicePassword)
	for i := range 10 {
		if err := pub.publish(t, "shed/x", "m"+strconv.Itoa(i), 1, false); err != nil {
			t.Fatal(err)
		}
	}
	back := persistentOn(t, pods[1], "shed-mover")
	if !back.connack.SessionPresent {
		t.Fatal("the session did not follow its client to the other pod")
	}
	for i := range 10 {
		select {
		case m := <-back.messages:
			if got := string(m.Payload); got != "m"+strconv.Itoa(i) {
				t.Fatalf("queued message %d is %q", i, got)
			}
		case <-time.After(3 * time.Second):
			t.Fatalf("queued message %d not received after the move", i)
		}
	}
	if n := liveSessions(pods, "shed-mover"); n != 1 {
		t.Fatalf("%d live sessions", n)
	}
	if st, _ := pods[0].ClusterStatus(); st.Clients != 0 || st.Shedding {
		t.Errorf("pod-0 reports %d clients, shedding %v; want 0, false", st.Clients, st.Shedding)
	}
}
