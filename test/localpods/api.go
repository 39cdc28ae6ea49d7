package localpods

import (
	"context"
	"fmt"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
)

// PodAddr is the pod's IP address (127.0.0.N): clients connect there, on
// the container ports, as Services and DNS are not simulated. It stays the
// same when the pod is re-created. "" when the pod has never been seen.
func (h *Harness) PodAddr(namespace, pod string) string {
	return h.ips.lookup(types.NamespacedName{Namespace: namespace, Name: pod})
}

// Kill crashes the pod's running broker with SIGKILL. The harness restarts
// it in place, like the kubelet, and the pod's restartCount grows by one.
func (h *Harness) Kill(namespace, pod string) error {
	key := types.NamespacedName{Namespace: namespace, Name: pod}
	rt := h.runtime(key)
	if rt == nil {
		return fmt.Errorf("localpods: pod %s is not running here", key)
	}
	if err := rt.kill(); err != nil {
		return fmt.Errorf("localpods: crashing pod %s: %w", key, err)
	}
	return nil
}

// Output is everything the pod's broker processes wrote (stdout and
// stderr), across restarts and re-creations, with the harness's notes.
// Tests scan it, for example for secrets that must never be logged.
func (h *Harness) Output(namespace, pod string) string {
	h.mu.Lock()
	out := h.outputs[types.NamespacedName{Namespace: namespace, Name: pod}]
	h.mu.Unlock()
	if out == nil {
		return ""
	}
	return out.String()
}

// WaitReady waits until the StatefulSet reports, as the API shows it, that
// it wants n pods and has n, all ready and at the current template revision.
func (h *Harness) WaitReady(ctx context.Context, namespace, sts string, n int) error {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		ok, last := h.readyNow(ctx, types.NamespacedName{Namespace: namespace, Name: sts}, int32(n))
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("localpods: waiting for %d ready pods of StatefulSet %s/%s (last seen: %s): %w", n, namespace, sts, last, ctx.Err())
		case <-t.C:
		}
	}
}

func (h *Harness) readyNow(ctx context.Context, key types.NamespacedName, n int32) (bool, string) {
	var s appsv1.StatefulSet
	if err := h.client.Get(ctx, key, &s); err != nil {
		return false, err.Error()
	}
	st := s.Status
	last := fmt.Sprintf("spec.replicas %d, replicas %d, ready %d, updated %d, revision %s -> %s, generation %d/%d",
		ptr.Deref(s.Spec.Replicas, 1), st.Replicas, st.ReadyReplicas, st.UpdatedReplicas, st.CurrentRevision, st.UpdateRevision,
		st.ObservedGeneration, s.Generation)
	ok := ptr.Deref(s.Spec.Replicas, 1) == n && st.ObservedGeneration == s.Generation && st.Replicas == n &&
		st.ReadyReplicas == n && st.UpdatedReplicas == n && st.CurrentRevision == st.UpdateRevision
	return ok, last
}

// pids lists the broker processes running now, by pod; for tests.
func (h *Harness) pids() map[types.NamespacedName]int {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := map[types.NamespacedName]int{}
	for k, rt := range h.runtimes {
		if _, st := rt.snapshot(); st.running {
			out[k] = st.pid
		}
	}
	return out
}
