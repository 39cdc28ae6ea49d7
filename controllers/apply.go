package controllers

import (
	"context"
	"fmt"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"
)

// FieldOwner is the server-side apply field manager of everything the operator
// writes.
const FieldOwner = "mqtt-operator"

// apply server-side applies a desired object built by the resources package.
// The typed object is turned into unstructured form without the zero-valued
// fields Go would otherwise send (creationTimestamp, empty status), so the
// operator owns exactly the fields it sets and an unchanged object is a no-op
// on the server: no new resourceVersion, no watch event, no extra reconcile.
// On success obj holds the object as the server stored it.
func apply(ctx context.Context, c client.Client, obj client.Object) error {
	gvk, err := apiutil.GVKForObject(obj, c.Scheme())
	if err != nil {
		return fmt.Errorf("looking up the kind of %T: %w", obj, err)
	}
	content, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		return fmt.Errorf("converting %s %s: %w", gvk.Kind, obj.GetName(), err)
	}
	u := &unstructured.Unstructured{Object: content}
	u.SetGroupVersionKind(gvk)
	unstructured.RemoveNestedField(u.Object, "metadata", "creationTimestamp")
	unstructured.RemoveNestedField(u.Object, "status")
	if tmpl, found, _ := unstructured.NestedMap(u.Object, "spec", "template", "metadata"); found {
		delete(tmpl, "creationTimestamp")
		_ = unstructured.SetNestedMap(u.Object, tmpl, "spec", "template", "metadata")
	}
	if claims, found, _ := unstructured.NestedSlice(u.Object, "spec", "volumeClaimTemplates"); found {
		for _, c := range claims {
			claim, _ := c.(map[string]any)
			delete(claim, "status")
			if meta, ok := claim["metadata"].(map[string]any); ok {
				delete(meta, "creationTimestamp")
			}
		}
		_ = unstructured.SetNestedSlice(u.Object, claims, "spec", "volumeClaimTemplates")
	}
	if err := c.Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner(FieldOwner), client.ForceOwnership); err != nil {
		return fmt.Errorf("applying %s %s: %w", gvk.Kind, obj.GetName(), err)
	}
	// The server's answer is the live object, status included: callers read it
	// instead of a cache that may not have seen the write yet.
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, obj); err != nil {
		return fmt.Errorf("reading applied %s %s: %w", gvk.Kind, obj.GetName(), err)
	}
	return nil
}
