package broker_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/mqtt-operator/mqtt-operator/broker-image/internal/cluster"
)

// retainedOn is the payload pod p holds retained on topic ("" = none).
func retainedOn(p *testBroker, topic string) string {
	if pk, ok := p.Server().Topics.Retained.Get(topic); ok {
		return string(pk.Payload)
	}
	return ""
}

// A retained message published on one pod, with no subscriber anywhere, is
// held by every pod: a subscriber on another pod gets it on SUBSCRIBE, with
// its properties; an empty retained publish on a third pod clears it
// everywhere, and the publisher's PUBACK comes after every pod did.
func TestClusterRetainedMessagesAreClusterWide(t *testing.T) {
	pods := startCluster(t, 3, clusterOpts{})
	pub := mustV5(t, pods[0].tcp, "alice", alicePassword)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := pub.Publish(ctx, &paho.Publish{Topic: "state/lamp", QoS: 1, Retain: true, Payload: []byte("on"),
		Properties: &paho.PublishProperties{ContentType: "text/plain", User: paho.UserProperties{{Key: "k", Value: "v"}}}}); err != nil {
		t.Fatal(err)
	}
	for _, p := range pods { // stored everywhere before the PUBACK
		if got := retainedOn(p, "state/lamp"); got != "on" {
			t.Fatalf("after the PUBACK %s holds %q retained", p.cfg.Cluster.NodeName, got)
		}
	}
	for _, p := range pods[1:] {
		sub := mustV5(t, p.tcp, "bob", bobPassword)
		sub.subscribe(t, "state/#", 1)
		m := sub.expect(t, "on")
		if !m.Retain || m.Properties == nil || m.Properties.ContentType != "text/plain" || m.Properties.User.Get("k") != "v" {
			t.Fatalf("retained message on %s: retain %v, properties %+v", p.cfg.Cluster.NodeName, m.Retain, m.Properties)
		}
	}
	clearer := mustV5(t, pods[2].tcp, "bob", bobPassword)
	if err := clearer.publish(t, "state/lamp", "", 1, true); err != nil {
		t.Fatal(err)
	}
	for _, p := range pods {
		if got := retainedOn(p, "state/lamp"); got != "" {
			t.Fatalf("after the clear %s still holds %q", p.cfg.Cluster.NodeName, got)
		}
	}
	late := mustV5(t, pods[0].tcp, "bob", bobPassword)
	late.subscribe(t, "state/#", 1)
	if err := pub.publish(t, "state/marker", "marker", 1, false); err != nil {
		t.Fatal(err)
	}
	late.expectNoneBefore(t, "on", "marker")
}

// A pod started after the message copies the retained messages of the
// others before it is Ready, and a message set while it was away is there.
func TestClusterRetainedReachesAPodStartedLater(t *testing.T) {
	cluster.SetJoinGrace(time.Second)
	t.Cleanup(func() { cluster.SetJoinGrace(10 * time.Second) })
	addrs := freePorts(t, 3)
	var pods []*testBroker
	for i := range 2 {
		pods = append(pods, startClusterPod(t, clusterConfig(t, fmt.Sprintf("pod-%d", i), addrs[i], addrs, clusterOpts{})))
	}
	for _, p := range pods {
		waitReady(t, p, 10*time.Second)
	}
	pub := mustV5(t, pods[0].tcp, "alice", alicePassword)
	for i := range 200 {
		if err := pub.publish(t, fmt.Sprintf("fleet/%d/config", i), fmt.Sprintf("v%d", i), byte(i%2), true); err != nil {
			t.Fatal(err)
		}
	}
	if err := pub.publish(t, "fleet/0/config", "", 1, true); err != nil { // cleared before the new pod starts
		t.Fatal(err)
	}
	third := startClusterPod(t, clusterConfig(t, "pod-2", addrs[2], addrs, clusterOpts{}))
	waitReady(t, third, 10*time.Second)
	for i := 1; i < 200; i++ {
		if got, want := retainedOn(third, fmt.Sprintf("fleet/%d/config", i)), fmt.Sprintf("v%d", i); got != want {
			t.Fatalf("the new pod holds %q on fleet/%d/config once Ready; want %q", got, i, want)
		}
	}
	if got := retainedOn(third, "fleet/0/config"); got != "" {
		t.Fatalf("the new pod holds the cleared message %q", got)
	}
	sub := mustV5(t, third.tcp, "bob", bobPassword)
	sub.subscribe(t, "fleet/7/config", 0)
	sub.expect(t, "v7")
}

// Two pods setting one retained topic at once end with the same message
// on every pod, whichever order the copies crossed in.
func TestClusterConcurrentRetainedSetsAgree(t *testing.T) {
	pods := startCluster(t, 3, clusterOpts{})
	pubs := []*v5{mustV5(t, pods[0].tcp, "alice", alicePassword), mustV5(t, pods[1].tcp, "bob", bobPassword)}
	for round := range 30 {
		topic := fmt.Sprintf("race/%d", round)
		var wg sync.WaitGroup
		for i, c := range pubs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_ = c.publish(t, topic, fmt.Sprintf("from-%d", i), 1, true)
			}()
		}
		wg.Wait()
		deadline := time.Now().Add(2 * time.Second)
		for {
			a, b, c := retainedOn(pods[0], topic), retainedOn(pods[1], topic), retainedOn(pods[2], topic)
			if a != "" && a == b && b == c {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("round %d: the pods hold %q, %q, %q", round, a, b, c)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
}

// A pod with a durable store that comes back keeps no retained message the
// cluster cleared while it was away (its store still had it), takes the
// ones set meanwhile, and gives the others none of its stale ones.
func TestClusterRestartedPodDoesNotBringBackAClearedRetainedMessage(t *testing.T) {
	pod0, pod1, cfg1 := startPersistentPair(t)
	pub := mustV5(t, pod0.tcp, "alice", alicePassword)
	for _, topic := range []string{"cfg/cleared", "cfg/kept"} {
		if err := pub.publish(t, topic, "old", 1, true); err != nil {
			t.Fatal(err)
		}
	}
	if got := retainedOn(pod1, "cfg/cleared"); got != "old" {
		t.Fatalf("pod-1 holds %q before it stops", got)
	}
	pod1.Drain(context.Background(), 0)
	waitNoRoutes(t, pod0)
	if err := pub.publish(t, "cfg/cleared", "", 1, true); err != nil {
		t.Fatal(err)
	}
	if err := pub.publish(t, "cfg/new", "new", 1, true); err != nil {
		t.Fatal(err)
	}

	restarted := startClusterPod(t, cfg1) // same volume: its store still has cfg/cleared
	waitReady(t, restarted, 10*time.Second)
	for _, c := range []struct{ topic, want string }{{"cfg/cleared", ""}, {"cfg/kept", "old"}, {"cfg/new", "new"}} {
		deadline := time.Now().Add(3 * time.Second)
		for retainedOn(restarted, c.topic) != c.want || retainedOn(pod0, c.topic) != c.want {
			if time.Now().After(deadline) {
				t.Fatalf("%s: the restarted pod holds %q, the other %q; want %q on both", c.topic, retainedOn(restarted, c.topic), retainedOn(pod0, c.topic), c.want)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	// And the restarted pod's durable store agrees: another restart shows
	// the same.
	restarted.Drain(context.Background(), 0)
	again := startClusterPod(t, cfg1)
	waitReady(t, again, 10*time.Second)
	if got := retainedOn(again, "cfg/cleared"); got != "" {
		t.Fatalf("after a second restart the pod holds %q on the cleared topic", got)
	}
}
