package localpods

import (
	"context"
	"os"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// reportTimeout bounds the status writes of Stop: the control plane may
// already be gone.
const reportTimeout = 5 * time.Second

// Stop ends every broker process as a graceful node shutdown does (SIGTERM,
// SIGKILL after the pod's grace period), waits for them, and then reports it:
// each pod's container terminated and not ready, each StatefulSet's counts
// updated, so the operator stops treating the pods as ready. Pod objects
// stay, as they do when a node goes away.
func (h *Harness) Stop() {
	h.stop.Do(func() {
		h.queue.ShutDown()
		if h.cancel != nil {
			h.cancel()
		}
		h.wg.Wait()
		h.mu.Lock()
		var rts []*podRuntime
		for _, rt := range h.runtimes {
			rts = append(rts, rt)
		}
		h.mu.Unlock()
		for _, rt := range rts {
			rt.stop(rt.grace)
		}
		ctx, cancel := context.WithTimeout(context.Background(), reportTimeout)
		defer cancel()
		owners := map[types.NamespacedName]bool{}
		for _, rt := range rts {
			<-rt.done
			if h.client != nil && h.reportStopped(ctx, rt) {
				owners[rt.owner] = true
			}
			h.forget(rt)
		}
		for sts := range owners {
			h.recount(ctx, sts)
		}
		h.ips.release()
		if h.ownDir {
			_ = os.RemoveAll(h.workDir)
		}
	})
}

// reportStopped writes the pod's final status; best effort.
func (h *Harness) reportStopped(ctx context.Context, rt *podRuntime) bool {
	var pod corev1.Pod
	if err := h.client.Get(ctx, rt.key, &pod); err != nil || pod.UID != rt.uid {
		return false
	}
	if err := h.writePodStatus(ctx, &pod, rt); err != nil {
		h.log.Error("reporting a stopped pod", "pod", rt.key.String(), "error", err.Error())
		return false
	}
	return true
}

// recount updates a StatefulSet's status from its pods as they are now; best
// effort.
func (h *Harness) recount(ctx context.Context, key types.NamespacedName) {
	var sts appsv1.StatefulSet
	var list corev1.PodList
	if h.client.Get(ctx, key, &sts) != nil || h.client.List(ctx, &list, client.InNamespace(key.Namespace)) != nil {
		return
	}
	var pods []*corev1.Pod
	for i := range list.Items {
		if ref := metav1.GetControllerOf(&list.Items[i]); ref != nil && ref.UID == sts.UID {
			pods = append(pods, &list.Items[i])
		}
	}
	before := sts.DeepCopy()
	sts.Status = statefulSetStatus(&sts, pods, templateRevision(&sts))
	if err := h.client.Status().Patch(ctx, &sts, client.MergeFrom(before)); err != nil {
		h.log.Error("reporting a stopped StatefulSet", "statefulset", key.String(), "error", err.Error())
	}
}
