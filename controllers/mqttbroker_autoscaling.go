package controllers

import (
	"context"
	"fmt"

	autoscalingv2 "k8s.io/api/autoscaling/v2"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/mqtt-operator/mqtt-operator/api/v1alpha1"
	"github.com/mqtt-operator/mqtt-operator/internal/resources"
)

// +kubebuilder:rbac:groups=autoscaling,resources=horizontalpodautoscalers,verbs=get;list;watch;create;patch;delete

// syncAutoscaler keeps the broker's HorizontalPodAutoscaler while
// spec.autoscaling is set, and deletes it once it is not: replicas then
// stay where the autoscaler left them, for the user to set.
func (r *MQTTBrokerReconciler) syncAutoscaler(ctx context.Context, b *v1alpha1.MQTTBroker) error {
	if hpa := resources.HorizontalPodAutoscaler(b); hpa != nil {
		return apply(ctx, r.Client, hpa)
	}
	hpa := &autoscalingv2.HorizontalPodAutoscaler{ObjectMeta: metav1.ObjectMeta{Namespace: b.Namespace, Name: b.Name}}
	// Only the operator's own: a HorizontalPodAutoscaler a user made by
	// hand under the broker's name, with the broker as target, stays.
	if err := r.Client.Get(ctx, client.ObjectKeyFromObject(hpa), hpa); err != nil {
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("reading HorizontalPodAutoscaler %s/%s: %w", b.Namespace, b.Name, err)
	}
	if !metav1.IsControlledBy(hpa, b) {
		return nil
	}
	if err := r.Client.Delete(ctx, hpa); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("deleting HorizontalPodAutoscaler %s/%s: %w", b.Namespace, b.Name, err)
	}
	return nil
}
