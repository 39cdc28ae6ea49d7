package controllers

import (
	"context"
	"fmt"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/google/go-cmp/cmp"

	v1alpha1 "github.com/mqtt-operator/mqtt-operator/api/v1alpha1"
)

// spec.autoscaling gives the broker a HorizontalPodAutoscaler on its scale
// subresource: kept as the spec says (a hand edit is undone), its scaling
// reaches the StatefulSet, and it goes when autoscaling is removed, leaving
// replicas where it put them.
func TestAutoscalingOwnsAHorizontalPodAutoscaler(t *testing.T) {
	ns := newNamespace(t)
	ctx := context.Background()
	b := createBroker(t, ns, func(b *v1alpha1.MQTTBroker) {
		b.Spec.Autoscaling = &v1alpha1.AutoscalingSpec{MinReplicas: 1, MaxReplicas: 4, TargetCPUUtilizationPercentage: 70,
			ScaleDownStabilizationSeconds: ptr.To(int32(120))}
	})
	want := "cpu 70%"
	hpaIs := func(maxReplicas int32) func() error {
		return func() error {
			hpa, err := get(t, ns, "telemetry", &autoscalingv2.HorizontalPodAutoscaler{})
			if err != nil {
				return err
			}
			s := hpa.Spec
			ref := s.ScaleTargetRef
			switch {
			case len(hpa.OwnerReferences) != 1 || hpa.OwnerReferences[0].UID != b.UID:
				return fmt.Errorf("owner references %+v", hpa.OwnerReferences)
			case ref.APIVersion != v1alpha1.GroupVersion.String() || ref.Kind != "MQTTBroker" || ref.Name != "telemetry":
				return fmt.Errorf("target %+v, want this MQTTBroker", ref)
			case *s.MinReplicas != 1 || s.MaxReplicas != maxReplicas:
				return fmt.Errorf("replicas %d-%d, want 1-%d", *s.MinReplicas, s.MaxReplicas, maxReplicas)
			case metricsOf(s.Metrics) != want:
				return fmt.Errorf("metrics %q, want %q", metricsOf(s.Metrics), want)
			case s.Behavior == nil || *s.Behavior.ScaleDown.StabilizationWindowSeconds != 120 ||
				len(s.Behavior.ScaleDown.Policies) != 1 || s.Behavior.ScaleDown.Policies[0].Value != 1:
				return fmt.Errorf("scale-down behaviour %+v, want 120 s and one pod at a time", s.Behavior)
			}
			return nil
		}
	}
	eventually(t, wait, "the HorizontalPodAutoscaler as the spec says", hpaIs(4))

	// What the autoscaler does: replicas through the scale subresource,
	// read and written again on a conflict (the operator writes status).
	broker := &v1alpha1.MQTTBroker{}
	broker.Namespace, broker.Name = ns, "telemetry"
	eventually(t, wait, "replicas set through the scale subresource", func() error {
		scale := &autoscalingv1.Scale{}
		if err := k8s.SubResource("scale").Get(ctx, broker, scale); err != nil {
			return err
		}
		scale.Spec.Replicas = 3
		return k8s.SubResource("scale").Update(ctx, broker, client.WithSubResourceBody(scale))
	})
	eventually(t, wait, "the StatefulSet follows the autoscaler", func() error {
		sts, err := get(t, ns, "telemetry", &appsv1.StatefulSet{})
		if err != nil || *sts.Spec.Replicas != 3 {
			return fmt.Errorf("StatefulSet replicas %v, err %v", sts.Spec.Replicas, err)
		}
		return nil
	})

	// A hand edit is undone.
	hpa, _ := get(t, ns, "telemetry", &autoscalingv2.HorizontalPodAutoscaler{})
	patch := client.MergeFrom(hpa.DeepCopy())
	hpa.Spec.MaxReplicas = 10
	if err := k8s.Patch(ctx, hpa, patch); err != nil {
		t.Fatal(err)
	}
	eventually(t, wait, "the hand edit undone", hpaIs(4))

	updateBroker(t, ns, func(b *v1alpha1.MQTTBroker) { b.Spec.Autoscaling.MaxReplicas = 6 })
	eventually(t, wait, "the new maximum", hpaIs(6))

	// The per-pod figures the metrics adapter serves, alone or with CPU.
	updateBroker(t, ns, func(b *v1alpha1.MQTTBroker) {
		b.Spec.Autoscaling.TargetCPUUtilizationPercentage = 0
		b.Spec.Autoscaling.TargetConnectionsPerPod = 2500
		b.Spec.Autoscaling.TargetMessagesPerSecondPerPod = 40000
	})
	want = "pods mqtt_clients_connected 2500, pods mqtt_messages_per_second 40k"
	eventually(t, wait, "connections and messages per pod", hpaIs(6))
	updateBroker(t, ns, func(b *v1alpha1.MQTTBroker) {
		b.Spec.Autoscaling.TargetCPUUtilizationPercentage = 80
		b.Spec.Autoscaling.TargetMessagesPerSecondPerPod = 0
	})
	want = "cpu 80%, pods mqtt_clients_connected 2500"
	eventually(t, wait, "CPU and connections per pod", hpaIs(6))

	updateBroker(t, ns, func(b *v1alpha1.MQTTBroker) { b.Spec.Autoscaling = nil })
	eventually(t, wait, "the HorizontalPodAutoscaler removed", func() error {
		_, err := get(t, ns, "telemetry", &autoscalingv2.HorizontalPodAutoscaler{})
		if !apierrors.IsNotFound(err) {
			return fmt.Errorf("still there (err %v)", err)
		}
		return nil
	})
	if got, _ := get(t, ns, "telemetry", &v1alpha1.MQTTBroker{}); got.Spec.Replicas == nil || *got.Spec.Replicas != 3 {
		t.Errorf("replicas %v after autoscaling was removed, want the 3 it left", got.Spec.Replicas)
	}
}

// An autoscaled broker is clustered from its first pod: the autoscaler's
// first scale-up must not change the pod template, which would restart pod
// 0 (and, with ephemeral storage, end its persistent sessions).
func TestAutoscaledBrokerIsClusteredFromItsFirstPod(t *testing.T) {
	ns := newNamespace(t)
	createBroker(t, ns, func(b *v1alpha1.MQTTBroker) {
		b.Spec.Autoscaling = &v1alpha1.AutoscalingSpec{MinReplicas: 1, MaxReplicas: 3, TargetCPUUtilizationPercentage: 70}
	})
	markStatefulSetReady(t, ns, 1)
	waitForPeers(t, ns, "telemetry", 1)
	if cfg, err := renderedConfig(t, ns, "telemetry"); err != nil || cfg.Cluster == nil {
		t.Fatalf("an autoscaled one-pod broker has no cluster section: %+v (%v)", cfg, err)
	}
	one, _ := get(t, ns, "telemetry", &appsv1.StatefulSet{})
	patchBrokerSpec(t, ns, func(b *v1alpha1.MQTTBroker) { b.Spec.Replicas = ptr.To[int32](3) })
	waitForPeers(t, ns, "telemetry", 3)
	var three *appsv1.StatefulSet
	eventually(t, wait, "StatefulSet at 3 replicas", func() (err error) {
		three, err = get(t, ns, "telemetry", &appsv1.StatefulSet{})
		if err == nil && *three.Spec.Replicas != 3 {
			err = fmt.Errorf("%d replicas", *three.Spec.Replicas)
		}
		return err
	})
	if diff := cmp.Diff(one.Spec.Template, three.Spec.Template); diff != "" {
		t.Errorf("the first scale-up changed the pod template, which restarts pod 0:\n%s", diff)
	}
}

// metricsOf summarises an autoscaler's metrics, in order.
func metricsOf(metrics []autoscalingv2.MetricSpec) string {
	var out []string
	for _, m := range metrics {
		switch {
		case m.Resource != nil && m.Resource.Target.AverageUtilization != nil:
			out = append(out, fmt.Sprintf("%s %d%%", m.Resource.Name, *m.Resource.Target.AverageUtilization))
		case m.Pods != nil && m.Pods.Target.AverageValue != nil:
			out = append(out, fmt.Sprintf("pods %s %s", m.Pods.Metric.Name, m.Pods.Target.AverageValue))
		default:
			out = append(out, fmt.Sprintf("%+v", m))
		}
	}
	return strings.Join(out, ", ")
}
