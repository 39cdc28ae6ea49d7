package controllers

import (
	appsv1 "k8s.io/api/apps/v1"
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
// Secrets are the exception: an MQTTUser may take its password from any
// Secret of its namespace, and a change must rotate it at once. So Secrets
// are watched, but only the types that can hold a password or certificate
// keep their data in memory; the rest (Helm releases, service account
// tokens, registry credentials) are cached as metadata.
func CacheOptions(namespaces []string) cache.Options {
	managed := cache.ByObject{Label: labels.SelectorFromSet(labels.Set{resources.LabelManagedBy: resources.OperatorName})}
	opts := cache.Options{ByObject: map[client.Object]cache.ByObject{
		&corev1.Secret{}:                {Transform: trimSecret},
		&corev1.Pod{}:                   managed,
		&corev1.ConfigMap{}:             managed,
		&corev1.Service{}:               managed,
		&corev1.ServiceAccount{}:        managed,
		&appsv1.StatefulSet{}:           managed,
		&policyv1.PodDisruptionBudget{}: managed,
		&networkingv1.NetworkPolicy{}:   managed,
	}}
	if len(namespaces) > 0 {
		opts.DefaultNamespaces = map[string]cache.Config{}
		for _, ns := range namespaces {
			opts.DefaultNamespaces[ns] = cache.Config{}
		}
	}
	return opts
}

// trimSecret drops what the operator never reads from a cached Secret.
func trimSecret(obj any) (any, error) {
	s, ok := obj.(*corev1.Secret)
	if !ok {
		return obj, nil
	}
	s.ManagedFields = nil
	switch s.Type {
	case corev1.SecretTypeOpaque, corev1.SecretTypeBasicAuth, corev1.SecretTypeTLS, "":
	default:
		s.Data, s.StringData = nil, nil
	}
	return s, nil
}
