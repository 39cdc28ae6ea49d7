package controllers

import (
	"context"
	"sync"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/log"
)

// namespaceTerminating reports whether err is the API server refusing to
// create an object in a namespace that is being deleted. The namespace
// controller deletes a broker's children and the broker in no set order, so
// a reconcile that recreates a child meets this; retrying cannot help.
func namespaceTerminating(err error) bool {
	return apierrors.IsForbidden(err) && apierrors.HasStatusCause(err, corev1.NamespaceTerminatingCause)
}

// terminatingNamespaces remembers the objects already logged as being in a
// terminating namespace, so each is logged once.
type terminatingNamespaces struct{ seen sync.Map }

// quiet turns a refusal by a terminating namespace into no error, logged
// once per object at V(1); any other error is returned as it is.
func (t *terminatingNamespaces) quiet(ctx context.Context, key types.NamespacedName, err error) error {
	if !namespaceTerminating(err) {
		return err
	}
	if _, logged := t.seen.LoadOrStore(key, true); !logged {
		log.FromContext(ctx).V(1).Info("namespace is being deleted; not reconciling this object further", "namespace", key.Namespace)
	}
	return nil
}

func (t *terminatingNamespaces) forget(key types.NamespacedName) { t.seen.Delete(key) }
