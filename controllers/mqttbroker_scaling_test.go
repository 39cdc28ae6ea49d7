package controllers

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/mqtt-operator/mqtt-operator/api/v1alpha1"
)

// A change of replicas is told in two events: when the operator applies
// it (naming the pods that drain on the way down) and when it is done.
func TestScalingIsToldInEvents(t *testing.T) {
	ns := newNamespace(t)
	createBroker(t, ns, func(b *v1alpha1.MQTTBroker) {
		b.Spec.Autoscaling = &v1alpha1.AutoscalingSpec{MinReplicas: 1, MaxReplicas: 3, TargetConnectionsPerPod: 100}
	})
	markStatefulSetReady(t, ns, 1)
	scaleEvents := func() []string {
		var list eventsv1.EventList
		if err := k8s.List(context.Background(), &list, client.InNamespace(ns)); err != nil {
			t.Fatal(err)
		}
		// In the order they happened, not the list's (by name).
		slices.SortFunc(list.Items, func(a, b eventsv1.Event) int { return a.EventTime.Compare(b.EventTime.Time) })
		var out []string
		for _, e := range list.Items {
			if e.Regarding.Kind == "MQTTBroker" && (strings.HasPrefix(e.Reason, "Scaling") || e.Reason == ReasonScaled) {
				out = append(out, e.Reason+": "+e.Note)
			}
		}
		return out
	}
	expect := func(what string, want ...string) {
		t.Helper()
		eventually(t, wait, what, func() error {
			got := scaleEvents()
			if len(got) != len(want) {
				return fmt.Errorf("events %q", got)
			}
			for i := range want {
				if !strings.HasPrefix(got[i], want[i]) {
					return fmt.Errorf("events %q, want %q", got, want)
				}
			}
			return nil
		})
	}
	if got := scaleEvents(); len(got) != 0 {
		t.Fatalf("events for a new broker: %q", got)
	}

	patchBrokerSpec(t, ns, func(b *v1alpha1.MQTTBroker) { b.Spec.Replicas = ptr.To[int32](3) })
	expect("the scale-up applied", "ScalingUp: scaling from 1 to 3 pods (set by the HorizontalPodAutoscaler)")
	markStatefulSetReady(t, ns, 3)
	expect("the scale-up done", "ScalingUp: scaling from 1 to 3 pods", "Scaled: scaled from 1 to 3 pods in")

	patchBrokerSpec(t, ns, func(b *v1alpha1.MQTTBroker) { b.Spec.Replicas = ptr.To[int32](1) })
	expect("the scale-down applied", "ScalingUp:", "Scaled:",
		"ScalingDown: scaling from 3 to 1 pods (set by the HorizontalPodAutoscaler): telemetry-1, telemetry-2 drain")
	markStatefulSetReady(t, ns, 1)
	expect("the scale-down done", "ScalingUp:", "Scaled:", "ScalingDown:", "Scaled: scaled from 3 to 1 pods in")
}

// A scale-down is not done while a pod beyond the new count still drains.
func TestScaleDoneWaitsForDrainingPods(t *testing.T) {
	sts := &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Name: "telemetry", Generation: 2},
		Status: appsv1.StatefulSetStatus{ObservedGeneration: 2, Replicas: 2, ReadyReplicas: 2}}
	pod := func(name string) corev1.Pod { return corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name}} }
	if !scaleDone(sts, []corev1.Pod{pod("telemetry-0"), pod("telemetry-1")}, 2) {
		t.Error("two ready pods of two: not done")
	}
	if scaleDone(sts, []corev1.Pod{pod("telemetry-0"), pod("telemetry-1"), pod("telemetry-2")}, 2) {
		t.Error("done while telemetry-2 drains")
	}
	if scaleDone(sts, nil, 3) {
		t.Error("done with 2 of 3")
	}
	sts.Generation = 3
	if scaleDone(sts, nil, 2) {
		t.Error("done before the StatefulSet controller saw the change")
	}
}
