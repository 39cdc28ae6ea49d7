package controllers

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/source"
)

// The operator holds the data of only the Secrets it manages (labelled
// app.kubernetes.io/managed-by=mqtt-operator; see CacheOptions). The Secrets
// it is pointed at (an MQTTUser's passwordSecretRef, a broker's
// tls.secretName, the Secret cert-manager issues) belong to tenants and
// carry no such label, yet a change to one must act at once. So, as
// cert-manager does for its own Secrets, a second informer lists and watches
// every Secret as metadata only (the API server never sends their data): it
// wakes the controllers and tells a Secret's resourceVersion. The data of a
// referenced Secret is read from the API server when it is needed, and
// dropped after the reconcile.

// secretMetadata is the type of the metadata-only Secret informer's objects.
func secretMetadata() *metav1.PartialObjectMetadata {
	m := &metav1.PartialObjectMetadata{}
	m.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Secret"))
	return m
}

// secretMetadataCache is a cache of Secret metadata beside the manager's
// own: the manager's cache has one configuration per kind, and its Secrets
// are filtered by label. GetCache makes the manager start it with the other
// caches and wait for it to sync before any controller runs.
type secretMetadataCache struct{ cache.Cache }

func (c secretMetadataCache) GetCache() cache.Cache { return c.Cache }

// newSecretMetadataCache makes the metadata cache for namespaces (nil: all)
// and registers its informer, so the manager waits for it to sync.
func newSecretMetadataCache(mgr ctrl.Manager, namespaces []string) (cache.Cache, error) {
	opts := cache.Options{
		Scheme: mgr.GetScheme(), Mapper: mgr.GetRESTMapper(), HTTPClient: mgr.GetHTTPClient(),
		DefaultTransform: trimSecretMetadata,
	}
	if len(namespaces) > 0 {
		opts.DefaultNamespaces = map[string]cache.Config{}
		for _, ns := range namespaces {
			opts.DefaultNamespaces[ns] = cache.Config{}
		}
	}
	c, err := cache.New(mgr.GetConfig(), opts)
	if err != nil {
		return nil, fmt.Errorf("making the Secret metadata cache: %w", err)
	}
	if _, err := c.GetInformer(context.Background(), secretMetadata()); err != nil {
		return nil, fmt.Errorf("registering the Secret metadata informer: %w", err)
	}
	if err := mgr.Add(secretMetadataCache{c}); err != nil {
		return nil, fmt.Errorf("adding the Secret metadata cache to the manager: %w", err)
	}
	return c, nil
}

// trimSecretMetadata keeps what mapping a Secret to its users needs: name,
// namespace, labels, owners and version. Annotations go: `kubectl apply`
// leaves a Secret's whole manifest, data included, in one of them.
func trimSecretMetadata(obj any) (any, error) {
	if m, ok := obj.(*metav1.PartialObjectMetadata); ok {
		m.Annotations, m.ManagedFields = nil, nil
	}
	return obj, nil
}

// secretWatch is a controller source of every Secret event, as metadata.
func secretWatch(metadata cache.Cache, toRequests handler.MapFunc) source.Source {
	return source.Kind[client.Object](metadata, secretMetadata(), handler.EnqueueRequestsFromMapFunc(toRequests))
}

// secretReader reads Secrets without caching the data of those the
// operator does not manage.
type secretReader struct {
	cached   client.Reader // the manager's cache: managed Secrets only
	metadata client.Reader // every Secret, metadata only
	api      client.Reader // the API server
}

// get reads a Secret: from the cache when the operator manages it, else
// from the API server when the metadata cache knows it exists. A Secret
// neither cache has seen is NotFound, as with a plain cached client.
func (s secretReader) get(ctx context.Context, key client.ObjectKey, out *corev1.Secret) error {
	err := s.cached.Get(ctx, key, out)
	if !apierrors.IsNotFound(err) {
		return err
	}
	if err := s.metadata.Get(ctx, key, secretMetadata()); err != nil {
		return err
	}
	return s.api.Get(ctx, key, out)
}

// version is a Secret's resourceVersion, without reading its data. Managed
// Secrets answer from the manager's cache, so the controllers that compare
// versions read them from the same place.
func (s secretReader) version(ctx context.Context, key client.ObjectKey) (string, error) {
	secret := &corev1.Secret{}
	err := s.cached.Get(ctx, key, secret)
	if err == nil {
		return secret.ResourceVersion, nil
	}
	if !apierrors.IsNotFound(err) {
		return "", err
	}
	m := secretMetadata()
	if err := s.metadata.Get(ctx, key, m); err != nil {
		return "", err
	}
	return m.ResourceVersion, nil
}
