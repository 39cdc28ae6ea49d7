package controllers

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/mqtt-operator/mqtt-operator/api/v1alpha1"
)

// Event reasons of a change of replicas (by hand or by the autoscaler).
const (
	ReasonScalingUp   = "ScalingUp"
	ReasonScalingDown = "ScalingDown"
	ReasonScaled      = "Scaled"
)

// scaleTracker remembers, per broker, the replicas last applied and a change
// under way, so that each change gets one event when the operator applies
// it and one when its pods are all there (or gone). In memory: after an
// operator restart the first reconcile only learns the replicas, and a
// change that was under way ends without its "Scaled" event.
type scaleTracker struct {
	mu      sync.Mutex
	applied map[types.NamespacedName]int32
	pending map[types.NamespacedName]scaleChange
}

type scaleChange struct {
	from, to int32
	since    time.Time
}

func (t *scaleTracker) forget(broker types.NamespacedName) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.applied, broker)
	delete(t.pending, broker)
}

// recordScaling is called once the StatefulSet is applied (sts as the
// server returned it); pods are the broker's pods.
func (r *MQTTBrokerReconciler) recordScaling(b *v1alpha1.MQTTBroker, sts *appsv1.StatefulSet, pods []corev1.Pod) {
	if sts == nil || sts.Spec.Replicas == nil {
		return
	}
	key := types.NamespacedName{Namespace: b.Namespace, Name: b.Name}
	to := *sts.Spec.Replicas
	now := r.clock()
	t := &r.scaling
	t.mu.Lock()
	if t.applied == nil {
		t.applied, t.pending = map[types.NamespacedName]int32{}, map[types.NamespacedName]scaleChange{}
	}
	from, known := t.applied[key]
	t.applied[key] = to
	if known && from != to {
		t.pending[key] = scaleChange{from: from, to: to, since: now}
	}
	change, pending := t.pending[key]
	t.mu.Unlock()

	if known && from != to {
		by := ""
		if b.Spec.Autoscaling != nil {
			by = " (set by the HorizontalPodAutoscaler)"
		}
		if to > from {
			r.Recorder.Eventf(b, nil, corev1.EventTypeNormal, ReasonScalingUp, "Scale", "scaling from %d to %d pods%s", from, to, by)
		} else {
			var going []string
			for i := to; i < from; i++ {
				going = append(going, fmt.Sprintf("%s-%d", sts.Name, i))
			}
			r.Recorder.Eventf(b, nil, corev1.EventTypeNormal, ReasonScalingDown, "Scale",
				"scaling from %d to %d pods%s: %s drain: their clients are sent to the pods that stay (MQTT 5: reason 0x9C) over the drain period and their persistent sessions handed over",
				from, to, by, strings.Join(going, ", "))
		}
	}
	if !pending || !scaleDone(sts, pods, change.to) {
		return
	}
	t.mu.Lock()
	if cur, ok := t.pending[key]; ok && cur == change {
		delete(t.pending, key)
	}
	t.mu.Unlock()
	took := now.Sub(change.since).Round(time.Second)
	if change.to < change.from {
		r.Recorder.Eventf(b, nil, corev1.EventTypeNormal, ReasonScaled, "Scale", "scaled from %d to %d pods in %v: the drained pods are gone and %d are ready", change.from, change.to, took, change.to)
		return
	}
	r.Recorder.Eventf(b, nil, corev1.EventTypeNormal, ReasonScaled, "Scale", "scaled from %d to %d pods in %v: all %d ready", change.from, change.to, took, change.to)
}

// scaleDone: the StatefulSet has seen its spec, holds exactly to pods, all
// ready, and no pod at or beyond ordinal to remains (a draining pod is
// still there while it drains).
func scaleDone(sts *appsv1.StatefulSet, pods []corev1.Pod, to int32) bool {
	s := sts.Status
	if s.ObservedGeneration < sts.Generation || s.Replicas != to || s.ReadyReplicas != to {
		return false
	}
	prefix := sts.Name + "-"
	for _, p := range pods {
		n, err := strconv.Atoi(strings.TrimPrefix(p.Name, prefix))
		if strings.HasPrefix(p.Name, prefix) && err == nil && int32(n) >= to {
			return false
		}
	}
	return true
}
