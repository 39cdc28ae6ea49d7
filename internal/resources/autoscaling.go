package resources

import (
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/utils/ptr"

	"github.com/mqtt-operator/mqtt-operator/api/v1alpha1"
)

// defaultScaleDownStabilization is the HorizontalPodAutoscaler's own
// default, kept when the spec leaves it out.
const defaultScaleDownStabilization = 300

// The per-pod metrics the operator's metrics adapter serves through the
// custom metrics API, which the HorizontalPodAutoscaler reads.
const (
	// ClientsMetric is the MQTT clients logged in to a pod.
	ClientsMetric = "mqtt_clients_connected"
	// MessagesMetric is PUBLISH packets per second through a pod, in and
	// out.
	MessagesMetric = "mqtt_messages_per_second"
)

// HorizontalPodAutoscaler scales the broker through its scale subresource
// (spec.replicas), on the average CPU use of its pods, their clients or
// their message rate, whichever asks for the most pods. Scale-down removes
// at most one pod a minute: each removal drains a pod (its clients move,
// its sessions are handed over). Nil when autoscaling is off.
func HorizontalPodAutoscaler(b *v1alpha1.MQTTBroker) *autoscalingv2.HorizontalPodAutoscaler {
	a := b.Spec.Autoscaling
	if a == nil {
		return nil
	}
	window := int32(defaultScaleDownStabilization)
	if a.ScaleDownStabilizationSeconds != nil {
		window = *a.ScaleDownStabilizationSeconds
	}
	var metrics []autoscalingv2.MetricSpec
	if a.TargetCPUUtilizationPercentage > 0 {
		metrics = append(metrics, autoscalingv2.MetricSpec{
			Type: autoscalingv2.ResourceMetricSourceType,
			Resource: &autoscalingv2.ResourceMetricSource{
				Name:   corev1.ResourceCPU,
				Target: autoscalingv2.MetricTarget{Type: autoscalingv2.UtilizationMetricType, AverageUtilization: ptr.To(a.TargetCPUUtilizationPercentage)},
			},
		})
	}
	perPod := func(metric string, target int32) {
		if target > 0 {
			metrics = append(metrics, autoscalingv2.MetricSpec{
				Type: autoscalingv2.PodsMetricSourceType,
				Pods: &autoscalingv2.PodsMetricSource{
					Metric: autoscalingv2.MetricIdentifier{Name: metric},
					Target: autoscalingv2.MetricTarget{Type: autoscalingv2.AverageValueMetricType, AverageValue: resource.NewQuantity(int64(target), resource.DecimalSI)},
				},
			})
		}
	}
	perPod(ClientsMetric, a.TargetConnectionsPerPod)
	perPod(MessagesMetric, a.TargetMessagesPerSecondPerPod)
	return &autoscalingv2.HorizontalPodAutoscaler{
		ObjectMeta: objectMeta(b, b.Name),
		Spec: autoscalingv2.HorizontalPodAutoscalerSpec{
			ScaleTargetRef: autoscalingv2.CrossVersionObjectReference{
				APIVersion: v1alpha1.GroupVersion.String(), Kind: "MQTTBroker", Name: b.Name,
			},
			MinReplicas: ptr.To(max(1, a.MinReplicas)),
			MaxReplicas: a.MaxReplicas,
			Metrics:     metrics,
			Behavior: &autoscalingv2.HorizontalPodAutoscalerBehavior{
				ScaleDown: &autoscalingv2.HPAScalingRules{
					StabilizationWindowSeconds: ptr.To(window),
					SelectPolicy:               ptr.To(autoscalingv2.MaxChangePolicySelect),
					Policies: []autoscalingv2.HPAScalingPolicy{
						{Type: autoscalingv2.PodsScalingPolicy, Value: 1, PeriodSeconds: 60},
					},
				},
			},
		},
	}
}
