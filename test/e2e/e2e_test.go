//go:build e2e

package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/eclipse/paho.golang/paho"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/mqtt-operator/mqtt-operator/api/v1alpha1"
	"github.com/mqtt-operator/mqtt-operator/internal/kubectlmqtt"
	"github.com/mqtt-operator/mqtt-operator/test/mqtttest"
)

// namespaces the specs created; the last spec deletes them all.
var namespaces []string

func newNamespace() string {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
		Name: fmt.Sprintf("e2e-%06d", rand.IntN(1000000)),
		// Broker pods must pass the restricted Pod Security Standard.
		Labels: map[string]string{"pod-security.kubernetes.io/enforce": "restricted"},
	}}
	Expect(k8s.Create(context.Background(), ns)).To(Succeed())
	namespaces = append(namespaces, ns.Name)
	return ns.Name
}

func create(objs ...client.Object) {
	for _, o := range objs {
		Expect(k8s.Create(context.Background(), o)).To(Succeed(), "creating %T %s", o, o.GetName())
	}
}

// brokerIn is an MQTTBroker named telemetry reachable from outside the
// cluster through a NodePort Service.
func brokerIn(ns string, mutate func(*v1alpha1.MQTTBroker)) *v1alpha1.MQTTBroker {
	b := &v1alpha1.MQTTBroker{ObjectMeta: metav1.ObjectMeta{Name: "telemetry", Namespace: ns}}
	b.Spec.Service.Type = corev1.ServiceTypeNodePort
	if mutate != nil {
		mutate(b)
	}
	return b
}

func persistent(b *v1alpha1.MQTTBroker) {
	b.Spec.Storage.Type = v1alpha1.StoragePersistent
	size := resource.MustParse("256Mi")
	b.Spec.Storage.Size = &size
}

func userIn(ns, name string) *v1alpha1.MQTTUser {
	return &v1alpha1.MQTTUser{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: v1alpha1.MQTTUserSpec{BrokerRef: v1alpha1.BrokerReference{Name: "telemetry"}}}
}

func aclIn(ns, name string, subjects v1alpha1.ACLSubjects, rules ...v1alpha1.ACLRule) *v1alpha1.TopicACL {
	return &v1alpha1.TopicACL{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: v1alpha1.TopicACLSpec{BrokerRef: v1alpha1.BrokerReference{Name: "telemetry"}, Subjects: subjects, Rules: rules}}
}

func rule(topic string, access v1alpha1.ACLAccess, effect v1alpha1.ACLEffect) v1alpha1.ACLRule {
	return v1alpha1.ACLRule{Topic: v1alpha1.TopicFilter(topic), Access: access, Effect: effect}
}

// waitReady waits for obj's Ready condition to be True for its current
// generation.
func waitReady(obj client.Object, timeout time.Duration) {
	GinkgoHelper()
	Eventually(func() error {
		if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(obj), obj); err != nil {
			return err
		}
		var conds []metav1.Condition
		switch o := obj.(type) {
		case *v1alpha1.MQTTBroker:
			conds = o.Status.Conditions
		case *v1alpha1.MQTTUser:
			conds = o.Status.Conditions
		case *v1alpha1.TopicACL:
			conds = o.Status.Conditions
		}
		c := meta.FindStatusCondition(conds, v1alpha1.ConditionReady)
		if c == nil || c.Status != metav1.ConditionTrue || c.ObservedGeneration != obj.GetGeneration() {
			return fmt.Errorf("%T %s Ready: %+v", obj, obj.GetName(), c)
		}
		return nil
	}).WithTimeout(timeout).WithPolling(time.Second).Should(Succeed())
}

// nodeAddr is where a client outside the cluster reaches a listener of the
// broker: the node's address and the client Service's node port.
func nodeAddr(ns, port string) string {
	GinkgoHelper()
	var svc corev1.Service
	Expect(k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "telemetry"}, &svc)).To(Succeed())
	for _, p := range svc.Spec.Ports {
		if p.Name == port && p.NodePort != 0 {
			return net.JoinHostPort(nodeIP, strconv.Itoa(int(p.NodePort)))
		}
	}
	Fail(fmt.Sprintf("Service telemetry has no node port %q: %+v", port, svc.Spec.Ports))
	return ""
}

func connectionSecret(ns, name string) *corev1.Secret {
	GinkgoHelper()
	var s corev1.Secret
	Eventually(func() error {
		return k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, &s)
	}).WithTimeout(30 * time.Second).Should(Succeed())
	return &s
}

func credentialsOf(ns, user string) mqtttest.Credentials {
	GinkgoHelper()
	s := connectionSecret(ns, user+"-mqtt")
	return mqtttest.Credentials{Username: string(s.Data["username"]), Password: string(s.Data["password"])}
}

func brokerPod(ns string) *corev1.Pod {
	GinkgoHelper()
	var p corev1.Pod
	Expect(k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "telemetry-0"}, &p)).To(Succeed())
	return &p
}

func restarts(p *corev1.Pod) int32 {
	var n int32
	for _, c := range p.Status.ContainerStatuses {
		n += c.RestartCount
	}
	return n
}

// dialUntil retries while the broker is away (a pod restarting), as a
// client with a reconnect loop does.
func dialUntil(t mqtttest.T, addr string, c mqtttest.Credentials, clientID string, s mqtttest.Session, timeout time.Duration) (*mqtttest.Client, error) {
	return dialLoop(t, addr, c, clientID, s, timeout, nil)
}

// background is an mqtttest.T for clients a spec's goroutines open: their
// cleanups run when the spec ends.
type background struct {
	mu       sync.Mutex
	cleanups []func()
}

func (b *background) Helper()                        {}
func (b *background) Fatalf(format string, a ...any) { panic(fmt.Sprintf(format, a...)) }
func (b *background) Cleanup(f func()) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.cleanups = append(b.cleanups, f)
}
func (b *background) run() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, f := range b.cleanups {
		f()
	}
}

var _ = Describe("mqtt-operator", Ordered, func() {
	It("enforces users and ACLs from YAML, and changes to them live, without restarting the broker", func() {
		ns := newNamespace()
		create(brokerIn(ns, nil), userIn(ns, "gateway"), userIn(ns, "dashboard"),
			aclIn(ns, "gateway", v1alpha1.ACLSubjects{Users: []v1alpha1.Username{"gateway"}},
				rule("telemetry/%u/#", v1alpha1.AccessPublish, v1alpha1.EffectAllow)),
			aclIn(ns, "dashboard", v1alpha1.ACLSubjects{Users: []v1alpha1.Username{"dashboard"}},
				rule("telemetry/#", v1alpha1.AccessSubscribe, v1alpha1.EffectAllow)))
		waitReady(brokerIn(ns, nil), 3*time.Minute)
		for _, u := range []string{"gateway", "dashboard"} {
			waitReady(userIn(ns, u), time.Minute)
		}
		pod := brokerPod(ns)
		addr := nodeAddr(ns, "mqtt")
		t := GinkgoT()
		// A Ready broker may be a moment ahead of kube-proxy routing its
		// Service; clients retry, as real ones do.
		gw, err := dialUntil(t, addr, credentialsOf(ns, "gateway"), "gateway-1", mqtttest.Session{}, 30*time.Second)
		Expect(err).NotTo(HaveOccurred())
		dash := mqtttest.MustDial(t, addr, credentialsOf(ns, "dashboard"), "dashboard-1")

		By("allowed and denied publish and subscribe, exactly as the ACLs say")
		Expect(dash.Subscribe(t, "telemetry/#")).To(BeNumerically("<=", 2))
		Expect(dash.Subscribe(t, "commands/#")).To(Equal(byte(0x87)))
		Expect(gw.Publish(t, "telemetry/gateway/temp", "21.5")).To(Equal(byte(0)))
		Expect(dash.Next(t)).To(Equal("21.5"))
		Expect(gw.Publish(t, "telemetry/other/temp", "spoofed")).To(Equal(byte(0x87)))
		Expect(dash.Publish(t, "telemetry/dashboard/x", "x")).To(Equal(byte(0x87)))

		By("an ACL change applies to the live session")
		acl := &v1alpha1.TopicACL{}
		Expect(k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "gateway"}, acl)).To(Succeed())
		acl.Spec.Rules = append([]v1alpha1.ACLRule{rule("telemetry/%u/secret", v1alpha1.AccessPublish, v1alpha1.EffectDeny)}, acl.Spec.Rules...)
		Expect(k8s.Update(context.Background(), acl)).To(Succeed())
		Eventually(func() byte { return gw.Publish(t, "telemetry/gateway/secret", "x") }).WithTimeout(10 * time.Second).Should(Equal(byte(0x87)))
		Expect(gw.Publish(t, "telemetry/gateway/temp", "22")).To(Equal(byte(0)))

		By("kubectl mqtt: status, and sub and pub as the MQTTUsers through a port-forward")
		plugin := func(out io.Writer, args ...string) error {
			return kubectlmqtt.Run(context.Background(), kubectlmqtt.Env{Config: cfg, Namespace: ns, Out: out, Err: io.Discard}, args)
		}
		var status strings.Builder
		Expect(plugin(&status, "status")).To(Succeed())
		Expect(status.String()).To(ContainSubstring("telemetry-0"))
		Expect(status.String()).To(ContainSubstring("(generation "))
		var received strings.Builder
		subscribed := make(chan error, 1)
		go func() {
			subscribed <- plugin(&received, "sub", "--as", "dashboard", "--count", "1", "--timeout", "60s", "telemetry/gateway/plugin")
		}()
		Eventually(func() error {
			// The subscriber may not be in yet: publish until it has the message.
			if err := plugin(io.Discard, "pub", "--as", "gateway", "--qos", "0", "telemetry/gateway/plugin", "via kubectl"); err != nil {
				return err
			}
			select {
			case err := <-subscribed:
				subscribed <- err
				return err
			case <-time.After(time.Second):
				return errors.New("not received yet")
			}
		}).WithTimeout(60 * time.Second).Should(Succeed())
		Expect(received.String()).To(Equal("telemetry/gateway/plugin via kubectl\n"))
		Expect(plugin(io.Discard, "pub", "--as", "gateway", "telemetry/other/temp", "spoofed")).To(MatchError(ContainSubstring("0x87")))

		By("deleting a user ends its live session")
		Expect(k8s.Delete(context.Background(), userIn(ns, "dashboard"))).To(Succeed())
		Eventually(dash.Disconnected).WithTimeout(10 * time.Second).Should(BeClosed())

		now := brokerPod(ns)
		Expect(now.UID).To(Equal(pod.UID), "the broker pod was replaced")
		Expect(restarts(now)).To(BeZero(), "the broker restarted")
	})

	It("rolls the broker for a listener change, within its PodDisruptionBudget", func() {
		ns := newNamespace()
		create(brokerIn(ns, nil))
		b := brokerIn(ns, nil)
		waitReady(b, 3*time.Minute)
		before := brokerPod(ns)
		var pdb policyv1.PodDisruptionBudget
		Expect(k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "telemetry"}, &pdb)).To(Succeed())
		Expect(pdb.Spec.MaxUnavailable.IntValue()).To(Equal(1))
		var sts appsv1.StatefulSet
		Expect(k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "telemetry"}, &sts)).To(Succeed())
		Expect(sts.Spec.UpdateStrategy.Type).To(Equal(appsv1.RollingUpdateStatefulSetStrategyType))

		Expect(k8s.Get(context.Background(), client.ObjectKeyFromObject(b), b)).To(Succeed())
		b.Spec.Listeners.WebSocket = v1alpha1.WebSocketListener{Enabled: true, Port: 8083}
		Expect(k8s.Update(context.Background(), b)).To(Succeed())
		Eventually(func() types.UID {
			var p corev1.Pod
			_ = k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "telemetry-0"}, &p)
			return p.UID
		}).WithTimeout(3 * time.Minute).ShouldNot(Equal(before.UID))
		waitReady(b, 3*time.Minute)
		_ = nodeAddr(ns, "ws") // the Service gained the listener
	})

	It("speaks TLS that clients verify with the CA from their connection Secret", func() {
		ns := newNamespace()
		create(brokerIn(ns, func(b *v1alpha1.MQTTBroker) {
			b.Spec.Listeners.TLS = v1alpha1.TLSListener{Enabled: true, Port: 8883}
		}), userIn(ns, "app"), aclIn(ns, "app", v1alpha1.ACLSubjects{AllAuthenticated: true},
			rule("apps/%u/#", v1alpha1.AccessPublishSubscribe, v1alpha1.EffectAllow)))
		waitReady(brokerIn(ns, nil), 3*time.Minute)
		waitReady(userIn(ns, "app"), time.Minute)
		secret := connectionSecret(ns, "app-mqtt")
		roots := x509.NewCertPool()
		Expect(roots.AppendCertsFromPEM(secret.Data["ca.crt"])).To(BeTrue(), "no ca.crt in the connection Secret")
		// The certificate names the Service; the client reaches it through
		// the node, so it names the host it expects.
		var conn *tls.Conn
		Eventually(func() (err error) {
			conn, err = tls.Dial("tcp", nodeAddr(ns, "mqtts"), &tls.Config{RootCAs: roots, ServerName: "telemetry." + ns + ".svc", MinVersion: tls.VersionTLS12})
			return err
		}).WithTimeout(30*time.Second).WithPolling(500*time.Millisecond).Should(Succeed(), "TLS handshake verified with the connection Secret's CA")
		t := GinkgoT()
		app, err := mqtttest.Connect(t, conn, credentialsOf(ns, "app"), "app-1", mqtttest.Session{})
		Expect(err).NotTo(HaveOccurred())
		Expect(app.Subscribe(t, "apps/app/#")).To(BeNumerically("<=", 2))
		Expect(app.Publish(t, "apps/app/hello", "over TLS")).To(Equal(byte(0)))
		Expect(app.Next(t)).To(Equal("over TLS"))
	})

	It("loses no acknowledged QoS 1 message when a broker pod is deleted mid-traffic", func() {
		ns := newNamespace()
		create(brokerIn(ns, func(b *v1alpha1.MQTTBroker) {
			persistent(b)
			b.Spec.Limits.MaxQueuedMessages = 20000 // room for everything sent while the collector is away
		}), userIn(ns, "publisher"), userIn(ns, "collector"),
			aclIn(ns, "data", v1alpha1.ACLSubjects{AllAuthenticated: true}, rule("data/#", v1alpha1.AccessPublishSubscribe, v1alpha1.EffectAllow)))
		waitReady(brokerIn(ns, nil), 3*time.Minute)
		waitReady(userIn(ns, "publisher"), time.Minute)
		waitReady(userIn(ns, "collector"), time.Minute)
		addr := nodeAddr(ns, "mqtt")
		pubCreds, colCreds := credentialsOf(ns, "publisher"), credentialsOf(ns, "collector")
		bg := &background{}
		DeferCleanup(bg.run)
		session := mqtttest.Session{Persistent: true, ExpirySeconds: 3600}

		// The collector's persistent session gets every message; whatever
		// arrives on any of its connections lands in got.
		got := make(chan string, 10000)
		forward := func(c *mqtttest.Client) {
			go func() {
				for p := range c.Received {
					got <- string(p.Payload)
				}
			}()
		}
		col, err := dialUntil(bg, addr, colCreds, "collector", session, 10*time.Second)
		Expect(err).NotTo(HaveOccurred())
		Expect(col.Subscribe(bg, "data/#")).To(Equal(byte(1)))
		forward(col)

		// The publisher sends sequence numbers, 50 a second, and remembers
		// which were acknowledged; a broken connection is retried, as
		// applications do.
		var mu sync.Mutex
		acked := map[string]bool{}
		stop := make(chan struct{})
		published := make(chan struct{})
		go func() {
			defer close(published)
			pub, err := dialUntil(bg, addr, pubCreds, "publisher", mqtttest.Session{}, 3*time.Minute)
			for seq := 0; err == nil; seq++ {
				select {
				case <-stop:
					return
				default:
				}
				time.Sleep(20 * time.Millisecond)
				payload := strconv.Itoa(seq)
				if code, perr := pub.TryPublish("data/seq", payload); perr == nil && code == 0 {
					mu.Lock()
					acked[payload] = true
					mu.Unlock()
					continue
				}
				pub, err = dialUntil(bg, addr, pubCreds, "publisher", mqtttest.Session{}, 3*time.Minute)
			}
		}()
		ackedCount := func() int {
			mu.Lock()
			defer mu.Unlock()
			return len(acked)
		}
		Eventually(ackedCount).WithTimeout(30 * time.Second).Should(BeNumerically(">=", 100))

		By("deleting the broker pod while messages flow")
		old := brokerPod(ns)
		Expect(k8s.Delete(context.Background(), old)).To(Succeed())
		Eventually(func() bool {
			p := &corev1.Pod{}
			err := k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "telemetry-0"}, p)
			return err == nil && p.UID != old.UID && isReady(p)
		}).WithTimeout(3 * time.Minute).WithPolling(time.Second).Should(BeTrue())
		before := ackedCount()
		Eventually(ackedCount).WithTimeout(time.Minute).Should(BeNumerically(">=", before+100), "publishing did not resume after the pod came back")
		close(stop)
		<-published

		By("the collector's persistent session receives every acknowledged message")
		col, err = dialUntil(bg, addr, colCreds, "collector", session, time.Minute)
		Expect(err).NotTo(HaveOccurred())
		forward(col)
		seen := map[string]bool{}
		mu.Lock()
		want := len(acked)
		mu.Unlock()
		Eventually(func() []string {
			for {
				select {
				case p := <-got:
					seen[p] = true
					continue
				default:
				}
				break
			}
			mu.Lock()
			defer mu.Unlock()
			var missing []string
			for p := range acked {
				if !seen[p] {
					missing = append(missing, p)
				}
			}
			return missing
		}).WithTimeout(time.Minute).WithPolling(500*time.Millisecond).Should(BeEmpty(), "acknowledged messages lost (of %d)", want)
		GinkgoWriter.Printf("%d acknowledged messages, all received across the pod's deletion\n", want)
	})

	It("scales to 0 and back with kubectl scale, keeping persistent sessions", func() {
		ns := newNamespace()
		create(brokerIn(ns, persistent), userIn(ns, "sender"), userIn(ns, "sleeper"),
			aclIn(ns, "data", v1alpha1.ACLSubjects{AllAuthenticated: true}, rule("data/#", v1alpha1.AccessPublishSubscribe, v1alpha1.EffectAllow)))
		b := brokerIn(ns, nil)
		waitReady(b, 3*time.Minute)
		waitReady(userIn(ns, "sender"), time.Minute)
		waitReady(userIn(ns, "sleeper"), time.Minute)
		addr := nodeAddr(ns, "mqtt")
		t := GinkgoT()
		session := mqtttest.Session{Persistent: true, ExpirySeconds: 3600}
		sleeperCreds := credentialsOf(ns, "sleeper")

		sleeper, err := dialUntil(t, addr, sleeperCreds, "sleeper", session, 30*time.Second)
		Expect(err).NotTo(HaveOccurred())
		Expect(sleeper.Subscribe(t, "data/#")).To(Equal(byte(1)))
		Expect(sleeper.Disconnect(&paho.Disconnect{})).To(Succeed())
		sender := mqtttest.MustDial(t, addr, credentialsOf(ns, "sender"), "sender")
		for i := range 10 {
			Expect(sender.Publish(t, "data/queued", strconv.Itoa(i))).To(Equal(byte(0)))
		}
		_ = sender.Disconnect(&paho.Disconnect{})

		kubectl := func(args ...string) {
			GinkgoHelper()
			bin := os.Getenv("KUBECTL")
			if bin == "" {
				bin = "kubectl"
			}
			out, err := exec.Command(bin, append([]string{"-n", ns}, args...)...).CombinedOutput()
			Expect(err).NotTo(HaveOccurred(), string(out))
		}
		By("kubectl scale --replicas=0")
		kubectl("scale", "mqttbroker/telemetry", "--replicas=0")
		Eventually(func() bool {
			err := k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "telemetry-0"}, &corev1.Pod{})
			return apierrors.IsNotFound(err)
		}).WithTimeout(2 * time.Minute).WithPolling(time.Second).Should(BeTrue())
		waitReady(b, time.Minute)
		Expect(meta.FindStatusCondition(b.Status.Conditions, v1alpha1.ConditionReady).Reason).To(Equal("ScaledToZero"))

		By("kubectl scale --replicas=1")
		kubectl("scale", "mqttbroker/telemetry", "--replicas=1")
		waitReady(b, 3*time.Minute)
		Expect(b.Status.ReadyReplicas).To(Equal(int32(1)))
		back, err := dialUntil(t, addr, sleeperCreds, "sleeper", session, time.Minute)
		Expect(err).NotTo(HaveOccurred())
		var payloads []string
		for range 10 {
			payloads = append(payloads, back.Next(t))
		}
		Expect(payloads).To(ConsistOf("0", "1", "2", "3", "4", "5", "6", "7", "8", "9"))
	})

	Describe("a clustered broker (replicas: 3)", clusterSpecs)

	It("uninstalls cleanly: no finalizers left, and deleting namespaces completes", func() {
		helm := os.Getenv("HELM")
		Expect(helm).NotTo(BeEmpty(), "HELM must be set: run make test-e2e")
		out, err := exec.Command(helm, "uninstall", "mqtt-operator", "--namespace", "mqtt-operator-system", "--wait", "--timeout", "2m").CombinedOutput()
		Expect(err).NotTo(HaveOccurred(), string(out))
		Eventually(func() bool {
			var d appsv1.DeploymentList
			Expect(k8s.List(context.Background(), &d, client.InNamespace("mqtt-operator-system"))).To(Succeed())
			return len(d.Items) == 0
		}).WithTimeout(time.Minute).Should(BeTrue())

		for _, list := range []client.ObjectList{&v1alpha1.MQTTBrokerList{}, &v1alpha1.MQTTUserList{}, &v1alpha1.TopicACLList{}} {
			Expect(k8s.List(context.Background(), list)).To(Succeed())
			items, _ := meta.ExtractList(list)
			for _, o := range items {
				Expect(o.(client.Object).GetFinalizers()).To(BeEmpty(), "%T %s has finalizers", o, o.(client.Object).GetName())
			}
		}
		for _, ns := range namespaces {
			Expect(k8s.Delete(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})).To(Succeed())
		}
		Eventually(func() []string {
			var left []string
			for _, ns := range namespaces {
				if err := k8s.Get(context.Background(), client.ObjectKey{Name: ns}, &corev1.Namespace{}); !apierrors.IsNotFound(err) {
					left = append(left, ns)
				}
			}
			return left
		}).WithTimeout(3*time.Minute).WithPolling(2*time.Second).Should(BeEmpty(), "namespaces stuck in deletion without the operator")
	})
})

func isReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}
