package controllers

import (
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/mqtt-operator/mqtt-operator/internal/resources"
)

// CacheOptions keeps the operator's informers to the objects it manages. Without
// it the operator would hold every ConfigMap, Service and StatefulSet of the
// cluster in memory just to notice changes to its own.
//
// Secrets too: only those the operator manages are cached with their data.
// The Secrets tenants point it at are watched as metadata by a second cache
// and read from the API server when needed (see secrets.go), so the data of
// Helm releases, service account tokens, registry credentials and every
// other Secret of the cluster never enters the operator's memory.
func CacheOptions(namespaces []string) cache.Options {
	managed := cache.ByObject{Label: labels.SelectorFromSet(labels.Set{resources.LabelManagedBy: resources.OperatorName})}
	opts := cache.Options{ByObject: map[client.Object]cache.ByObject{
		&corev1.Secret{}:                         {Label: managed.Label, Transform: cache.TransformStripManagedFields()},
		&corev1.Pod{}:                            managed,
		&corev1.ConfigMap{}:                      managed,
		&corev1.Service{}:                        managed,
		&corev1.ServiceAccount{}:                 managed,
		&appsv1.StatefulSet{}:                    managed,
		&policyv1.PodDisruptionBudget{}:          managed,
		&autoscalingv2.HorizontalPodAutoscaler{}: managed,
		&networkingv1.NetworkPolicy{}:            managed,
	}}
	if len(namespaces) > 0 {
		opts.DefaultNamespaces = map[string]cache.Config{}
		for _, ns := range namespaces {
			opts.DefaultNamespaces[ns] = cache.Config{}
		}
	}
	return opts
}
