package controllers

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/mqtt-operator/mqtt-operator/api/v1alpha1"
	"github.com/mqtt-operator/mqtt-operator/internal/brokerconfig"
	"github.com/mqtt-operator/mqtt-operator/internal/resources"
)

const wait = 10 * time.Second

// updateBroker changes the broker in ns, reading it again on a conflict.
func updateBroker(t *testing.T, ns string, mutate func(*v1alpha1.MQTTBroker)) {
	t.Helper()
	eventually(t, wait, "broker updated", func() error {
		b, err := get(t, ns, "telemetry", &v1alpha1.MQTTBroker{})
		if err != nil {
			return err
		}
		mutate(b)
		return k8s.Update(context.Background(), b)
	})
}

func createBroker(t *testing.T, ns string, mutate func(*v1alpha1.MQTTBroker)) *v1alpha1.MQTTBroker {
	t.Helper()
	b := &v1alpha1.MQTTBroker{ObjectMeta: metav1.ObjectMeta{Name: "telemetry", Namespace: ns}}
	if mutate != nil {
		mutate(b)
	}
	if err := k8s.Create(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	return b
}

func get[T client.Object](t *testing.T, ns, name string, obj T) (T, error) {
	t.Helper()
	err := k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, obj)
	return obj, err
}

func brokerStatus(t *testing.T, ns string) v1alpha1.MQTTBrokerStatus {
	t.Helper()
	b, err := get(t, ns, "telemetry", &v1alpha1.MQTTBroker{})
	if err != nil {
		t.Fatal(err)
	}
	return b.Status
}

func waitForCondition(t *testing.T, ns, condType string, status metav1.ConditionStatus, reason string) {
	t.Helper()
	eventually(t, wait, fmt.Sprintf("%s=%s (%s)", condType, status, reason), func() error {
		b, err := get(t, ns, "telemetry", &v1alpha1.MQTTBroker{})
		if err != nil {
			return err
		}
		c := meta.FindStatusCondition(b.Status.Conditions, condType)
		if c == nil || c.Status != status || c.Reason != reason || b.Status.ObservedGeneration != b.Generation {
			return fmt.Errorf("conditions %+v, observedGeneration %d of %d", b.Status.Conditions, b.Status.ObservedGeneration, b.Generation)
		}
		return nil
	})
}

// markStatefulSetReady plays the StatefulSet controller and kubelet: all pods
// of the current template are up and ready.
func markStatefulSetReady(t *testing.T, ns string, ready int32) {
	t.Helper()
	eventually(t, wait, "StatefulSet status written", func() error {
		sts, err := get(t, ns, "telemetry", &appsv1.StatefulSet{})
		if err != nil {
			return err
		}
		replicas := *sts.Spec.Replicas
		sts.Status = appsv1.StatefulSetStatus{
			ObservedGeneration: sts.Generation, Replicas: replicas, ReadyReplicas: ready, AvailableReplicas: ready,
			UpdatedReplicas: replicas, CurrentReplicas: replicas, CurrentRevision: "r1", UpdateRevision: "r1",
		}
		return k8s.Status().Update(context.Background(), sts)
	})
}

func TestBrokerChildrenAreCreatedAndOwned(t *testing.T) {
	ns := newNamespace(t)
	b := createBroker(t, ns, nil)
	children := map[string]client.Object{
		"telemetry-config":   &corev1.ConfigMap{},
		"telemetry-broker":   &corev1.ServiceAccount{},
		"telemetry-headless": &corev1.Service{},
		"telemetry":          &corev1.Service{},
		"telemetry#pdb":      &policyv1.PodDisruptionBudget{},
		"telemetry#np":       &networkingv1.NetworkPolicy{},
		"telemetry#sts":      &appsv1.StatefulSet{},
	}
	for key, obj := range children {
		name, _, _ := strings.Cut(key, "#")
		eventually(t, wait, fmt.Sprintf("%T %s exists", obj, name), func() error {
			if _, err := get(t, ns, name, obj); err != nil {
				return err
			}
			refs := obj.GetOwnerReferences()
			if len(refs) != 1 || refs[0].UID != b.UID || !*refs[0].Controller || refs[0].Kind != "MQTTBroker" {
				return fmt.Errorf("owner references %+v, want the broker as controller", refs)
			}
			return nil
		})
	}

	sts, _ := get(t, ns, "telemetry", &appsv1.StatefulSet{})
	if img := sts.Spec.Template.Spec.Containers[0].Image; img != "mqtt-operator/broker:test" {
		t.Errorf("image %q, want the operator's default broker image", img)
	}
	if sts.Spec.ServiceName != "telemetry-headless" || *sts.Spec.Replicas != 1 {
		t.Errorf("serviceName %q replicas %d", sts.Spec.ServiceName, *sts.Spec.Replicas)
	}
	cm, _ := get(t, ns, "telemetry-config", &corev1.ConfigMap{})
	cfg, err := brokerconfig.Parse([]byte(cm.Data[brokerconfig.FileName]))
	if err != nil {
		t.Fatalf("ConfigMap holds a config the broker would refuse: %v", err)
	}
	if cfg.Limits.MaxConnections != 10000 || cfg.Listeners[0].Address != ":1883" || cfg.AllowAnonymous {
		t.Errorf("rendered config does not reflect the defaulted spec: %+v", cfg)
	}
	svc, _ := get(t, ns, "telemetry", &corev1.Service{})
	if len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Port != 1883 || svc.Spec.Type != corev1.ServiceTypeClusterIP {
		t.Errorf("client Service ports %+v type %s", svc.Spec.Ports, svc.Spec.Type)
	}
	np, _ := get(t, ns, "telemetry", &networkingv1.NetworkPolicy{})
	adminFrom := np.Spec.Ingress[len(np.Spec.Ingress)-1].From
	if len(adminFrom) != 1 || adminFrom[0].NamespaceSelector.MatchLabels["kubernetes.io/metadata.name"] != operatorNamespace {
		t.Errorf("admin port should admit only the operator namespace, got %+v", adminFrom)
	}

	// The status is written after the last child, so it may trail them.
	eventually(t, wait, "status selector and endpoints", func() error {
		st := brokerStatus(t, ns)
		if st.Selector != resources.Selector(b) || len(st.Endpoints) != 1 || st.Endpoints[0].URL != "mqtt://telemetry."+ns+".svc:1883" {
			return fmt.Errorf("status selector %q endpoints %+v", st.Selector, st.Endpoints)
		}
		return nil
	})
}

func TestStatusTracksTheStatefulSet(t *testing.T) {
	ns := newNamespace(t)
	createBroker(t, ns, nil)
	waitForCondition(t, ns, v1alpha1.ConditionReady, metav1.ConditionFalse, ReasonRollingOut)

	markStatefulSetReady(t, ns, 0)
	waitForCondition(t, ns, v1alpha1.ConditionReady, metav1.ConditionFalse, ReasonScaling)
	waitForCondition(t, ns, v1alpha1.ConditionAvailable, metav1.ConditionFalse, ReasonNoReadyPods)

	markStatefulSetReady(t, ns, 1)
	waitForCondition(t, ns, v1alpha1.ConditionReady, metav1.ConditionTrue, ReasonPodsReady)
	waitForCondition(t, ns, v1alpha1.ConditionProgressing, metav1.ConditionFalse, ReasonUpToDate)
	st := brokerStatus(t, ns)
	if st.Replicas != 1 || st.ReadyReplicas != 1 {
		t.Errorf("replicas %d ready %d, want 1/1", st.Replicas, st.ReadyReplicas)
	}
	if meta.FindStatusCondition(st.Conditions, ConditionReconciling) != nil || meta.FindStatusCondition(st.Conditions, ConditionStalled) != nil {
		t.Errorf("a ready broker must not carry Reconciling or Stalled (kstatus would not call it Current): %+v", st.Conditions)
	}

	// Scale to zero through the spec, as kubectl scale does.
	updateBroker(t, ns, func(b *v1alpha1.MQTTBroker) { b.Spec.Replicas = ptr.To(int32(0)) })
	eventually(t, wait, "StatefulSet scaled to 0", func() error {
		sts, err := get(t, ns, "telemetry", &appsv1.StatefulSet{})
		if err != nil || *sts.Spec.Replicas != 0 {
			return fmt.Errorf("replicas %v, err %v", sts.Spec.Replicas, err)
		}
		return nil
	})
	markStatefulSetReady(t, ns, 0)
	waitForCondition(t, ns, v1alpha1.ConditionReady, metav1.ConditionTrue, ReasonScaledToZero)

	// One event per Ready transition, none per reconcile.
	eventually(t, wait, "events recorded", func() error {
		var list eventsv1.EventList
		if err := k8s.List(context.Background(), &list, client.InNamespace(ns)); err != nil {
			return err
		}
		var reasons []string
		for _, e := range list.Items {
			// Changes of replicas have their own events (TestScalingIsToldInEvents).
			scale := e.Reason == ReasonScalingUp || e.Reason == ReasonScalingDown || e.Reason == ReasonScaled
			if e.Regarding.Kind == "MQTTBroker" && !scale {
				reasons = append(reasons, e.Reason)
			}
		}
		// The scale-down shows as RollingOut until the StatefulSet controller
		// has observed the new spec: a real transition, so a real event.
		want := strings.Join([]string{ReasonRollingOut, ReasonScaling, ReasonPodsReady, ReasonRollingOut, ReasonScaledToZero}, " ")
		if strings.Join(reasons, " ") != want {
			return fmt.Errorf("broker events %v, want one per transition: %s", reasons, want)
		}
		return nil
	})
}

func TestSpecChangesUpdateChildrenWithoutNeedlessRestarts(t *testing.T) {
	ns := newNamespace(t)
	createBroker(t, ns, nil)
	var before *appsv1.StatefulSet
	eventually(t, wait, "StatefulSet created", func() (err error) {
		before, err = get(t, ns, "telemetry", &appsv1.StatefulSet{})
		return err
	})
	update := func(mutate func(*v1alpha1.MQTTBroker)) { t.Helper(); updateBroker(t, ns, mutate) }

	// Limits reload in place: the ConfigMap changes, the pod template must not.
	update(func(b *v1alpha1.MQTTBroker) { b.Spec.Limits.MaxConnections = 42 })
	eventually(t, wait, "ConfigMap carries the new limit", func() error {
		cm, err := get(t, ns, "telemetry-config", &corev1.ConfigMap{})
		if err != nil || !strings.Contains(cm.Data[brokerconfig.FileName], "maxConnections: 42") {
			return fmt.Errorf("config %q err %v", cm.Data[brokerconfig.FileName], err)
		}
		return nil
	})
	after, _ := get(t, ns, "telemetry", &appsv1.StatefulSet{})
	if after.Generation != before.Generation {
		t.Errorf("a limits change bumped the StatefulSet to generation %d: pods would restart for a change they reload in place", after.Generation)
	}

	// A new listener cannot be bound in place: pods roll, Services follow.
	update(func(b *v1alpha1.MQTTBroker) { b.Spec.Listeners.WebSocket.Enabled = true })
	eventually(t, wait, "pods roll for the new listener", func() error {
		sts, err := get(t, ns, "telemetry", &appsv1.StatefulSet{})
		if err != nil {
			return err
		}
		if sts.Spec.Template.Annotations[resources.AnnotationRestartHash] == before.Spec.Template.Annotations[resources.AnnotationRestartHash] {
			return errors.New("restart hash unchanged")
		}
		svc, err := get(t, ns, "telemetry", &corev1.Service{})
		if err != nil || len(svc.Spec.Ports) != 2 {
			return fmt.Errorf("client Service ports %+v, err %v", svc.Spec.Ports, err)
		}
		return nil
	})
}

func TestDeletedChildIsRestored(t *testing.T) {
	ns := newNamespace(t)
	createBroker(t, ns, nil)
	var cm *corev1.ConfigMap
	eventually(t, wait, "ConfigMap created", func() (err error) {
		cm, err = get(t, ns, "telemetry-config", &corev1.ConfigMap{})
		return err
	})
	if err := k8s.Delete(context.Background(), cm); err != nil {
		t.Fatal(err)
	}
	eventually(t, wait, "ConfigMap recreated", func() error {
		again, err := get(t, ns, "telemetry-config", &corev1.ConfigMap{})
		if err != nil {
			return err
		}
		if again.UID == cm.UID {
			return errors.New("still the deleted object")
		}
		return nil
	})
}

// A spec the CRD schema accepts but the StatefulSet API refuses (a toleration
// with operator Exists and a value) must surface as a condition and one
// Warning event, leave the running objects alone, and not hot-loop.
func TestSpecTheAPIRefusesStallsWithAClearCondition(t *testing.T) {
	ns := newNamespace(t)
	createBroker(t, ns, nil)
	markStatefulSetReady(t, ns, 1)
	waitForCondition(t, ns, v1alpha1.ConditionReady, metav1.ConditionTrue, ReasonPodsReady)
	good, _ := get(t, ns, "telemetry", &appsv1.StatefulSet{})

	updateBroker(t, ns, func(b *v1alpha1.MQTTBroker) {
		b.Spec.Pod.Tolerations = []corev1.Toleration{{Key: "dedicated", Operator: corev1.TolerationOpExists, Value: "mqtt"}}
	})
	waitForCondition(t, ns, v1alpha1.ConditionReady, metav1.ConditionFalse, ReasonInvalidSpec)
	waitForCondition(t, ns, ConditionStalled, metav1.ConditionTrue, ReasonInvalidSpec)
	st := brokerStatus(t, ns)
	if msg := meta.FindStatusCondition(st.Conditions, v1alpha1.ConditionReady).Message; !strings.Contains(msg, "tolerations") {
		t.Errorf("Ready message %q should say what the API server refused", msg)
	}
	if !meta.IsStatusConditionTrue(st.Conditions, v1alpha1.ConditionAvailable) {
		t.Errorf("the broker still runs the last good spec; Available must stay True: %+v", st.Conditions)
	}
	now, _ := get(t, ns, "telemetry", &appsv1.StatefulSet{})
	if now.Generation != good.Generation {
		t.Errorf("the refused spec changed the running StatefulSet")
	}
	settled := reconcileCount(t)
	time.Sleep(2 * time.Second) // a measurement window, not synchronisation
	if n := reconcileCount(t) - settled; n > 0 {
		t.Errorf("%v reconciles in 2s on a stalled broker: the operator is hot-looping", n)
	}
	var list eventsv1.EventList
	_ = k8s.List(context.Background(), &list, client.InNamespace(ns))
	warnings := 0
	for _, e := range list.Items {
		if e.Type == corev1.EventTypeWarning && e.Reason == ReasonInvalidSpec {
			warnings++
		}
	}
	if warnings != 1 {
		t.Errorf("%d InvalidSpec warnings, want exactly 1", warnings)
	}
}

// An image, priority class or toleration outside the operator's allow-list
// stalls the broker with a clear condition and one Warning event, and
// leaves its running StatefulSet alone: whoever may create an MQTTBroker
// must not run any image on any node.
func TestBrokerPolicyRefusesWhatIsNotAllowed(t *testing.T) {
	ns := newNamespace(t)
	createBroker(t, ns, nil)
	markStatefulSetReady(t, ns, 1)
	waitForCondition(t, ns, v1alpha1.ConditionReady, metav1.ConditionTrue, ReasonPodsReady)
	good, _ := get(t, ns, "telemetry", &appsv1.StatefulSet{})

	patchBrokerSpec(t, ns, func(b *v1alpha1.MQTTBroker) { b.Spec.Image = "attacker.example.com/miner:1" })
	waitForCondition(t, ns, v1alpha1.ConditionReady, metav1.ConditionFalse, ReasonNotAllowed)
	waitForCondition(t, ns, ConditionStalled, metav1.ConditionTrue, ReasonNotAllowed)
	msg := meta.FindStatusCondition(brokerStatus(t, ns).Conditions, v1alpha1.ConditionReady).Message
	if !strings.Contains(msg, "attacker.example.com/miner:1") || !strings.Contains(msg, "--allowed-broker-images") {
		t.Errorf("Ready message %q should name the image and how to allow it", msg)
	}
	// The running pods' users stay current: a user added (or removed) now
	// still reaches them.
	createUser(t, ns, "late", nil)
	eventually(t, wait, "a new user in the bundle of the refused broker", func() error {
		if b, _ := bundle(t, ns); hashOf(b, "late") == "" {
			return errors.New("not in the bundle")
		}
		return nil
	})

	// The priority class and toleration checks, on the same broker: the
	// message follows what is wrong now.
	patchBrokerSpec(t, ns, func(b *v1alpha1.MQTTBroker) {
		b.Spec.Image = ""
		b.Spec.Pod.PriorityClassName = "system-node-critical"
	})
	eventually(t, wait, "the priority class refused", func() error {
		if msg := meta.FindStatusCondition(brokerStatus(t, ns).Conditions, v1alpha1.ConditionReady).Message; !strings.Contains(msg, "system-node-critical") {
			return fmt.Errorf("Ready message %q", msg)
		}
		return nil
	})
	patchBrokerSpec(t, ns, func(b *v1alpha1.MQTTBroker) {
		b.Spec.Pod.PriorityClassName = ""
		b.Spec.Pod.Tolerations = []corev1.Toleration{{Operator: corev1.TolerationOpExists}} // every taint, control plane included
	})
	eventually(t, wait, "the toleration refused", func() error {
		if msg := meta.FindStatusCondition(brokerStatus(t, ns).Conditions, v1alpha1.ConditionReady).Message; !strings.Contains(msg, "every taint") {
			return fmt.Errorf("Ready message %q", msg)
		}
		return nil
	})

	now, _ := get(t, ns, "telemetry", &appsv1.StatefulSet{})
	if now.Generation != good.Generation || now.Spec.Template.Spec.Containers[0].Image != good.Spec.Template.Spec.Containers[0].Image {
		t.Errorf("a refused spec changed the running StatefulSet")
	}
	var list eventsv1.EventList
	_ = k8s.List(context.Background(), &list, client.InNamespace(ns))
	warnings := 0
	for _, e := range list.Items {
		if e.Type == corev1.EventTypeWarning && e.Reason == ReasonNotAllowed {
			warnings++
		}
	}
	if warnings != 1 {
		t.Errorf("%d NotAllowed warnings, want exactly 1 for the one transition", warnings)
	}
}

// patchBrokerSpec changes the broker's spec with a merge patch, which the
// operator's concurrent status writes cannot make conflict.
func patchBrokerSpec(t *testing.T, ns string, mutate func(*v1alpha1.MQTTBroker)) {
	t.Helper()
	b, err := get(t, ns, "telemetry", &v1alpha1.MQTTBroker{})
	if err != nil {
		t.Fatal(err)
	}
	before := b.DeepCopy()
	mutate(b)
	if err := k8s.Patch(context.Background(), b, client.MergeFrom(before)); err != nil {
		t.Fatal(err)
	}
}

// The last test: with every broker of the suite converged, the operator must
// be idle. Zero reconciles at rest is what lets it manage thousands of brokers.
func TestConvergedBrokersCauseNoReconciles(t *testing.T) {
	ns := newNamespace(t)
	createBroker(t, ns, nil)
	markStatefulSetReady(t, ns, 1)
	waitForCondition(t, ns, v1alpha1.ConditionReady, metav1.ConditionTrue, ReasonPodsReady)
	// Let the status write's own echo settle, then measure.
	var settled float64
	eventually(t, wait, "reconciles settle", func() error {
		settled = reconcileCount(t)
		time.Sleep(500 * time.Millisecond)
		if n := reconcileCount(t); n != settled {
			return fmt.Errorf("%v reconciles in 500ms", n-settled)
		}
		return nil
	})
	time.Sleep(3 * time.Second) // a measurement window, not synchronisation
	if n := reconcileCount(t) - settled; n != 0 {
		t.Errorf("%v reconciles in 3s with every broker converged, want 0", n)
	}
	if _, err := get(t, ns, "does-not-exist", &v1alpha1.MQTTBroker{}); !apierrors.IsNotFound(err) {
		t.Errorf("sanity: %v", err)
	}
}
