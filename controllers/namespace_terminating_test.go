package controllers

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
)

// terminatingError is what the NamespaceLifecycle admission plugin returns
// for a create in a namespace being deleted, wrapped as apply wraps it.
func terminatingError() error {
	err := apierrors.NewForbidden(schema.GroupResource{Resource: "configmaps"}, "b-config",
		errors.New("unable to create new content in namespace t because it is being terminated"))
	err.ErrStatus.Details.Causes = append(err.ErrStatus.Details.Causes, metav1.StatusCause{
		Type: corev1.NamespaceTerminatingCause, Message: "namespace t is being terminated", Field: "metadata.namespace"})
	return fmt.Errorf("applying ConfigMap b-config: %w", err)
}

func TestNamespaceTerminatingIsQuiet(t *testing.T) {
	var tn terminatingNamespaces
	key := types.NamespacedName{Namespace: "t", Name: "b"}
	if err := tn.quiet(context.Background(), key, terminatingError()); err != nil {
		t.Errorf("a create refused by a terminating namespace returned %v, want no error", err)
	}
	other := apierrors.NewForbidden(schema.GroupResource{Resource: "configmaps"}, "b-config", errors.New("RBAC says no"))
	if err := tn.quiet(context.Background(), key, other); err == nil {
		t.Error("another Forbidden error was swallowed")
	}
	if _, logged := tn.seen.Load(key); !logged {
		t.Error("the object is not remembered, so it would be logged again")
	}
}

// With a real API server: once the namespace is being deleted, recreating a
// deleted child is refused, and the operator says so once at V(1) instead of
// returning (and logging) an error on every retry.
func TestDeletedNamespaceStopsReconcilingQuietly(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	createBroker(t, ns, nil)
	cm := &corev1.ConfigMap{}
	eventually(t, wait, "the broker's ConfigMap", func() error {
		return k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: "telemetry-config"}, cm)
	})
	if err := k8s.Delete(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	if err := k8s.Delete(ctx, cm); err != nil { // as the namespace controller would
		t.Fatal(err)
	}
	line := fmt.Sprintf(`"namespace":%q`, ns)
	eventually(t, wait, "the operator noticing the namespace is going", func() error {
		logs := operatorLogs.String()
		if n := countLines(logs, "namespace is being deleted", line); n != 1 {
			return fmt.Errorf("%d such log lines", n)
		}
		return nil
	})
	if n := countLines(operatorLogs.String(), "Reconciler error", ns); n > 0 {
		t.Errorf("%d reconciler errors for namespace %s", n, ns)
	}
}

func countLines(logs string, parts ...string) int {
	n := 0
	for _, l := range strings.Split(logs, "\n") {
		all := true
		for _, p := range parts {
			all = all && strings.Contains(l, p)
		}
		if all {
			n++
		}
	}
	return n
}
