package broker_test

import (
	"context"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	pahov3 "github.com/eclipse/paho.mqtt.golang"
)

func TestClusterCrossPodDeliveryWithProperties(t *testing.T) {
	pods := startCluster(t, 3, clusterOpts{})
	sub1 := mustV5(t, pods[1].tcp, "alice", alicePassword)
	sub2 := mustV5(t, pods[2].tcp, "alice", alicePassword)
	sub1.subscribe(t, "x/+/c", 2)
	sub2.subscribe(t, "x/#", 2)
	pub := mustV5(t, pods[0].tcp, "alice", alicePassword)
	for qos := byte(0); qos <= 2; qos++ {
		expiry := uint32(60)
		format := byte(1)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := pub.Publish(ctx, &paho.Publish{Topic: "x/b/c", QoS: qos, Payload: []byte{'q', '0' + qos}, Properties: &paho.PublishProperties{
			ContentType: "text/plain", ResponseTopic: "reply/here", CorrelationData: []byte{0, 1, 2, 0xff},
			MessageExpiry: &expiry, PayloadFormat: &format,
			User: paho.UserProperties{{Key: "k", Value: "v1"}, {Key: "k", Value: "v2"}, {Key: "weird: key\n", Value: "ü"}},
		}})
		cancel()
		if err != nil {
			t.Fatalf("QoS %d publish: %v", qos, err)
		}
		for _, s := range []*v5{sub1, sub2} {
			m := s.expect(t, string([]byte{'q', '0' + qos}))
			p := m.Properties
			if m.QoS != qos || p == nil || p.ContentType != "text/plain" || p.ResponseTopic != "reply/here" ||
				string(p.CorrelationData) != "\x00\x01\x02\xff" || p.PayloadFormat == nil || *p.PayloadFormat != 1 ||
				p.MessageExpiry == nil || *p.MessageExpiry > 60 || *p.MessageExpiry < 58 {
				t.Fatalf("QoS %d: got QoS %d, properties %+v", qos, m.QoS, p)
			}
			if len(p.User) != 3 || p.User[0] != (paho.UserProperty{Key: "k", Value: "v1"}) || p.User[1].Value != "v2" ||
				p.User[2] != (paho.UserProperty{Key: "weird: key\n", Value: "ü"}) {
				t.Fatalf("QoS %d: user properties %+v", qos, p.User)
			}
		}
	}
	// And MQTT 3.1.1 on both ends.
	got := make(chan string, 10)
	v3sub, err := connectV3("tcp://"+pods[2].tcp, "alice", alicePassword, "v3-sub")
	if err != nil {
		t.Fatal(err)
	}
	defer v3sub.Disconnect(0)
	if tok := v3sub.Subscribe("v3/t", 1, func(_ pahov3Client, m pahov3Message) { got <- string(m.Payload()) }); !tok.WaitTimeout(3*time.Second) || tok.Error() != nil {
		t.Fatal("v3 subscribe failed")
	}
	v3pub, err := connectV3("tcp://"+pods[1].tcp, "alice", alicePassword, "v3-pub")
	if err != nil {
		t.Fatal(err)
	}
	defer v3pub.Disconnect(0)
	if tok := v3pub.Publish("v3/t", 1, false, "hello 3.1.1"); !tok.WaitTimeout(3*time.Second) || tok.Error() != nil {
		t.Fatal("v3 publish failed")
	}
	select {
	case m := <-got:
		if m != "hello 3.1.1" {
			t.Fatalf("got %q", m)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("3.1.1 message not delivered across pods")
	}
	// Three messages to two pods from pod 0; the 3.1.1 one from pod 1 to pod 2.
	c0, c1, c2 := &pods[0].Cluster().Counters, &pods[1].Cluster().Counters, &pods[2].Cluster().Counters
	if c0.Forwarded.Load() != 6 || c1.Forwarded.Load() != 1 || c1.Received.Load() != 3 || c2.Received.Load() != 4 ||
		c0.PeersConnected.Load() != 2 || c0.Dropped.Load() != 0 {
		t.Errorf("counters: pod 0 forwarded %d (want 6), pod 1 forwarded %d (want 1), received %d (want 3), pod 2 received %d (want 4), pod 0 peers %d (want 2)",
			c0.Forwarded.Load(), c1.Forwarded.Load(), c1.Received.Load(), c2.Received.Load(), c0.PeersConnected.Load())
	}
}

// collect reads c's messages until n arrived or the deadline passes.
func collect(c *v5, n int, within time.Duration) []string {
	var got []string
	deadline := time.After(within)
	for len(got) < n {
		select {
		case m := <-c.messages:
			got = append(got, string(m.Payload))
		case <-deadline:
			return got
		}
	}
	return got
}

func TestClusterOrderAndNoDuplicatesAcrossPods(t *testing.T) {
	pods := startCluster(t, 3, clusterOpts{})
	both := mustV5(t, pods[1].tcp, "alice", alicePassword) // overlapping filters on one client
	both.subscribe(t, "ord/#", 1)
	both.subscribe(t, "ord/+/c", 1)
	wide := mustV5(t, pods[1].tcp, "alice", alicePassword)
	wide.subscribe(t, "ord/#", 1)
	narrow := mustV5(t, pods[2].tcp, "alice", alicePassword)
	narrow.subscribe(t, "ord/+/c", 1)
	const n = 2000
	results := make(chan []string, 3)
	for _, s := range []*v5{both, wide, narrow} {
		go func() { results <- collect(s, n, 8*time.Second) }()
	}
	// An MQTT 3.1.1 publisher that does not wait for each PUBACK before
	// sending the next message: QoS 1, pipelined.
	pub, err := connectV3("tcp://"+pods[0].tcp, "alice", alicePassword, "ord-pub")
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Disconnect(0)
	start := time.Now()
	var toks []pahov3.Token
	for i := range n {
		toks = append(toks, pub.Publish("ord/b/c", 1, false, strconv.Itoa(i)))
	}
	for _, tok := range toks {
		if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatalf("publish: %v", tok.Error())
		}
	}
	acked := time.Since(start)
	for range 3 {
		got := <-results
		if len(got) != n {
			t.Fatalf("a subscriber got %d of %d messages", len(got), n)
		}
		for i, p := range got {
			if p != strconv.Itoa(i) {
				t.Fatalf("message %d is %q: out of order or duplicated", i, p)
			}
		}
	}
	received := time.Since(start)
	// No copy after the last one either: the next message is a marker.
	if tok := pub.Publish("ord/b/c", 1, false, "end"); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal("marker not published")
	}
	for _, s := range []*v5{both, wide, narrow} {
		if got := collect(s, 1, 3*time.Second); len(got) != 1 || got[0] != "end" {
			t.Fatalf("after the last message came %q; want the marker", got)
		}
	}
	t.Logf("%d QoS 1 messages to 3 subscribers on two other pods: all acknowledged after %v, all received after %v", n, acked, received)
}

func TestClusterMessageRightAfterSubackArrives(t *testing.T) {
	pods := startCluster(t, 3, clusterOpts{})
	sub := mustV5(t, pods[1].tcp, "alice", alicePassword)
	pub := mustV5(t, pods[0].tcp, "alice", alicePassword)
	for i := range 50 {
		topic := "fresh/" + strconv.Itoa(i)
		sub.subscribe(t, topic, 0)
		if err := pub.publish(t, topic, topic, 0, false); err != nil {
			t.Fatal(err)
		}
		sub.expect(t, topic)
	}
}

func TestClusterLongTopicAndOddLevels(t *testing.T) {
	pods := startCluster(t, 2, clusterOpts{})
	sub := mustV5(t, pods[1].tcp, "alice", alicePassword)
	sub.subscribe(t, "#", 1)
	sub.subscribe(t, "/#", 1)
	pub := mustV5(t, pods[0].tcp, "alice", alicePassword)
	long := strings.Repeat(".", 65535) // escaped to three times its length
	for _, topic := range []string{long, "a.b/*/>/%/ /", "x//y", "/lead", "trail/", "$odd/x", "after/long"} {
		if err := pub.publish(t, topic, "p:"+topic[:min(20, len(topic))], 1, false); err != nil {
			if strings.HasPrefix(topic, "$") { // matched by no wildcard filter: nobody takes it
				continue
			}
			t.Fatalf("publish to %.20q: %v", topic, err)
		}
		if strings.HasPrefix(topic, "$") {
			continue
		}
		m := sub.expect(t, "p:"+topic[:min(20, len(topic))])
		if m.Topic != topic {
			t.Fatalf("topic %.40q arrived as %.40q", topic, m.Topic)
		}
	}
	if err := pods[0].Ready(); err != nil {
		t.Fatalf("the publishing pod is not ready after the long topic: %v", err)
	}
}

func TestClusterSharedSubscriptionDeliversOnceAcrossPods(t *testing.T) {
	pods := startCluster(t, 3, clusterOpts{})
	plain := mustV5(t, pods[1].tcp, "alice", alicePassword)
	plain.subscribe(t, "sh/#", 1)
	var members []*v5
	for _, p := range []*testBroker{pods[0], pods[1], pods[2]} {
		m := mustV5(t, p.tcp, "alice", alicePassword)
		m.subscribe(t, "$share/g/sh/#", 1)
		members = append(members, m)
	}
	pub := mustV5(t, pods[0].tcp, "alice", alicePassword)
	const n = 300
	for i := range n {
		if err := pub.publish(t, "sh/x", strconv.Itoa(i), 1, false); err != nil {
			t.Fatal(err)
		}
	}
	if got := collect(plain, n, 5*time.Second); len(got) != n {
		t.Fatalf("the plain subscriber got %d of %d", len(got), n)
	}
	seen := map[string]int{}
	var per []int
	for _, m := range members {
		got := collect(m, n, 300*time.Millisecond)
		per = append(per, len(got))
		for _, p := range got {
			seen[p]++
		}
	}
	for i := range n {
		if c := seen[strconv.Itoa(i)]; c != 1 {
			t.Fatalf("message %d reached the group %d times (members got %v)", i, c, per)
		}
	}
	t.Logf("members on three pods got %v of %d", per, n)
}

// TestClusterQoS1Cost logs what the acknowledged forward costs (a quick
// measurement on loopback, not a benchmark): QoS 1 publish-to-PUBACK
// latency with the subscriber on the same pod and on another pod, and the
// fan-in rate of eight publishers across pods.
func TestClusterQoS1Cost(t *testing.T) {
	pods := startCluster(t, 3, clusterOpts{})
	pub := mustV5(t, pods[0].tcp, "alice", alicePassword)
	for _, where := range []int{0, 1} {
		sub := mustV5(t, pods[where].tcp, "alice", alicePassword)
		topic := "cost/" + strconv.Itoa(where)
		sub.subscribe(t, topic, 1)
		const n = 300
		lat := make([]time.Duration, 0, n)
		for i := range n {
			start := time.Now()
			if err := pub.publish(t, topic, strconv.Itoa(i), 1, false); err != nil {
				t.Fatal(err)
			}
			lat = append(lat, time.Since(start))
		}
		if got := collect(sub, n, 3*time.Second); len(got) != n {
			t.Fatalf("got %d of %d", len(got), n)
		}
		slices.Sort(lat)
		t.Logf("QoS 1 PUBACK latency, subscriber on pod %d: p50 %v p99 %v", where, lat[n/2], lat[n*99/100])
		_, _ = sub.Unsubscribe(context.Background(), &paho.Unsubscribe{Topics: []string{topic}})
	}

	for _, cross := range []bool{false, true} {
		subPod, pubPods := pods[0], []*testBroker{pods[0]}
		if cross {
			subPod, pubPods = pods[1], []*testBroker{pods[0], pods[2]}
		}
		topic := "fanin/" + strconv.FormatBool(cross) + "/"
		sub := mustV5(t, subPod.tcp, "alice", alicePassword)
		sub.subscribe(t, topic+"#", 1)
		const publishers, each = 8, 500
		counted := make(chan int, 1)
		go func() { counted <- len(collect(sub, publishers*each, 8*time.Second)) }()
		var clients []*v5
		for p := range publishers {
			clients = append(clients, mustV5(t, pubPods[p%len(pubPods)].tcp, "alice", alicePassword))
		}
		start := time.Now()
		var wg sync.WaitGroup
		for p, c := range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range each {
					ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
					_, _ = c.Publish(ctx, &paho.Publish{Topic: topic + strconv.Itoa(p), QoS: 1, Payload: []byte(strconv.Itoa(i))})
					cancel()
				}
			}()
		}
		wg.Wait()
		acked := time.Since(start)
		if got := <-counted; got != publishers*each {
			t.Fatalf("fan-in: %d of %d received", got, publishers*each)
		}
		t.Logf("QoS 1 fan-in, cross-pod %v, %d publishers each waiting for its PUBACK: %d messages acknowledged in %v (%.0f msg/s)",
			cross, publishers, publishers*each, acked, float64(publishers*each)/acked.Seconds())
	}
}

func TestClusterWillReachesOtherPods(t *testing.T) {
	pods := startCluster(t, 2, clusterOpts{})
	sub := mustV5(t, pods[1].tcp, "alice", alicePassword)
	sub.subscribe(t, "wills/#", 1)
	conn, err := net.Dial("tcp", pods[0].tcp)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = conn.Write(mqttConnectWill("bob-will", "bob", bobPassword, "wills/bob", "bob is gone", false))
	if ack := readPacket(t, conn); ack[3] != 0 {
		t.Fatalf("CONNECT with a will refused: % x", ack)
	}
	_ = conn.Close() // no DISCONNECT: the will is due
	sub.expect(t, "bob is gone")
}

// A pod restarted with persistent sessions subscribes on NATS for what it
// restored, so messages published on other pods while their client is away
// are queued for it.
func TestClusterRestoredSessionsReceiveFromOtherPods(t *testing.T) {
	pod0, pod1, cfg1 := startPersistentPair(t)
	sub, err := connectV5(t, pod1.tcp, v5opts{user: "bob", password: bobPassword, clientID: "persistent-1", sessionExpiry: 600, keepAlive: 30})
	if err != nil {
		t.Fatal(err)
	}
	sub.subscribe(t, "persist/#", 1)
	_ = sub.Disconnect(&paho.Disconnect{})
	pod1.Drain(context.Background(), 0)

	restarted := startClusterPod(t, cfg1) // same volume, same cluster port
	waitReady(t, restarted, 5*time.Second)
	pub := mustV5(t, pod0.tcp, "alice", alicePassword)
	if err := pub.publish(t, "persist/x", "queued while away", 1, false); err != nil {
		t.Fatal(err)
	}
	back, err := connectV5(t, restarted.tcp, v5opts{user: "bob", password: bobPassword, clientID: "persistent-1", sessionExpiry: 600, keepAlive: 30})
	if err != nil {
		t.Fatal(err)
	}
	back.expect(t, "queued while away")
}

// A message reaches another pod's subscriber at the QoS it was published
// with, whether it crossed with its properties in headers or without any
// (a plain QoS 0 or 1 message), and a QoS 1 will (sent without awaiting
// the pods' answers) stays QoS 1.
func TestClusterForwardedMessagesKeepTheirQoS(t *testing.T) {
	pods := startCluster(t, 2, clusterOpts{})
	sub := mustV5(t, pods[1].tcp, "alice", alicePassword)
	sub.subscribe(t, "wills/#", 1)
	pub := mustV5(t, pods[0].tcp, "bob", bobPassword)
	check := func(payload string, want byte) {
		t.Helper()
		if m := sub.expect(t, payload); m.QoS != want {
			t.Fatalf("%q arrived at QoS %d, want %d", payload, m.QoS, want)
		}
	}
	if err := pub.publish(t, "wills/plain0", "plain qos 0", 0, false); err != nil {
		t.Fatal(err)
	}
	check("plain qos 0", 0)
	if err := pub.publish(t, "wills/plain1", "plain qos 1", 1, false); err != nil {
		t.Fatal(err)
	}
	check("plain qos 1", 1)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := pub.Publish(ctx, &paho.Publish{Topic: "wills/props", Payload: []byte("qos 0 with a property"), QoS: 0,
		Properties: &paho.PublishProperties{ContentType: "text/plain"}}); err != nil {
		t.Fatal(err)
	}
	if m := sub.expect(t, "qos 0 with a property"); m.QoS != 0 || m.Properties == nil || m.Properties.ContentType != "text/plain" {
		t.Fatalf("a QoS 0 message with a content type arrived as %+v", m)
	}
	if _, err := connectV5(t, pods[0].tcp, v5opts{user: "bob", password: bobPassword, clientID: "qos1-will", sessionExpiry: 600, keepAlive: 30,
		will: &paho.WillMessage{Topic: "wills/qos1-will", Payload: []byte("qos 1 will"), QoS: 1}}); err != nil {
		t.Fatal(err)
	}
	// Taken over from the other pod: the old connection ends, its will goes.
	if _, err := connectV5(t, pods[1].tcp, v5opts{user: "bob", password: bobPassword, clientID: "qos1-will", sessionExpiry: 600, keepAlive: 30}); err != nil {
		t.Fatal(err)
	}
	check("qos 1 will", 1)
}
