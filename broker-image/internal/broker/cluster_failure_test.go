package broker_test

import (
	"context"
	"encoding/json"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/mqtt-operator/mqtt-operator/broker-image/internal/cluster"
)

func TestClusterQoS1IsNotAcknowledgedUntilTheOtherPodTookIt(t *testing.T) {
	pods := startCluster(t, 3, clusterOpts{})
	sub := mustV5(t, pods[1].tcp, "alice", alicePassword)
	sub.subscribe(t, "held/#", 1)
	pub := mustV5(t, pods[0].tcp, "alice", alicePassword)
	if err := pub.publish(t, "held/0", "taken", 1, false); err != nil {
		t.Fatal(err)
	}
	sub.expect(t, "taken")

	// The subscriber's pod has the interest but does not take messages:
	// no success, after the backstop timeout.
	pods[1].Cluster().HoldInbound(true)
	t.Cleanup(func() { pods[1].Cluster().HoldInbound(false) })
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	pr, err := pub.Publish(ctx, &paho.Publish{Topic: "held/1", QoS: 1, Payload: []byte("not taken")})
	if err == nil || pr == nil || pr.ReasonCode != 0x80 {
		t.Fatalf("publish to a pod that did not take it: response %+v, error %v; want reason 0x80", pr, err)
	}
	t.Logf("refused after %v", time.Since(start))
	pr, err = pub.Publish(ctx, &paho.Publish{Topic: "held/1", QoS: 2, Payload: []byte("not taken either")})
	if err != nil || pr == nil || pr.ReasonCode != 0x80 {
		t.Fatalf("QoS 2 publish to a pod that did not take it: response %+v, error %v; want a PUBREC with 0x80", pr, err)
	}

	// Its route closes while a message waits for it: refused at once.
	done := make(chan *paho.PublishResponse, 1)
	go func() {
		pr, _ := pub.Publish(ctx, &paho.Publish{Topic: "held/2", QoS: 1, Payload: []byte("lost pod")})
		done <- pr
	}()
	time.Sleep(100 * time.Millisecond) // the message is on its way; nothing to await
	start = time.Now()
	pods[1].Cluster().Close()
	select {
	case pr := <-done:
		if pr == nil || pr.ReasonCode != 0x80 {
			t.Fatalf("publish to a pod that left: %+v; want reason 0x80", pr)
		}
		if d := time.Since(start); d > 500*time.Millisecond {
			t.Fatalf("refused %v after the pod left; want at once", d)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("no answer to the publisher")
	}
}

func TestClusterQoS1From311IsNotAcknowledgedWhenNotTaken(t *testing.T) {
	pods := startCluster(t, 2, clusterOpts{})
	sub := mustV5(t, pods[1].tcp, "alice", alicePassword)
	sub.subscribe(t, "held311/#", 1)
	pods[1].Cluster().HoldInbound(true)
	t.Cleanup(func() { pods[1].Cluster().HoldInbound(false) })
	pub, err := connectV3("tcp://"+pods[0].tcp, "alice", alicePassword, "v3-held")
	if err != nil {
		t.Fatal(err)
	}
	tok := pub.Publish("held311/x", 1, false, "not taken")
	tok.WaitTimeout(3 * time.Second)
	deadline := time.Now().Add(3 * time.Second)
	for pub.IsConnectionOpen() && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if pub.IsConnectionOpen() {
		t.Fatal("the 3.1.1 publisher is still connected: its message was acknowledged or ignored")
	}
}

func TestClusterPodKilledOthersKeepServing(t *testing.T) {
	pods := startCluster(t, 3, clusterOpts{})
	sub := mustV5(t, pods[1].tcp, "alice", alicePassword)
	sub.subscribe(t, "alive/#", 1)
	pods[2].Cluster().Close() // its routes vanish as when its process is killed
	pub := mustV5(t, pods[0].tcp, "alice", alicePassword)
	if err := pub.publish(t, "alive/x", "still here", 1, false); err != nil {
		t.Fatal(err)
	}
	sub.expect(t, "still here")
	deadline := time.Now().Add(3 * time.Second)
	for {
		st, _ := pods[0].ClusterStatus()
		connected := 0
		for _, p := range st.Peers {
			if p.Connected {
				connected++
			}
		}
		if !st.Joined && connected == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the survivor's status does not show the missing pod: %+v", st)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Joined once, a survivor stays in service: one dead pod must not take
	// every pod out of the Service.
	if err := pods[0].Ready(); err != nil {
		t.Fatalf("survivor not ready: %v", err)
	}
}

func TestClusterRefusesAPodWithTheWrongPasswordOrName(t *testing.T) {
	for _, o := range []clusterOpts{{password: "another-password-0123456789"}, {name: "another-cluster"}} {
		addrs := freePorts(t, 3)
		var pods []*testBroker
		for i := range 3 {
			oo := clusterOpts{}
			if i == 2 {
				oo = o
			}
			pods = append(pods, startClusterPod(t, clusterConfig(t, "pod-"+strconv.Itoa(i), addrs[i], addrs, oo)))
		}
		deadline := time.Now().Add(1500 * time.Millisecond)
		for time.Now().Before(deadline) && len(routesOf(pods[0])) < 1 {
			time.Sleep(20 * time.Millisecond)
		}
		time.Sleep(500 * time.Millisecond) // give the intruder's routes time to (not) form
		for i, p := range pods {
			names := routesOf(p)
			want := 1
			if i == 2 {
				want = 0
			}
			if len(names) != want {
				t.Fatalf("%+v: pod %d has routes to %v; want %d", o, i, names, want)
			}
		}
		if pods[2].Ready() == nil {
			t.Fatalf("%+v: the refused pod is ready", o)
		}
	}
}

func routesOf(p *testBroker) []string {
	st, _ := p.ClusterStatus()
	var names []string
	for _, peer := range st.Peers {
		if peer.Connected {
			names = append(names, peer.Address+"/"+peer.Node)
		}
	}
	return names
}

func TestClusterRoutesOverTLS(t *testing.T) {
	ca := newTestCA(t)
	pods := startCluster(t, 2, clusterOpts{tls: ca})
	sub := mustV5(t, pods[1].tcp, "alice", alicePassword)
	sub.subscribe(t, "tls/#", 2)
	pub := mustV5(t, pods[0].tcp, "alice", alicePassword)
	if err := pub.publish(t, "tls/x", "encrypted", 2, false); err != nil {
		t.Fatal(err)
	}
	sub.expect(t, "encrypted")

	// A pod with a certificate from another CA cannot join.
	addrs := freePorts(t, 2)
	good := startClusterPod(t, clusterConfig(t, "pod-0", addrs[0], addrs, clusterOpts{tls: ca}))
	bad := startClusterPod(t, clusterConfig(t, "pod-1", addrs[1], addrs, clusterOpts{tls: newNamedCA(t, "other CA")}))
	time.Sleep(time.Second) // routes would form within this
	if len(routesOf(good)) != 0 || bad.Ready() == nil {
		t.Fatalf("a pod with a foreign certificate joined: %v", routesOf(good))
	}

	// Nor one with a certificate of the same CA issued for another
	// cluster (another broker's pods): routes verify the cluster's name,
	// not the peer's address.
	addrs = freePorts(t, 2)
	good = startClusterPod(t, clusterConfig(t, "pod-0", addrs[0], addrs, clusterOpts{tls: ca}))
	bad = startClusterPod(t, clusterConfig(t, "pod-1", addrs[1], addrs, clusterOpts{tls: ca, certName: "other-cluster"}))
	time.Sleep(time.Second)
	if len(routesOf(good)) != 0 || bad.Ready() == nil {
		t.Fatalf("a pod with another cluster's certificate joined: %v", routesOf(good))
	}
}

func TestClusterPeersReloadInPlace(t *testing.T) {
	addrs := freePorts(t, 2)
	cfg0 := clusterConfig(t, "pod-0", addrs[0], addrs[:1], clusterOpts{})
	pod0 := startBroker(t, cfg0, clusterBundle(t))
	pod1 := startBroker(t, clusterConfig(t, "pod-1", addrs[1], addrs[1:], clusterOpts{}), clusterBundle(t))
	waitReady(t, pod0, 3*time.Second)
	if len(routesOf(pod0)) != 0 {
		t.Fatal("routes before the peers were given")
	}
	cfg0.Cluster.Peers = addrs
	data, err := json.Marshal(cfg0)
	if err != nil {
		t.Fatal(err)
	}
	if err := pod0.ApplyConfig(data); err != nil {
		t.Fatal(err)
	}
	waitReady(t, pod0, 5*time.Second)
	sub := mustV5(t, pod1.tcp, "alice", alicePassword)
	sub.subscribe(t, "scaled/#", 1)
	pub := mustV5(t, pod0.tcp, "alice", alicePassword)
	if err := pub.publish(t, "scaled/x", "after reload", 1, false); err != nil {
		t.Fatal(err)
	}
	sub.expect(t, "after reload")
}

func TestClusterStatusNamesThePeers(t *testing.T) {
	pods := startCluster(t, 3, clusterOpts{})
	st, ok := pods[0].ClusterStatus()
	if !ok || st.Name != "test-cluster" || st.Node != "pod-0" || !st.Joined {
		t.Fatalf("status %+v", st)
	}
	// On loopback the peers cannot be told apart by name (the operator's
	// peer addresses start with the pod name): both connected is what
	// holds.
	if len(st.Peers) != 2 || !st.Peers[0].Connected || !st.Peers[1].Connected ||
		st.Peers[0].Address != pods[1].cfg.Cluster.Address || st.Peers[1].Address != pods[2].cfg.Cluster.Address {
		t.Fatalf("peers %+v; want pod-1's and pod-2's addresses, connected", st.Peers)
	}
}

func TestClusterGarbageOnTheClusterPortIsDropped(t *testing.T) {
	pods := startCluster(t, 2, clusterOpts{})
	conn, err := net.Dial("tcp", pods[0].cfg.Cluster.Address)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, _ = conn.Write([]byte("GARBAGE \x00\xff\r\nCONNECT {\"user\":\"x\"\r\n" + strings.Repeat("z", 5000) + "\r\n"))
	_ = conn.SetReadDeadline(time.Now().Add(3 * time.Second))
	buf := make([]byte, 4096)
	for {
		if _, err := conn.Read(buf); err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatal("the cluster port kept a connection that sent garbage")
			}
			break
		}
	}
	sub := mustV5(t, pods[1].tcp, "alice", alicePassword)
	sub.subscribe(t, "after/garbage", 1)
	pub := mustV5(t, pods[0].tcp, "alice", alicePassword)
	if err := pub.publish(t, "after/garbage", "still routing", 1, false); err != nil {
		t.Fatal(err)
	}
	sub.expect(t, "still routing")
	deadline := time.Now().Add(2 * time.Second)
	for !strings.Contains(pods[0].logs.String(), `"level":"WARN","msg":"127.0.0.1:`) {
		if time.Now().After(deadline) {
			t.Fatal("the dropped connection was not logged")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestClusterBridgeConnectionRepairsItself(t *testing.T) {
	pods := startCluster(t, 2, clusterOpts{})
	here := mustV5(t, pods[0].tcp, "alice", alicePassword)
	here.subscribe(t, "repair/0", 1)
	there := mustV5(t, pods[1].tcp, "alice", alicePassword)
	there.subscribe(t, "repair/1", 1)
	pods[0].Cluster().DropConnection()
	if err := pods[0].Ready(); err == nil {
		t.Fatal("ready with its bridge connection closed")
	}
	waitReady(t, pods[0], 3*time.Second)
	// Both ways again: pod 0 forwards, and its subscriptions were made again.
	if err := here.publish(t, "repair/1", "from the repaired pod", 1, false); err != nil {
		t.Fatal(err)
	}
	there.expect(t, "from the repaired pod")
	if err := there.publish(t, "repair/0", "to the repaired pod", 1, false); err != nil {
		t.Fatal(err)
	}
	here.expect(t, "to the repaired pod")
}

// A pod whose peer never answers is ready once the join grace has passed,
// and its status still says the mesh is partial. Without it a broker's first
// scale-up deadlocks (the StatefulSet replaces the unclustered pod 0 only once
// the new pods are ready, and they waited for a route to pod 0), and one pod
// that cannot be scheduled would keep every other pod out of service.
func TestClusterPodIsReadyAfterTheJoinGraceWithoutAPeer(t *testing.T) {
	cluster.SetJoinGrace(time.Second)
	t.Cleanup(func() { cluster.SetJoinGrace(10 * time.Second) })
	addrs := freePorts(t, 2) // the second pod never starts
	pod := startClusterPod(t, clusterConfig(t, "pod-0", addrs[0], addrs, clusterOpts{}))
	if err := pod.Ready(); err == nil {
		t.Fatal("ready at once without its peer")
	}
	waitReady(t, pod, 5*time.Second)
	if st, _ := pod.ClusterStatus(); st.Joined {
		t.Errorf("status says joined without a route to its peer: %+v", st)
	}
	if !strings.Contains(pod.logs.String(), "serving without a route to every peer") {
		t.Error("the pod did not log that it serves without its peer")
	}
}

// A pod that cannot keep up with what other pods send drops the excess
// QoS 0 messages at its inbound queue; the metric counts every one of
// them, not only the first of a run (nats.go reports one per run).
func TestClusterDroppedInboundMessagesAreEachCounted(t *testing.T) {
	pods := startCluster(t, 2, clusterOpts{})
	var received atomic.Int64
	sub, err := connectV5(t, pods[1].tcp, v5opts{user: "alice", password: alicePassword, keepAlive: 30,
		onPublish: func(*paho.Publish) { received.Add(1) }})
	if err != nil {
		t.Fatal(err)
	}
	sub.subscribe(t, "flood/#", 0)
	pub := mustV5(t, pods[0].tcp, "bob", bobPassword)
	if err := pub.publish(t, "flood/0", "first", 0, false); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(3 * time.Second); received.Load() == 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the first message never arrived")
		}
	}
	received.Store(0)
	mochiDropped := func() uint64 { return pods[1].Stats().MessagesDropped }
	droppedBefore := mochiDropped()

	pods[1].Cluster().HoldInbound(true)
	pods[1].Cluster().LimitInbound(64 << 10) // a few hundred of these messages
	const sent = 2000
	for i := range sent {
		if err := pub.publish(t, "flood/0", strconv.Itoa(i), 0, false); err != nil {
			t.Fatal(err)
		}
	}
	// Every message has reached pod 1's queue, or been dropped there, once
	// the count of drops stops moving.
	last, stableSince := uint64(0), time.Now()
	for deadline := time.Now().Add(10 * time.Second); time.Since(stableSince) < 300*time.Millisecond; time.Sleep(20 * time.Millisecond) {
		if d := pods[1].Cluster().DroppedMessages(); d != last {
			last, stableSince = d, time.Now()
		}
		if time.Now().After(deadline) {
			t.Fatal("pod 1 kept dropping for 10 s")
		}
	}
	pods[1].Cluster().HoldInbound(false)
	// Each message is delivered, or counted as dropped: by the cluster
	// (the inbound queue was full), or by mochi (the subscriber's queue
	// was, as the held messages went out at once).
	var got, dropped, dropsHere uint64
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		got, dropped, dropsHere = uint64(received.Load()), pods[1].Cluster().DroppedMessages(), mochiDropped()-droppedBefore
		if got+dropped+dropsHere == sent {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d delivered + %d counted as dropped by the cluster + %d by mochi != %d sent", got, dropped, dropsHere, sent)
		}
	}
	t.Logf("%d sent while pod 1 was held: %d delivered, %d dropped by the cluster, %d by mochi", sent, got, dropped, dropsHere)
	if dropped == 0 {
		t.Fatal("nothing was dropped at pod 1's inbound queue: the test proves nothing")
	}
}

// The inbound queue is bounded in bytes, not in messages: a burst of small
// messages far over what a count bounded for the largest packets held (256
// with 1 MiB packets) waits for a held pod, and none is dropped.
func TestClusterInboundQueueIsBoundedInBytesNotMessages(t *testing.T) {
	pods := startCluster(t, 2, clusterOpts{})
	var received atomic.Int64
	sub, err := connectV5(t, pods[1].tcp, v5opts{user: "alice", password: alicePassword, keepAlive: 30,
		onPublish: func(*paho.Publish) { received.Add(1) }})
	if err != nil {
		t.Fatal(err)
	}
	sub.subscribe(t, "burst/#", 0)
	pub := mustV5(t, pods[0].tcp, "bob", bobPassword)
	droppedBefore := pods[1].Stats().MessagesDropped

	pods[1].Cluster().HoldInbound(true)
	const sent = 3000
	for i := range sent {
		if err := pub.publish(t, "burst/0", strconv.Itoa(i), 0, false); err != nil {
			t.Fatal(err)
		}
	}
	// Acknowledged only once pod 1 delivered it, after the rest.
	acked := make(chan error, 1)
	go func() { acked <- pub.publish(t, "burst/0", "last", 1, false) }()
	time.Sleep(200 * time.Millisecond) // the burst reaches pod 1's queue meanwhile
	pods[1].Cluster().HoldInbound(false)
	if err := <-acked; err != nil {
		t.Fatalf("the QoS 1 message after the burst: %v", err)
	}
	if d := pods[1].Cluster().DroppedMessages(); d != 0 {
		t.Fatalf("pod 1 dropped %d of %d small messages from pod 0", d, sent)
	}
	var got, dropsHere uint64
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		got, dropsHere = uint64(received.Load()), pods[1].Stats().MessagesDropped-droppedBefore
		if got+dropsHere == sent+1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d delivered + %d dropped by mochi (the subscriber's queue) != %d sent", got, dropsHere, sent+1)
		}
	}
	t.Logf("%d sent to a held pod: %d delivered, %d dropped by mochi, 0 by the cluster", sent+1, got, dropsHere)
}

// A QoS 1 message that does not fit in another pod's inbound queue is
// refused to its publisher at once, not after the 1 s backstop.
func TestClusterQoS1OverTheInboundQueueIsRefusedAtOnce(t *testing.T) {
	pods := startCluster(t, 2, clusterOpts{})
	sub := mustV5(t, pods[1].tcp, "alice", alicePassword)
	sub.subscribe(t, "full/#", 1)
	pub := mustV5(t, pods[0].tcp, "bob", bobPassword)
	if err := pub.publish(t, "full/0", "fits", 1, false); err != nil {
		t.Fatal(err)
	}
	sub.expect(t, "fits")

	pods[1].Cluster().LimitInbound(0)
	start := time.Now()
	err := pub.publish(t, "full/0", "does not fit", 1, false)
	took := time.Since(start)
	if err == nil {
		t.Fatal("a QoS 1 message pod 1 dropped was acknowledged")
	}
	if took >= cluster.AckTimeout/2 {
		t.Fatalf("refused after %v: the publisher waited for the backstop", took)
	}
	if d := pods[1].Cluster().DroppedMessages(); d != 1 {
		t.Fatalf("pod 1 counted %d dropped messages, want 1", d)
	}
	t.Logf("refused after %v: %v", took.Round(time.Millisecond), err)
}
