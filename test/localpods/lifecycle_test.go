package localpods

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	v1alpha1 "github.com/mqtt-operator/mqtt-operator/api/v1alpha1"
	"github.com/mqtt-operator/mqtt-operator/controllers"
	"github.com/mqtt-operator/mqtt-operator/internal/resources"
	"github.com/mqtt-operator/mqtt-operator/internal/testenv"
	"github.com/mqtt-operator/mqtt-operator/test/secretscan"
)

const usersAndACL = `apiVersion: broker.mqtt-operator.io/v1alpha1
kind: MQTTUser
metadata: {name: alice}
spec: {brokerRef: {name: telemetry}}
---
apiVersion: broker.mqtt-operator.io/v1alpha1
kind: TopicACL
metadata: {name: devices}
spec:
  brokerRef: {name: telemetry}
  subjects: {allAuthenticated: true}
  rules: [{topic: "devices/#", access: PublishSubscribe}]`

const bob = `apiVersion: broker.mqtt-operator.io/v1alpha1
kind: MQTTUser
metadata: {name: bob}
spec: {brokerRef: {name: telemetry}}`

// TestOperatorBrokerLifecycle is the whole path with real processes: YAML,
// operator, StatefulSet, pod, broker, MQTT client; then what a broker lives
// through: a new user, a crash, a deleted pod, a listener change, scaling to
// zero and back, and the node (harness) stopping. Mounted files never change
// while a pod runs (VolumeSyncDelay is an hour), so every change reaches the
// broker through the operator's push.
func TestOperatorBrokerLifecycle(t *testing.T) {
	began := time.Now()
	env, bin := controlPlane(t)
	c := env.Client
	ns := newNamespace(t, c)
	h, workDir := startHarness(t, env, bin, ns, time.Hour, nil)
	t.Logf("control plane, operator, broker build and harness ready in %v", time.Since(began).Round(time.Millisecond))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	podKey := types.NamespacedName{Namespace: ns, Name: "telemetry-0"}

	broker := sampleBroker(t, ns)
	if err := c.Create(ctx, broker); err != nil {
		t.Fatal(err)
	}
	apply(t, c, ns, usersAndACL)
	waitReady(ctx, t, h, ns, 1)
	p := getPod(ctx, t, c, podKey)
	ip := h.PodAddr(ns, podKey.Name)
	if cs := p.Status.ContainerStatuses[0]; p.Status.Phase != corev1.PodRunning || p.Status.PodIP != ip || p.Status.HostIP != hostIP ||
		!cs.Ready || cs.RestartCount != 0 || !ptr.Deref(cs.Started, false) || cs.ContainerID == "" || !strings.HasPrefix(ip, "127.") || ip == hostIP {
		t.Fatalf("ready pod status: %s", describe(p))
	}
	if ref := p.OwnerReferences; len(ref) != 1 || ref[0].Kind != "StatefulSet" || p.Labels[resources.LabelInstance] != "telemetry" {
		t.Errorf("pod owner %v, labels %v", ref, p.Labels)
	}
	eventually(t, 10*time.Second, "MQTTBroker Ready with one ready replica", func() error {
		return brokerCondition(ctx, c, broker, v1alpha1.ConditionReady, controllers.ReasonPodsReady, 1)
	})

	mqttAddr := ip + ":1883"
	alicePassword := password(ctx, t, c, ns, "alice")
	eventually(t, 10*time.Second, "alice can log in", func() error { return canConnect(mqttAddr, "alice", alicePassword) })
	alice := mustConnect(t, mqttAddr, "alice", alicePassword)
	if got, err := subscribeAndPublish(alice, "devices/hello", "hi"); err != nil || got != "hi" {
		t.Fatalf("alice's round trip: %q %v", got, err)
	}
	if err := publishRetained(alice, "devices/state", "kept"); err != nil {
		t.Fatal(err)
	}
	alice.Disconnect(100) // a connected client would stretch every drain below

	added := time.Now()
	apply(t, c, ns, bob)
	bobPassword := password(ctx, t, c, ns, "bob")
	eventually(t, 10*time.Second, "bob can log in (pushed)", func() error { return canConnect(mqttAddr, "bob", bobPassword) })
	t.Logf("new user enforced %v after the MQTTUser was created", time.Since(added).Round(time.Millisecond))

	// A crash restarts the process in place. It starts from the pod's files,
	// which predate bob: he gets in again only once the operator has pushed
	// to the new container.
	before := getPod(ctx, t, c, podKey)
	oldPID := h.pids()[podKey]
	if err := h.Kill(ns, podKey.Name); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "crashed broker restarted in place", func() error {
		p := getPod(ctx, t, c, podKey)
		if pid := h.pids()[podKey]; p == nil || p.UID != before.UID || pid == oldPID || pid == 0 || restarts(p) != 1 || !runningAndReady(p) {
			return fmt.Errorf("pod %s", describe(p))
		}
		if exit := p.Status.ContainerStatuses[0].LastTerminationState.Terminated; exit == nil || exit.ExitCode != 137 {
			return fmt.Errorf("last termination %+v, want exit code 137", exit)
		}
		return nil
	})
	eventually(t, 10*time.Second, "bob can log in after the crash (pushed again)", func() error { return canConnect(mqttAddr, "bob", bobPassword) })

	// A deleted pod comes back as a new pod, with its claim's data.
	if err := c.Delete(ctx, before); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "deleted pod re-created", func() error {
		p := getPod(ctx, t, c, podKey)
		if p == nil || p.UID == before.UID || restarts(p) != 0 || !runningAndReady(p) {
			return fmt.Errorf("pod %s", describe(p))
		}
		return nil
	})
	expectRetained(t, mqttAddr, alicePassword, "kept")

	// A listener change rolls the pod.
	before = getPod(ctx, t, c, podKey)
	patchBroker(ctx, t, c, broker, func(b *v1alpha1.MQTTBroker) { b.Spec.Listeners.TCP.Port = 1884 })
	eventually(t, 30*time.Second, "pod rolled for the new listener", func() error {
		if p := getPod(ctx, t, c, podKey); p == nil || p.UID == before.UID || !runningAndReady(p) {
			return fmt.Errorf("pod %s", describe(p))
		}
		return nil
	})
	waitReady(ctx, t, h, ns, 1)
	mqttAddr = ip + ":1884"
	expectRetained(t, mqttAddr, alicePassword, "kept")
	if err := canConnect(ip+":1883", "alice", alicePassword); err == nil {
		t.Error("the old listener still accepts clients after the roll")
	}

	// Scaling to zero stops the broker and keeps its data; scaling back brings it.
	patchBroker(ctx, t, c, broker, func(b *v1alpha1.MQTTBroker) { b.Spec.Replicas = ptr.To(int32(0)) })
	waitReady(ctx, t, h, ns, 0)
	eventually(t, 20*time.Second, "no pod and no process at zero replicas", func() error {
		if p := getPod(ctx, t, c, podKey); p != nil || len(h.pids()) != 0 {
			return fmt.Errorf("pod %s, processes %v", describe(p), h.pids())
		}
		return brokerCondition(ctx, c, broker, v1alpha1.ConditionAvailable, controllers.ReasonScaledToZero, 0)
	})
	if entries, err := os.ReadDir(filepath.Join(workDir, ns, "pvc", "data-telemetry-0")); err != nil || len(entries) == 0 {
		t.Errorf("the claim's data should survive scaling to zero: %v %v", entries, err)
	}
	patchBroker(ctx, t, c, broker, func(b *v1alpha1.MQTTBroker) { b.Spec.Replicas = ptr.To(int32(1)) })
	waitReady(ctx, t, h, ns, 1)
	expectRetained(t, mqttAddr, alicePassword, "kept")
	eventually(t, 10*time.Second, "the operator reports the new pod enforcing the bundle", func() error {
		return brokerCondition(ctx, c, broker, v1alpha1.ConditionAuthSynced, controllers.ReasonAuthInSync, 1)
	})

	var admin corev1.Secret
	if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "telemetry-admin"}, &admin); err != nil {
		t.Fatal(err)
	}
	noSecretsIn(t, h.Output(ns, podKey.Name), map[string]string{
		"alice's password": alicePassword, "bob's password": bobPassword, "the admin token": string(admin.Data[resources.AdminTokenKey]),
	})

	running := h.pids()
	h.Stop()
	for pod, pid := range running {
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("the broker of %s (pid %d) outlived Stop: %v", pod, pid, err)
		}
	}
	if len(running) != 1 || len(h.pids()) != 0 {
		t.Errorf("processes before Stop %v, after %v", running, h.pids())
	}
	if p := getPod(ctx, t, c, podKey); p == nil || runningAndReady(p) || p.Status.ContainerStatuses[0].State.Terminated == nil {
		t.Errorf("after Stop the pod should report its container terminated: %s", describe(p))
	}
	t.Logf("whole lifecycle in %v", time.Since(began).Round(time.Millisecond))
}

// sampleBroker is config/samples' MQTTBroker, in namespace ns.
// sample is the sample broker with alice's user and ACL on local pods, in a
// namespace of its own.
type sample struct {
	env    *testenv.Env
	ns     string
	h      *Harness
	broker *v1alpha1.MQTTBroker
}

// startSample starts the operator and local pods for a new namespace,
// applies the sample broker and usersAndACL, and waits for its ready pod.
func startSample(ctx context.Context, t *testing.T) sample {
	t.Helper()
	env, bin := controlPlane(t)
	ns := newNamespace(t, env.Client)
	h, _ := startHarness(t, env, bin, ns, time.Hour, nil)
	broker := sampleBroker(t, ns)
	if err := env.Client.Create(ctx, broker); err != nil {
		t.Fatal(err)
	}
	apply(t, env.Client, ns, usersAndACL)
	waitReady(ctx, t, h, ns, 1)
	return sample{env: env, ns: ns, h: h, broker: broker}
}

func sampleBroker(t *testing.T, ns string) *v1alpha1.MQTTBroker {
	t.Helper()
	objs, err := testenv.ReadManifests(filepath.Join(testenv.RepoRoot(), "config", "samples", "broker_v1alpha1_mqttbroker.yaml"))
	if err != nil || len(objs) != 1 {
		t.Fatalf("reading the sample broker: %d objects, %v", len(objs), err)
	}
	data, err := objs[0].MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	b := &v1alpha1.MQTTBroker{}
	if err := yaml.UnmarshalStrict(data, b); err != nil {
		t.Fatalf("parsing the sample broker: %v", err)
	}
	b.Namespace = ns
	return b
}

// password is the generated password in the user's connection Secret.
func password(ctx context.Context, t *testing.T, c client.Client, ns, user string) string {
	t.Helper()
	var pw string
	eventually(t, 10*time.Second, "connection Secret of "+user, func() error {
		var s corev1.Secret
		if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: user + "-mqtt"}, &s); err != nil {
			return err
		}
		if pw = string(s.Data[resources.ConnectionPasswordKey]); pw == "" {
			return errors.New("no password yet")
		}
		return nil
	})
	return pw
}

func noSecretsIn(t *testing.T, out string, secrets map[string]string) {
	t.Helper()
	if out == "" {
		t.Error("no broker output to check")
	}
	secretscan.Absent(t, "broker's output", out, secrets)
}

func waitReady(ctx context.Context, t *testing.T, h *Harness, ns string, n int) {
	t.Helper()
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := h.WaitReady(wctx, ns, "telemetry", n); err != nil {
		t.Fatal(err)
	}
}

func getPod(ctx context.Context, t *testing.T, c client.Client, key types.NamespacedName) *corev1.Pod {
	t.Helper()
	p := &corev1.Pod{}
	if err := c.Get(ctx, key, p); err != nil {
		if client.IgnoreNotFound(err) != nil {
			t.Fatal(err)
		}
		return nil
	}
	return p
}

// restarts is the broker container's restartCount, -1 before it has one.
func restarts(p *corev1.Pod) int32 {
	if len(p.Status.ContainerStatuses) == 0 {
		return -1
	}
	return p.Status.ContainerStatuses[0].RestartCount
}

func describe(p *corev1.Pod) string {
	if p == nil {
		return "absent"
	}
	s := fmt.Sprintf("uid %s phase %s ready %v", p.UID, p.Status.Phase, runningAndReady(p))
	for _, cs := range p.Status.ContainerStatuses {
		s += fmt.Sprintf(" restarts %d state %+v", cs.RestartCount, cs.State)
	}
	return s
}

func brokerCondition(ctx context.Context, c client.Client, b *v1alpha1.MQTTBroker, cond, reason string, ready int32) error {
	var got v1alpha1.MQTTBroker
	if err := c.Get(ctx, client.ObjectKeyFromObject(b), &got); err != nil {
		return err
	}
	cnd := meta.FindStatusCondition(got.Status.Conditions, cond)
	if cnd == nil || cnd.Status != "True" || cnd.Reason != reason || got.Status.ReadyReplicas != ready || cnd.ObservedGeneration != got.Generation {
		return fmt.Errorf("status: readyReplicas %d, %s %+v", got.Status.ReadyReplicas, cond, cnd)
	}
	return nil
}

func patchBroker(ctx context.Context, t *testing.T, c client.Client, b *v1alpha1.MQTTBroker, change func(*v1alpha1.MQTTBroker)) {
	t.Helper()
	var cur v1alpha1.MQTTBroker
	if err := c.Get(ctx, client.ObjectKeyFromObject(b), &cur); err != nil {
		t.Fatal(err)
	}
	before := cur.DeepCopy()
	change(&cur)
	if err := c.Patch(ctx, &cur, client.MergeFrom(before)); err != nil {
		t.Fatal(err)
	}
}

// expectRetained proves the broker kept state on its volume.
func expectRetained(t *testing.T, addr, alicePassword, want string) {
	t.Helper()
	cl := mustConnect(t, addr, "alice", alicePassword)
	defer cl.Disconnect(100)
	if got, err := subscribeAndPublish(cl, "devices/state", ""); err != nil || got != want {
		t.Fatalf("retained message on devices/state: %q %v, want %q", got, err, want)
	}
}
