package broker_test

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mqtt-operator/mqtt-operator/broker-image/internal/cluster"
)

// cut removes every route between the pods (each keeps only itself as
// peer) and waits until none has a route left; heal gives them back.
func cut(t *testing.T, pods []*testBroker) {
	t.Helper()
	for _, p := range pods {
		if err := p.Cluster().SetPeers([]string{p.cfg.Cluster.Address}); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range pods {
		waitNoRoutes(t, p)
	}
}

func heal(t *testing.T, pods []*testBroker, addrs []string) {
	t.Helper()
	for _, p := range pods {
		if err := p.Cluster().SetPeers(addrs); err != nil {
			t.Fatal(err)
		}
	}
}

// A partition (routes cut, both pods alive and serving) loses no
// acknowledged message: what is published on one side for subscribers on
// the other is held and delivered, in order and before anything newer,
// once the routes are back.
func TestClusterPartitionHealsWithoutLosingAcknowledgedMessages(t *testing.T) {
	pods := startCluster(t, 2, clusterOpts{})
	addrs := []string{pods[0].cfg.Cluster.Address, pods[1].cfg.Cluster.Address}
	far := persistentOn(t, pods[1], "far-subscriber")
	far.subscribe(t, "cut/#", 1)
	near := mustV5(t, pods[0].tcp, "alice", alicePassword)
	near.subscribe(t, "cut/#", 1)
	pub := mustV5(t, pods[0].tcp, "alice", alicePassword)
	if err := pub.publish(t, "cut/x", "before", 1, false); err != nil {
		t.Fatal(err)
	}
	far.expect(t, "before")

	cut(t, pods)
	for i := range 100 {
		if err := pub.publish(t, "cut/x", "during-"+strconv.Itoa(i), 1, false); err != nil {
			t.Fatalf("publish %d during the partition: %v", i, err)
		}
	}
	near.expect(t, "during-99") // this side keeps serving
	select {
	case m := <-far.messages:
		t.Fatalf("%q crossed a cut route", m.Payload)
	default:
	}
	if held, _, _ := pods[0].Cluster().PartitionCounters(); held != 100 {
		t.Fatalf("%d messages counted as held, want 100", held)
	}

	heal(t, pods, addrs)
	if err := waitFor(10*time.Second, func() bool { return len(routesOf(pods[0])) > 0 }); err != nil {
		t.Fatal("the routes did not come back")
	}
	if err := pub.publish(t, "cut/x", "after", 1, false); err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		want := "during-" + strconv.Itoa(i)
		select {
		case m := <-far.messages:
			if string(m.Payload) != want {
				t.Fatalf("after the heal got %q, want %q (in order, before anything newer)", m.Payload, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s never reached the other side after the heal", want)
		}
	}
	far.expect(t, "after")
	// "after" may have joined the replay (it waits behind the held ones).
	if _, replayed, dropped := pods[0].Cluster().PartitionCounters(); replayed < 100 || replayed > 101 || dropped != 0 {
		t.Fatalf("%d messages counted as replayed and %d as dropped, want 100 (or 101) and 0", replayed, dropped)
	}
}

func waitFor(within time.Duration, ok func() bool) error {
	deadline := time.Now().Add(within)
	for !ok() {
		if time.Now().After(deadline) {
			return errTimeout
		}
		time.Sleep(10 * time.Millisecond)
	}
	return nil
}

// What is held for an unreachable pod is bounded in bytes: past the bound
// the oldest messages are dropped, counted and logged, and the newest are
// still delivered, in order, after the heal.
func TestClusterPartitionHoldIsBoundedInBytes(t *testing.T) {
	old := cluster.HoldBytes
	cluster.HoldBytes = 20 << 10
	t.Cleanup(func() { cluster.HoldBytes = old })
	pods := startCluster(t, 2, clusterOpts{})
	addrs := []string{pods[0].cfg.Cluster.Address, pods[1].cfg.Cluster.Address}
	far := persistentOn(t, pods[1], "far-subscriber")
	far.subscribe(t, "cut/#", 1)
	pub := mustV5(t, pods[0].tcp, "alice", alicePassword)
	cut(t, pods)
	payload := strings.Repeat("x", 1000)
	for i := range 100 {
		if err := pub.publish(t, "cut/x", strconv.Itoa(i)+":"+payload, 1, false); err != nil {
			t.Fatal(err)
		}
	}
	_, _, dropped := pods[0].Cluster().PartitionCounters()
	if dropped < 70 || dropped > 90 {
		t.Fatalf("%d of 100 messages of 1 KB dropped past a 20 KiB hold", dropped)
	}
	if err := waitFor(2*time.Second, func() bool {
		return strings.Contains(pods[0].logs.String(), "dropped messages held for an unreachable pod")
	}); err != nil {
		t.Fatal("the drops were not logged")
	}
	heal(t, pods, addrs)
	for i := int(dropped); i < 100; i++ { // the newest, in order
		select {
		case m := <-far.messages:
			if got, _, _ := strings.Cut(string(m.Payload), ":"); got != strconv.Itoa(i) {
				t.Fatalf("after the heal got message %s, want %d", got, i)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("message %d never arrived after the heal", i)
		}
	}
}
