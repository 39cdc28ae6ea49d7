//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/eclipse/paho.golang/paho"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/transport/spdy"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/mqtt-operator/mqtt-operator/api/v1alpha1"
	"github.com/mqtt-operator/mqtt-operator/internal/resources"
	"github.com/mqtt-operator/mqtt-operator/test/mqtttest"
)

// clusterSpecs are the specs of a clustered broker (replicas: 3). They run
// inside the suite's Ordered container (e2e_test.go), before the spec that
// uninstalls the operator: Ginkgo shuffles top-level containers, so a
// container of their own could run after it.
//
// Clients reach one particular pod through a port-forward (the NodePort
// Service balances over the pods); clients that reconnect, as applications
// do, go through the Service.
func clusterSpecs() {
	Describe("three pods sharing one broker", Ordered, func() {
		var ns string
		var pods [3]string // each pod's MQTT listener, through a port-forward
		var app mqtttest.Credentials
		BeforeAll(func() {
			ns = newNamespace()
			captureLogs(ns)
			create(brokerIn(ns, clustered(3)),
				userIn(ns, "app"),
				aclIn(ns, "app", v1alpha1.ACLSubjects{AllAuthenticated: true}, rule("c/#", v1alpha1.AccessPublishSubscribe, v1alpha1.EffectAllow)))
			deleteAtEnd(ns)
			waitClustered(ns, 3, 3*time.Minute)
			waitReady(userIn(ns, "app"), time.Minute)
			app = credentialsOf(ns, "app")
			for i := range pods {
				pods[i] = podMQTTAddr(ns, podName(i))
			}
		})
		// dial connects a client to pod i.
		dial := func(i int, id string, s mqtttest.Session) *mqtttest.Client {
			GinkgoHelper()
			// The user's bundle may reach the pods a moment after it is
			// Ready: retry briefly.
			c, err := dialUntil(GinkgoT(), pods[i], app, id, s, 20*time.Second)
			Expect(err).NotTo(HaveOccurred(), "connecting %s to %s", id, podName(i))
			return c
		}

		It("delivers QoS 0 and QoS 1 messages published on one pod to subscribers on every pod", func() {
			const perQoS = 25
			var subs [3]*mqtttest.Client
			for i := range subs {
				subs[i] = dial(i, fmt.Sprintf("sub-%d", i), mqtttest.Session{})
				Expect(subs[i].Subscribe(GinkgoT(), "c/cross/#")).To(Equal(byte(1)))
			}
			// want: topic -> payloads in publishing order; qos: payload -> QoS.
			want := map[string][]string{}
			qos := map[string]byte{}
			for i := range 3 {
				pub := dial(i, fmt.Sprintf("pub-%d", i), mqtttest.Session{})
				for _, q := range []byte{0, 1} {
					topic := fmt.Sprintf("c/cross/%d/q%d", i, q)
					for k := range perQoS {
						payload := fmt.Sprintf("%s#%d", topic, k)
						ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
						resp, err := pub.Client.Publish(ctx, &paho.Publish{Topic: topic, QoS: q, Payload: []byte(payload)})
						cancel()
						Expect(err).NotTo(HaveOccurred(), "publishing %s on %s", payload, podName(i))
						if q == 1 {
							Expect(resp.ReasonCode).To(Equal(byte(0)), "PUBACK of %s on %s", payload, podName(i))
						}
						want[topic] = append(want[topic], payload)
						qos[payload] = q
					}
				}
			}
			total := 3 * 2 * perQoS
			for i, sub := range subs {
				got := map[string][]string{}
				n := 0
				problems := []string{}
				deadline := time.After(20 * time.Second)
			collect:
				for n < total {
					select {
					case p := <-sub.Received:
						got[p.Topic] = append(got[p.Topic], string(p.Payload))
						if p.QoS != qos[string(p.Payload)] {
							problems = append(problems, fmt.Sprintf("%s arrived at QoS %d, published at QoS %d", p.Payload, p.QoS, qos[string(p.Payload)]))
						}
						n++
					case <-deadline:
						break collect
					}
				}
				// Anything more is a duplicate.
				select {
				case p := <-sub.Received:
					problems = append(problems, fmt.Sprintf("extra delivery %s", p.Payload))
				case <-time.After(time.Second):
				}
				for topic, payloads := range want {
					if !slices.Equal(got[topic], payloads) {
						problems = append(problems, fmt.Sprintf("%s: got %v, want %v", topic, got[topic], payloads))
					}
				}
				Expect(problems).To(BeEmpty(), "subscriber on %s (%d of %d messages arrived)", podName(i), n, total)
			}
			GinkgoWriter.Printf("3 publishers (one per pod) × %d QoS 0 + %d QoS 1 messages, 3 subscribers (one per pod): %d deliveries, each exactly once, in order, at its QoS\n", perQoS, perQoS, 3*total)
		})

		It("gives a retained message set on one pod to a later subscriber on another pod; clearing and replacing it apply everywhere", func() {
			retain := func(c *mqtttest.Client, topic, payload string) {
				GinkgoHelper()
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				resp, err := c.Client.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Retain: true, Payload: []byte(payload)})
				Expect(err).NotTo(HaveOccurred())
				Expect(resp.ReasonCode).To(Equal(byte(0)), "PUBACK of retained %s", topic)
			}
			// retained subscribes on pod i and returns the retained
			// messages it is sent (topic -> payload), checking none comes
			// twice or more than want.
			retained := func(i int, id string, want int) map[string]string {
				GinkgoHelper()
				c := dial(i, id, mqtttest.Session{})
				Expect(c.Subscribe(GinkgoT(), "c/retained/#")).To(Equal(byte(1)))
				got := map[string]string{}
				for len(got) < want {
					select {
					case p := <-c.Received:
						Expect(p.Retain).To(BeTrue(), "%s arrived without the retain flag", p.Topic)
						Expect(got).NotTo(HaveKey(p.Topic), "retained %s sent twice", p.Topic)
						got[p.Topic] = string(p.Payload)
					case <-time.After(5 * time.Second):
						Fail(fmt.Sprintf("subscriber on %s got %d of %d retained messages: %v", podName(i), len(got), want, got))
					}
				}
				select {
				case p := <-c.Received:
					Fail(fmt.Sprintf("subscriber on %s got one retained message too many: %s = %q (had %v)", podName(i), p.Topic, p.Payload, got))
				case <-time.After(time.Second):
				}
				return got
			}
			setter := dial(0, "retainer-0", mqtttest.Session{})
			for _, t := range []string{"a", "b", "c"} {
				retain(setter, "c/retained/"+t, strings.ToUpper(t))
			}
			all := map[string]string{"c/retained/a": "A", "c/retained/b": "B", "c/retained/c": "C"}
			Expect(retained(1, "late-1", 3)).To(Equal(all), "set on telemetry-0, subscribed on telemetry-1")
			Expect(retained(2, "late-2", 3)).To(Equal(all), "set on telemetry-0, subscribed on telemetry-2")

			By("clearing one on telemetry-2 and replacing another on telemetry-1")
			retain(dial(2, "retainer-2", mqtttest.Session{}), "c/retained/b", "")
			retain(dial(1, "retainer-1", mqtttest.Session{}), "c/retained/a", "A2")
			after := map[string]string{"c/retained/a": "A2", "c/retained/c": "C"}
			for i := range 3 {
				Expect(retained(i, fmt.Sprintf("later-%d", i), 2)).To(Equal(after), "subscribed on %s", podName(i))
			}
			GinkgoWriter.Printf("3 retained messages set on telemetry-0 reached later subscribers on telemetry-1 and -2; a clear (telemetry-2) and a replacement (telemetry-1) reached all 3 pods\n")
		})

		It("delivers each message of a shared subscription to exactly one member, members on two pods, publisher on a third", func() {
			const n = 200
			members := []*mqtttest.Client{dial(0, "member-0", mqtttest.Session{}), dial(1, "member-1", mqtttest.Session{})}
			for _, m := range members {
				Expect(m.Subscribe(GinkgoT(), "$share/g/c/shared/#")).To(Equal(byte(1)))
			}
			pub := dial(2, "shared-pub", mqtttest.Session{})
			for k := range n {
				Expect(pub.Publish(GinkgoT(), "c/shared/x", strconv.Itoa(k))).To(Equal(byte(0)), "PUBACK of message %d", k)
			}
			type delivery struct {
				member  int
				payload string
			}
			deliveries := make(chan delivery, 2*n)
			for i, m := range members {
				go func() {
					for p := range m.Received {
						deliveries <- delivery{i, string(p.Payload)}
					}
				}()
			}
			count := map[string]int{}        // payload -> deliveries in all
			per := make([]int, len(members)) // deliveries per member
			received := 0
			// Wait for all n, then a second more for duplicates.
			deadline := time.After(20 * time.Second)
			var settle <-chan time.Time
		collect:
			for {
				select {
				case d := <-deliveries:
					per[d.member]++
					count[d.payload]++
					received++
					if received == n {
						settle = time.After(time.Second)
					}
				case <-settle:
					break collect
				case <-deadline:
					break collect
				}
			}
			var missing, twice []string
			for k := range n {
				switch c := count[strconv.Itoa(k)]; {
				case c == 0:
					missing = append(missing, strconv.Itoa(k))
				case c > 1:
					twice = append(twice, fmt.Sprintf("%d (%d times)", k, c))
				}
			}
			Expect(missing).To(BeEmpty(), "shared-subscription messages that reached no member (%d deliveries in all: %v per member)", received, per)
			Expect(twice).To(BeEmpty(), "shared-subscription messages delivered more than once")
			Expect(received).To(Equal(n), "deliveries in all")
			for i, c := range per {
				Expect(c).To(BeNumerically(">", 0), "the member on %s got none of %d messages (per member: %v)", podName(i), n, per)
			}
			GinkgoWriter.Printf("shared subscription: %d QoS 1 messages published on telemetry-2, each delivered once: %d to the member on telemetry-0, %d to the member on telemetry-1\n", n, per[0], per[1])
		})

		It("takes a client's session over to another pod: the first connection is closed, the second works, and there is one session", func() {
			t := GinkgoT()
			session := mqtttest.Session{Persistent: true, ExpirySeconds: 300}
			pub := dial(2, "roam-pub", mqtttest.Session{})
			first := dial(0, "roamer", session)
			Expect(first.Subscribe(t, "c/roam/#")).To(Equal(byte(1)))
			Expect(pub.Publish(t, "c/roam/x", "before")).To(Equal(byte(0)))
			Expect(first.Next(t)).To(Equal("before"))

			By("the same client ID connects on telemetry-1")
			start := time.Now()
			second := dial(1, "roamer", session)
			took := time.Since(start)
			Expect(second.SessionPresent).To(BeTrue(), "the session did not move to telemetry-1 (CONNACK session present 0)")
			Eventually(first.Disconnected).WithTimeout(10*time.Second).Should(BeClosed(), "the connection on telemetry-0 stayed open")
			Expect(first.ServerDisconnect).NotTo(BeNil(), "telemetry-0 closed the first connection without a DISCONNECT")
			Expect(first.ServerDisconnect.ReasonCode).To(Equal(byte(0x8E)), "DISCONNECT reason (0x8E: session taken over)")

			const n = 20
			for k := range n {
				Expect(pub.Publish(t, "c/roam/x", strconv.Itoa(k))).To(Equal(byte(0)))
			}
			for k := range n {
				Expect(second.Next(t)).To(Equal(strconv.Itoa(k)), "message %d on the taken-over session (subscribed on telemetry-0)", k)
			}
			Consistently(second.Received).WithTimeout(time.Second).ShouldNot(Receive(), "a message arrived twice")
			Expect(first.Received).NotTo(Receive(), "the closed connection received a message")
			Expect(second.Disconnected).NotTo(BeClosed(), "the second connection was closed")
			Expect(second.Publish(t, "c/roam/from-second", "ok")).To(Equal(byte(0)))
			Expect(second.Next(t)).To(Equal("ok"))

			By("one session: telemetry-0 holds no client, and the session comes back to it whole")
			connected := func(i int) func() (float64, error) {
				metrics := podForward(ns, podName(i), v1alpha1.HealthPort)
				return func() (float64, error) { return metric(metrics, "mqtt_clients_connected") }
			}
			Eventually(connected(0)).WithTimeout(10*time.Second).Should(BeZero(), "clients connected on telemetry-0 after the takeover")
			Eventually(connected(1)).WithTimeout(10*time.Second).Should(Equal(1.0), "clients connected on telemetry-1 (the second connection)")
			Expect(second.Disconnect(&paho.Disconnect{})).To(Succeed())
			for k := range 5 {
				Expect(pub.Publish(t, "c/roam/x", "away-"+strconv.Itoa(k))).To(Equal(byte(0)))
			}
			back := dial(0, "roamer", session)
			Expect(back.SessionPresent).To(BeTrue(), "the session did not move back to telemetry-0")
			for k := range 5 {
				Expect(back.Next(t)).To(Equal("away-"+strconv.Itoa(k)), "message queued while the client was away")
			}
			Consistently(back.Received).WithTimeout(time.Second).ShouldNot(Receive(), "a message arrived twice (a second session?)")
			GinkgoWriter.Printf("takeover telemetry-0 → telemetry-1 in %v (CONNECT to CONNACK through a port-forward); old connection closed with 0x8E; %d messages once each; 5 queued messages followed the session back to telemetry-0\n", took.Round(time.Millisecond), n)
		})
	})

	It("loses no acknowledged QoS 1 message when the pod holding a persistent subscriber's session is deleted mid-traffic", func() {
		ns := newNamespace()
		captureLogs(ns)
		create(brokerIn(ns, func(b *v1alpha1.MQTTBroker) {
			clustered(3)(b)
			persistent(b)
			b.Spec.Limits.MaxQueuedMessages = 20000
		}), userIn(ns, "publisher"), userIn(ns, "collector"),
			aclIn(ns, "data", v1alpha1.ACLSubjects{AllAuthenticated: true}, rule("data/#", v1alpha1.AccessPublishSubscribe, v1alpha1.EffectAllow)))
		deleteAtEnd(ns)
		waitClustered(ns, 3, 3*time.Minute)
		waitReady(userIn(ns, "publisher"), time.Minute)
		waitReady(userIn(ns, "collector"), time.Minute)
		service := nodeAddr(ns, "mqtt")
		bg := &background{}
		DeferCleanup(bg.run)
		pod0, pod1 := podMQTTAddr(ns, podName(0)), podMQTTAddr(ns, podName(1))
		stop := make(chan struct{})

		By("a persistent subscriber on telemetry-1, a publisher on telemetry-0")
		col := startCollector(bg, pod1, service, credentialsOf(ns, "collector"), "collector", "data/#", stop)
		pub := startPublisher(bg, pod0, service, credentialsOf(ns, "publisher"), "data/seq")
		DeferCleanup(func() { pub.halt(); close(stop); col.wait() })
		Eventually(pub.ackedCount).WithTimeout(30*time.Second).Should(BeNumerically(">=", 100), "publishing across pods: %s", pub)

		By("deleting telemetry-1 while messages flow")
		old := &corev1.Pod{}
		Expect(k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: podName(1)}, old)).To(Succeed())
		deleted := time.Now()
		Expect(k8s.Delete(context.Background(), old)).To(Succeed())
		Eventually(col.connections).WithTimeout(time.Minute).Should(BeNumerically(">=", 2), "the subscriber did not reconnect through the Service: %s", col)
		GinkgoWriter.Printf("subscriber reconnected through the Service %v after the deletion\n", col.lastConnect().Sub(deleted).Round(100*time.Millisecond))
		Eventually(func() bool {
			p := &corev1.Pod{}
			err := k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: podName(1)}, p)
			return err == nil && p.UID != old.UID && isReady(p)
		}).WithTimeout(3*time.Minute).WithPolling(time.Second).Should(BeTrue(), "telemetry-1 was not replaced")
		GinkgoWriter.Printf("telemetry-1 replaced and ready %v after the deletion\n", time.Since(deleted).Round(time.Second))
		waitClustered(ns, 3, 2*time.Minute)
		before := pub.ackedCount()
		Eventually(pub.ackedCount).WithTimeout(time.Minute).Should(BeNumerically(">=", before+100), "publishing did not go on: %s", pub)
		pub.halt()

		By("the persistent subscriber received every acknowledged message")
		col.expectAll(pub.ackedAfter(-1), time.Minute)
		Expect(col.sessionsLost()).To(BeEmpty(), "reconnects that did not resume the session: %s", col)
		GinkgoWriter.Printf("pod deleted mid-traffic: %s; %s\n", pub, col)
	})

	It("scales 3 → 5 → 2 under QoS 1 load, delivering every acknowledged message, handing an away client's session over, and its status settles", func() {
		ns := newNamespace()
		captureLogs(ns)
		create(brokerIn(ns, func(b *v1alpha1.MQTTBroker) {
			clustered(3)(b)
			b.Spec.Limits.MaxQueuedMessages = 20000
		}), userIn(ns, "publisher"), userIn(ns, "collector"),
			aclIn(ns, "data", v1alpha1.ACLSubjects{AllAuthenticated: true}, rule("data/#", v1alpha1.AccessPublishSubscribe, v1alpha1.EffectAllow)))
		deleteAtEnd(ns)
		b := waitClustered(ns, 3, 3*time.Minute)
		waitReady(userIn(ns, "publisher"), time.Minute)
		waitReady(userIn(ns, "collector"), time.Minute)
		service := nodeAddr(ns, "mqtt")
		colCreds := credentialsOf(ns, "collector")
		bg := &background{}
		DeferCleanup(bg.run)
		stop := make(chan struct{})

		By("a persistent subscriber on telemetry-2 (removed by the scale-in), a publisher on telemetry-0")
		colA := startCollector(bg, podMQTTAddr(ns, podName(2)), service, colCreds, "collector-a", "data/#", stop)
		pub := startPublisher(bg, podMQTTAddr(ns, podName(0)), service, credentialsOf(ns, "publisher"), "data/seq")
		var colB *collector
		DeferCleanup(func() {
			pub.halt()
			close(stop)
			colA.wait()
			if colB != nil {
				colB.wait()
			}
		})
		Eventually(pub.ackedCount).WithTimeout(30*time.Second).Should(BeNumerically(">=", 100), "publishing across pods: %s", pub)

		By("3 → 5: spec.replicas patched")
		start := time.Now()
		patch := client.MergeFrom(b.DeepCopy())
		b.Spec.Replicas = ptr.To(int32(5))
		Expect(k8s.Patch(context.Background(), b, patch)).To(Succeed())
		waitClustered(ns, 5, 3*time.Minute)
		up := time.Since(start)

		By("a second persistent subscriber on telemetry-4, a new pod")
		colB = startCollector(bg, podMQTTAddr(ns, podName(4)), service, colCreds, "collector-b", "data/#", stop)
		from := int(pub.started.Load()) // every message sent after its SUBACK must reach it
		before := pub.ackedCount()
		Eventually(pub.ackedCount).WithTimeout(time.Minute).Should(BeNumerically(">=", before+100), "publishing did not go on at 5 pods: %s", pub)

		By("a persistent subscriber on telemetry-3 that is away during the scale-in, with messages queued for it")
		t := GinkgoT()
		away := mqtttest.Session{Persistent: true, ExpirySeconds: 3600}
		sleeper, err := dialUntil(t, podMQTTAddr(ns, podName(3)), colCreds, "sleeper", away, 20*time.Second)
		Expect(err).NotTo(HaveOccurred())
		Expect(sleeper.Subscribe(t, "data/offline")).To(Equal(byte(1)))
		Expect(sleeper.Disconnect(&paho.Disconnect{})).To(Succeed())
		sender, err := dialUntil(t, podMQTTAddr(ns, podName(0)), credentialsOf(ns, "publisher"), "offline-sender", mqtttest.Session{}, 20*time.Second)
		Expect(err).NotTo(HaveOccurred())
		for i := range 10 {
			Expect(sender.Publish(t, "data/offline", "offline-"+strconv.Itoa(i))).To(Equal(byte(0)))
		}
		_ = sender.Disconnect(&paho.Disconnect{})

		By("5 → 2: kubectl scale (the scale subresource)")
		start = time.Now()
		kubectlIn(ns, "scale", "mqttbroker/telemetry", "--replicas=2")
		waitClustered(ns, 2, 4*time.Minute)
		down := time.Since(start)
		before = pub.ackedCount()
		Eventually(pub.ackedCount).WithTimeout(time.Minute).Should(BeNumerically(">=", before+100), "publishing did not go on at 2 pods: %s", pub)
		pub.halt()

		By("the subscriber that was away finds its session, and what was queued for it, on a pod that stays")
		back, err := dialUntil(t, service, colCreds, "sleeper", away, time.Minute)
		Expect(err).NotTo(HaveOccurred())
		Expect(back.SessionPresent).To(BeTrue(), "the session of a client away during the scale-in ended with telemetry-3")
		for i := range 10 {
			Expect(back.Next(t)).To(Equal("offline-" + strconv.Itoa(i)))
		}
		_ = back.Disconnect(&paho.Disconnect{})

		By("both persistent subscribers received every acknowledged message")
		Expect(colA.connections()).To(BeNumerically(">=", 2), "collector-a on telemetry-2 was never moved by the scale-in: %s", colA)
		Expect(colB.connections()).To(BeNumerically(">=", 2), "collector-b on telemetry-4 was never moved by the scale-in: %s", colB)
		colA.expectAll(pub.ackedAfter(-1), time.Minute)
		colB.expectAll(pub.ackedAfter(from), time.Minute)
		Expect(colA.sessionsLost()).To(BeEmpty(), "collector-a's reconnects that did not resume the session: %s", colA)
		Expect(colB.sessionsLost()).To(BeEmpty(), "collector-b's reconnects that did not resume the session: %s", colB)
		GinkgoWriter.Printf("scaled 3 → 5 in %v and 5 → 2 in %v (to Clustered and Ready); %s; %s; %s (subscribed from message %d on)\n",
			up.Round(time.Second), down.Round(time.Second), pub, colA, colB, from+1)
	})

	It("scales itself on CPU use with spec.autoscaling, up under load (spreading the clients) and back to 1, delivering every acknowledged message", func() {
		autoscales(false)
	})

	It("scales itself on connections per pod through the custom metrics adapter, up as devices connect and back to 1, delivering every acknowledged message", func() {
		autoscales(true)
	})
}

// autoscales runs a broker with spec.autoscaling (1 to 3 pods) through a
// load that makes the HorizontalPodAutoscaler add pods, and its end, which
// makes it remove them, while a QoS 1 publisher and a persistent subscriber
// go on. byConnections scales on targetConnectionsPerPod (idle devices that
// connect, read through the chart's custom metrics adapter) instead of CPU
// use (clients that flood, read through metrics-server).
func autoscales(byConnections bool) {
	ns := newNamespace()
	captureLogs(ns)
	create(brokerIn(ns, func(b *v1alpha1.MQTTBroker) {
		clustered(1)(b)
		// 50 % of 100m: an idle pod of a cluster (routes, pings, the
		// operator's polls, the QoS 1 trickle below) stays well under
		// it, a flooded one far above.
		b.Spec.Resources.Requests[corev1.ResourceCPU] = resource.MustParse("100m")
		b.Spec.Autoscaling = &v1alpha1.AutoscalingSpec{MinReplicas: 1, MaxReplicas: 3, TargetCPUUtilizationPercentage: 50,
			ScaleDownStabilizationSeconds: ptr.To(int32(0))}
		if byConnections {
			// The collector and the publisher, plus ten devices: 12
			// clients at 4 a pod asks for 3 pods; the two alone for 1.
			b.Spec.Autoscaling.TargetCPUUtilizationPercentage = 0
			b.Spec.Autoscaling.TargetConnectionsPerPod = 4
		}
		b.Spec.Limits.MaxQueuedMessages = 20000
	}), userIn(ns, "publisher"), userIn(ns, "collector"),
		aclIn(ns, "data", v1alpha1.ACLSubjects{AllAuthenticated: true},
			rule("data/#", v1alpha1.AccessPublishSubscribe, v1alpha1.EffectAllow), rule("load/#", v1alpha1.AccessPublish, v1alpha1.EffectAllow)))
	deleteAtEnd(ns)
	b := brokerIn(ns, nil)
	waitReady(b, 3*time.Minute)
	waitReady(userIn(ns, "publisher"), time.Minute)
	waitReady(userIn(ns, "collector"), time.Minute)
	service := nodeAddr(ns, "mqtt")
	bg := &background{}
	DeferCleanup(bg.run)
	stop := make(chan struct{})
	col := startCollector(bg, service, service, credentialsOf(ns, "collector"), "collector", "data/#", stop)
	pub := startPublisher(bg, service, service, credentialsOf(ns, "publisher"), "data/seq")
	DeferCleanup(func() {
		pub.halt()
		close(stop)
		col.wait()
	})
	replicas := func() int32 {
		got := brokerIn(ns, nil)
		if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(got), got); err != nil || got.Spec.Replicas == nil {
			return -1
		}
		return *got.Spec.Replicas
	}

	loadStop := make(chan struct{})
	var loaders sync.WaitGroup
	if byConnections {
		By("load: ten devices connect and stay, idle, until the autoscaler adds pods")
		for i := range 10 {
			loaders.Add(1)
			go func() {
				defer loaders.Done()
				for {
					c, err := dialLoop(bg, service, credentialsOf(ns, "publisher"), fmt.Sprintf("device-%d", i), mqtttest.Session{}, time.Minute, loadStop)
					if err != nil {
						return
					}
					select {
					case <-loadStop:
						_ = c.Disconnect(&paho.Disconnect{})
						return
					case <-c.Disconnected: // moved away: connect again through the Service
					}
				}
			}()
		}
	} else {
		By("load: QoS 0 floods from four clients until the autoscaler adds pods")
		for i := range 4 {
			loaders.Add(1)
			go func() {
				defer loaders.Done()
				payload := strings.Repeat("x", 512)
				for {
					c, err := dialLoop(bg, service, credentialsOf(ns, "publisher"), fmt.Sprintf("load-%d", i), mqtttest.Session{}, time.Minute, loadStop)
					if err != nil {
						return
					}
					for {
						select {
						case <-loadStop:
							_ = c.Disconnect(&paho.Disconnect{})
							return
						default:
						}
						if _, err := c.Client.Publish(context.Background(), &paho.Publish{Topic: "load/" + strconv.Itoa(i), QoS: 0, Payload: []byte(payload)}); err != nil {
							break // drained away: connect again through the Service
						}
					}
				}
			}()
		}
	}
	start := time.Now()
	Eventually(replicas).WithTimeout(4*time.Minute).WithPolling(2*time.Second).Should(BeNumerically(">=", 2),
		"the HorizontalPodAutoscaler did not scale the broker up")
	up := time.Since(start)
	n := replicas()
	waitClustered(ns, n, 4*time.Minute)
	GinkgoWriter.Printf("autoscaled 1 → %d in %v\n", n, up.Round(time.Second))

	By("the operator moves clients off pod 0 onto the new pods (spec.rebalance, on by default)")
	var rebalanced *v1alpha1.RebalanceStatus
	Eventually(func() error {
		got := brokerIn(ns, nil)
		if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(got), got); err != nil {
			return err
		}
		if rebalanced = got.Status.Rebalance; rebalanced == nil || rebalanced.Phase != v1alpha1.RebalanceDone || rebalanced.ClientsMoved == 0 {
			return fmt.Errorf("status.rebalance %+v", rebalanced)
		}
		return nil
	}).WithTimeout(4*time.Minute).WithPolling(2*time.Second).Should(Succeed(), "the clients were not spread over the pods")
	GinkgoWriter.Printf("rebalanced: %d rounds, %d clients moved, clients per pod %v\n", rebalanced.Rounds, rebalanced.ClientsMoved, rebalanced.Clients)

	By("the load stops: the autoscaler removes pods, one a minute, each one drained")
	close(loadStop)
	loaders.Wait()
	start = time.Now()
	Eventually(func() error {
		got := brokerIn(ns, nil)
		if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(got), got); err != nil {
			return err
		}
		if r := got.Spec.Replicas; r == nil || *r != 1 || got.Status.Replicas != 1 || got.Status.ReadyReplicas != 1 {
			hpa := &autoscalingv2.HorizontalPodAutoscaler{}
			_ = k8s.Get(context.Background(), client.ObjectKeyFromObject(got), hpa)
			return fmt.Errorf("spec.replicas %d, status %d/%d; autoscaler: metrics %+v, conditions %+v",
				ptr.Deref(got.Spec.Replicas, -1), got.Status.ReadyReplicas, got.Status.Replicas, hpa.Status.CurrentMetrics, hpa.Status.Conditions)
		}
		return nil
	}).WithTimeout(8*time.Minute).WithPolling(2*time.Second).Should(Succeed(), "the broker did not scale back to 1")
	down := time.Since(start)
	before := pub.ackedCount()
	Eventually(pub.ackedCount).WithTimeout(time.Minute).Should(BeNumerically(">=", before+100), "publishing did not go on at 1 pod: %s", pub)
	pub.halt()

	By("the persistent subscriber received every acknowledged message")
	col.expectAll(pub.ackedAfter(-1), time.Minute)
	Expect(col.sessionsLost()).To(BeEmpty(), "reconnects that did not resume the session: %s", col)
	GinkgoWriter.Printf("autoscaled 1 → %d in %v and back to 1 in %v; %s; %s\n", n, up.Round(time.Second), down.Round(time.Second), pub, col)
}

func podName(i int) string { return fmt.Sprintf("telemetry-%d", i) }

// clustered sets replicas, and a CPU request small enough for five pods on
// the suite's one kind node (2 CPUs, the control plane asks 0.9 and every
// earlier spec's broker 0.1 until the suite ends); the default request
// left this spec's pods Pending ("Insufficient cpu").
func clustered(replicas int32) func(*v1alpha1.MQTTBroker) {
	return func(b *v1alpha1.MQTTBroker) {
		b.Spec.Replicas = ptr.To(replicas)
		b.Spec.Resources = corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("20m"), corev1.ResourceMemory: resource.MustParse("128Mi")},
			Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("1Gi")},
		}
	}
}

// captureLogs streams the log of every broker container that runs in ns,
// pods replaced or scaled away included, to files under $E2E_LOG_DIR (or
// the temporary directory)/<ns>/, until the spec (or the Ordered container)
// ends; a failed spec names the directory. A pod's log is gone with the pod,
// and scaling removes pods: without this a failure leaves no evidence.
func captureLogs(ns string) {
	GinkgoHelper()
	base := os.Getenv("E2E_LOG_DIR")
	if base == "" {
		base = filepath.Join(os.TempDir(), "mqtt-operator-e2e")
	}
	dir := filepath.Join(base, ns)
	Expect(os.MkdirAll(dir, 0o755)).To(Succeed())
	cs, err := kubernetes.NewForConfig(cfg)
	Expect(err).NotTo(HaveOccurred())
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		streaming := map[string]bool{} // pod UID and restart count
		for ctx.Err() == nil {
			pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
			if err != nil {
				pods = &corev1.PodList{}
			}
			for i := range pods.Items {
				p := &pods.Items[i]
				for _, c := range p.Status.ContainerStatuses {
					key := fmt.Sprintf("%s-%s-%d", p.Name, p.UID, c.RestartCount)
					if c.State.Running == nil || streaming[key] {
						continue
					}
					streaming[key] = true
					f, ferr := os.Create(filepath.Join(dir, key+".log"))
					if ferr != nil {
						continue
					}
					wg.Add(1)
					go func() {
						defer wg.Done()
						defer f.Close()
						r, err := cs.CoreV1().Pods(ns).GetLogs(p.Name, &corev1.PodLogOptions{Container: c.Name, Follow: true, Timestamps: true}).Stream(ctx)
						if err != nil {
							fmt.Fprintf(f, "e2e: no log stream: %v\n", err)
							return
						}
						defer r.Close()
						_, _ = io.Copy(f, r)
					}()
				}
			}
			select {
			case <-ctx.Done():
			case <-time.After(500 * time.Millisecond):
			}
		}
	}()
	DeferCleanup(func() {
		cancel()
		wg.Wait()
		if CurrentSpecReport().Failed() {
			GinkgoWriter.Printf("broker pod logs of %s: %s\n", ns, dir)
		}
	})
}

// deleteAtEnd deletes the broker in ns when the spec (or, from BeforeAll,
// the Ordered container) ends, after its clients, and waits for its pods to
// go, so the next spec's pods have the node.
func deleteAtEnd(ns string) {
	DeferCleanup(func() {
		b := brokerIn(ns, nil)
		Expect(client.IgnoreNotFound(k8s.Delete(context.Background(), b))).To(Succeed())
		Eventually(func() ([]string, error) {
			var pods corev1.PodList
			if err := k8s.List(context.Background(), &pods, client.InNamespace(ns), client.MatchingLabels(resources.SelectorLabels(b))); err != nil {
				return nil, err
			}
			var names []string
			for _, p := range pods.Items {
				names = append(names, p.Name)
			}
			return names, nil
		}).WithTimeout(2*time.Minute).WithPolling(time.Second).Should(BeEmpty(), "pods of the deleted broker %s/telemetry", ns)
	})
}

// waitClustered waits until the broker in ns runs exactly n pods, all Ready
// and in one full mesh, as its status reports: replicas and readyReplicas,
// Ready and Clustered (reason Joined) for the current generation, and one
// joined member per pod with a route to each other pod.
func waitClustered(ns string, n int32, timeout time.Duration) *v1alpha1.MQTTBroker {
	GinkgoHelper()
	b := brokerIn(ns, nil)
	start := time.Now()
	var clustered *metav1.Condition
	Eventually(func() error {
		if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(b), b); err != nil {
			return err
		}
		st := b.Status
		if c := meta.FindStatusCondition(st.Conditions, v1alpha1.ConditionReady); c == nil || c.Status != metav1.ConditionTrue || c.ObservedGeneration != b.Generation {
			return fmt.Errorf("generation %d, Ready: %+v", b.Generation, c)
		}
		if st.Replicas != n || st.ReadyReplicas != n {
			return fmt.Errorf("status replicas %d, readyReplicas %d, want %d", st.Replicas, st.ReadyReplicas, n)
		}
		clustered = meta.FindStatusCondition(st.Conditions, v1alpha1.ConditionClustered)
		if clustered == nil || clustered.Status != metav1.ConditionTrue || clustered.Reason != "Joined" || clustered.ObservedGeneration != b.Generation {
			return fmt.Errorf("generation %d, Clustered: %+v", b.Generation, clustered)
		}
		if st.Cluster == nil || len(st.Cluster.Members) != int(n) {
			return fmt.Errorf("status.cluster: %+v", st.Cluster)
		}
		for _, m := range st.Cluster.Members {
			if !m.Joined || m.ConnectedPeers != n-1 || len(m.MissingPeers) > 0 || m.Message != "" {
				return fmt.Errorf("member %+v", m)
			}
		}
		var pods corev1.PodList
		if err := k8s.List(context.Background(), &pods, client.InNamespace(ns), client.MatchingLabels(resources.SelectorLabels(b))); err != nil {
			return err
		}
		if len(pods.Items) != int(n) {
			var names []string
			for _, p := range pods.Items {
				names = append(names, p.Name)
			}
			return fmt.Errorf("pods %v, want %d", names, n)
		}
		return nil
	}).WithTimeout(timeout).WithPolling(time.Second).Should(Succeed(), "broker %s/telemetry with %d pods in one mesh", ns, n)
	GinkgoWriter.Printf("%d pods Ready and Clustered after %v: %s\n", n, time.Since(start).Round(time.Second), clustered.Message)
	return b
}

// podForward forwards a local port to port of pod until the spec (or the
// Ordered container, from BeforeAll) ends, and returns the local address.
func podForward(ns, pod string, port int) string {
	GinkgoHelper()
	cs, err := kubernetes.NewForConfig(cfg)
	Expect(err).NotTo(HaveOccurred())
	transport, upgrader, err := spdy.RoundTripperFor(cfg)
	Expect(err).NotTo(HaveOccurred())
	u := cs.CoreV1().RESTClient().Post().Resource("pods").Namespace(ns).Name(pod).SubResource("portforward").URL()
	dialer := spdy.NewDialer(upgrader, &http.Client{Transport: transport}, http.MethodPost, u)
	stop, ready := make(chan struct{}), make(chan struct{})
	fw, err := portforward.NewOnAddresses(dialer, []string{"127.0.0.1"}, []string{"0:" + strconv.Itoa(port)}, stop, ready, io.Discard, io.Discard)
	Expect(err).NotTo(HaveOccurred())
	failed := make(chan error, 1)
	go func() { failed <- fw.ForwardPorts() }()
	select {
	case <-ready:
	case err := <-failed:
		Fail(fmt.Sprintf("port-forward to %s/%s:%d: %v", ns, pod, port, err))
	case <-time.After(30 * time.Second):
		close(stop)
		Fail(fmt.Sprintf("port-forward to %s/%s:%d: not ready in 30 s", ns, pod, port))
	}
	DeferCleanup(func() { close(stop) })
	ports, err := fw.GetPorts()
	Expect(err).NotTo(HaveOccurred())
	Expect(ports).NotTo(BeEmpty())
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(int(ports[0].Local)))
}

// podMQTTAddr forwards a local port to the MQTT listener of pod.
func podMQTTAddr(ns, pod string) string {
	GinkgoHelper()
	var p corev1.Pod
	Expect(k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: pod}, &p)).To(Succeed())
	for _, c := range p.Spec.Containers {
		for _, port := range c.Ports {
			if port.Name == "mqtt" {
				return podForward(ns, pod, int(port.ContainerPort))
			}
		}
	}
	Fail(fmt.Sprintf("pod %s has no port named mqtt", pod))
	return ""
}

// metric reads one unlabelled sample from a broker's /metrics.
func metric(addr, name string) (float64, error) {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	s := bufio.NewScanner(resp.Body)
	s.Buffer(make([]byte, 64*1024), 1024*1024)
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), name+" "); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	return 0, fmt.Errorf("no %s in /metrics (%v)", name, s.Err())
}

func kubectlIn(ns string, args ...string) {
	GinkgoHelper()
	bin := os.Getenv("KUBECTL")
	if bin == "" {
		bin = "kubectl"
	}
	out, err := exec.Command(bin, append([]string{"-n", ns}, args...)...).CombinedOutput()
	Expect(err).NotTo(HaveOccurred(), string(out))
}

// dialLoop retries while the broker is away (a pod restarting), as a client
// with a reconnect loop does, until timeout or until stop closes (nil: never).
func dialLoop(t mqtttest.T, addr string, c mqtttest.Credentials, clientID string, s mqtttest.Session, timeout time.Duration, stop <-chan struct{}) (*mqtttest.Client, error) {
	deadline := time.Now().Add(timeout)
	for {
		conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err == nil {
			var m *mqtttest.Client
			if m, err = mqtttest.Connect(t, conn, c, clientID, s); err == nil {
				return m, nil
			}
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%s could not connect for %v: %w", clientID, timeout, err)
		}
		select {
		case <-stop:
			return nil, fmt.Errorf("%s: stopped while connecting: %w", clientID, err)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// publisher sends QoS 1 messages "0", "1", ... to one topic, 50 a second,
// and remembers which were acknowledged (PUBACK reason 0). A broken
// connection is made again through the Service, as applications do; a
// PUBACK with an error reason counts as not acknowledged.
type publisher struct {
	stop    chan struct{}
	halted  sync.Once
	done    chan struct{}
	started atomic.Int64 // the last message sent

	mu         sync.Mutex
	acked      map[int]bool
	refused    map[byte]int // PUBACK reasons other than 0
	reconnects int
	err        error
}

func startPublisher(bg *background, first, service string, creds mqtttest.Credentials, topic string) *publisher {
	GinkgoHelper()
	p := &publisher{stop: make(chan struct{}), done: make(chan struct{}), acked: map[int]bool{}, refused: map[byte]int{}}
	p.started.Store(-1)
	pub, err := dialUntil(bg, first, creds, "publisher", mqtttest.Session{}, 20*time.Second)
	Expect(err).NotTo(HaveOccurred())
	stopped := func() bool {
		select {
		case <-p.stop:
			return true
		default:
			return false
		}
	}
	go func() {
		defer close(p.done)
		for seq := 0; !stopped(); seq++ {
			time.Sleep(20 * time.Millisecond)
			p.started.Store(int64(seq))
			code, err := pub.TryPublish(topic, strconv.Itoa(seq))
			p.mu.Lock()
			switch {
			case err == nil && code == 0:
				p.acked[seq] = true
			case err == nil:
				p.refused[code]++
			default:
				p.reconnects++
			}
			p.mu.Unlock()
			if err != nil {
				// The new connection takes over the old one, if it lives.
				if pub, err = dialLoop(bg, service, creds, "publisher", mqtttest.Session{}, 2*time.Minute, p.stop); err != nil {
					p.mu.Lock()
					p.err = err
					p.mu.Unlock()
					return
				}
			}
		}
	}()
	return p
}

// halt stops publishing and waits for the last PUBACK.
func (p *publisher) halt() {
	p.halted.Do(func() { close(p.stop) })
	<-p.done
}

func (p *publisher) ackedCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.acked)
}

// ackedAfter lists the acknowledged messages after seq.
func (p *publisher) ackedAfter(seq int) []int {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []int
	for s := range p.acked {
		if s > seq {
			out = append(out, s)
		}
	}
	sort.Ints(out)
	return out
}

func (p *publisher) String() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := fmt.Sprintf("publisher: %d sent, %d acknowledged, refused %v, %d reconnects", p.started.Load()+1, len(p.acked), p.refused, p.reconnects)
	if p.err != nil {
		s += ", gave up: " + p.err.Error()
	}
	return s
}

// collector is a persistent subscriber: it subscribes on one pod, and when
// its connection ends (the pod drains, or is gone) it connects again
// through the Service with the same session, without subscribing again: the
// session must bring its subscription.
type collector struct {
	id   string
	done chan struct{}

	mu       sync.Mutex
	seen     map[string]int
	sessions []bool // session present, per reconnect
	reasons  []string
	last     time.Time
	err      error
}

func startCollector(bg *background, first, service string, creds mqtttest.Credentials, id, filter string, stop <-chan struct{}) *collector {
	GinkgoHelper()
	c := &collector{id: id, done: make(chan struct{}), seen: map[string]int{}, last: time.Now()}
	session := mqtttest.Session{Persistent: true, ExpirySeconds: 3600}
	m, err := dialUntil(bg, first, creds, id, session, 20*time.Second)
	Expect(err).NotTo(HaveOccurred())
	Expect(m.Subscribe(bg, filter)).To(Equal(byte(1)))
	forward := func(m *mqtttest.Client) {
		go func() {
			for p := range m.Received {
				c.mu.Lock()
				c.seen[string(p.Payload)]++
				c.mu.Unlock()
			}
		}()
	}
	forward(m)
	go func() {
		defer close(c.done)
		for {
			select {
			case <-stop:
				return
			case <-m.Disconnected:
			}
			reason := "connection lost"
			if d := m.ServerDisconnect; d != nil {
				reason = fmt.Sprintf("DISCONNECT 0x%02X", d.ReasonCode)
			}
			var err error
			if m, err = dialLoop(bg, service, creds, id, session, 2*time.Minute, stop); err != nil {
				c.mu.Lock()
				c.err = err
				c.mu.Unlock()
				return
			}
			forward(m)
			c.mu.Lock()
			c.sessions = append(c.sessions, m.SessionPresent)
			c.reasons = append(c.reasons, reason)
			c.last = time.Now()
			c.mu.Unlock()
		}
	}()
	return c
}

func (c *collector) wait() { <-c.done }

// connections counts the connections made: the first and the reconnects.
func (c *collector) connections() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return 1 + len(c.sessions)
}

func (c *collector) lastConnect() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.last
}

// sessionsLost lists the reconnects whose CONNACK said no session present.
func (c *collector) sessionsLost() []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	var lost []int
	for i, present := range c.sessions {
		if !present {
			lost = append(lost, i+1)
		}
	}
	return lost
}

// expectAll waits until every message in want has arrived.
func (c *collector) expectAll(want []int, timeout time.Duration) {
	GinkgoHelper()
	Expect(want).NotTo(BeEmpty())
	Eventually(func() string {
		c.mu.Lock()
		defer c.mu.Unlock()
		var missing []int
		for _, s := range want {
			if c.seen[strconv.Itoa(s)] == 0 {
				missing = append(missing, s)
			}
		}
		if len(missing) == 0 {
			return ""
		}
		return fmt.Sprintf("%d of %d acknowledged messages missing: %s", len(missing), len(want), ranges(missing))
	}).WithTimeout(timeout).WithPolling(500*time.Millisecond).Should(BeEmpty(), "%s lost acknowledged messages (%s)", c.id, c)
}

func (c *collector) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	dups := 0
	for _, n := range c.seen {
		if n > 1 {
			dups += n - 1
		}
	}
	s := fmt.Sprintf("%s: %d distinct messages received, %d duplicates, %d reconnects (after %v; session present %v)", c.id, len(c.seen), dups, len(c.sessions), c.reasons, c.sessions)
	if c.err != nil {
		s += ", gave up: " + c.err.Error()
	}
	return s
}

// ranges writes sorted numbers as ranges: 3-7, 12.
func ranges(ns []int) string {
	var parts []string
	for i := 0; i < len(ns); {
		j := i
		for j+1 < len(ns) && ns[j+1] == ns[j]+1 {
			j++
		}
		if i == j {
			parts = append(parts, strconv.Itoa(ns[i]))
		} else {
			parts = append(parts, fmt.Sprintf("%d-%d", ns[i], ns[j]))
		}
		i = j + 1
	}
	return strings.Join(parts, ", ")
}
