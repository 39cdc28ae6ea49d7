package controllers

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	v1alpha1 "github.com/mqtt-operator/mqtt-operator/api/v1alpha1"
	"github.com/mqtt-operator/mqtt-operator/internal/resources"
)

// +kubebuilder:rbac:groups=monitoring.coreos.com,resources=podmonitors,verbs=get;create;patch;delete

// podMonitorRecheck is how long the operator trusts what it learnt about
// the PodMonitor kind being installed: installing prometheus-operator
// later is noticed within it, and a cluster without it costs one discovery
// request per interval, not one per reconcile. Tests shorten it.
var podMonitorRecheck atomic.Int64

func init() { podMonitorRecheck.Store(int64(time.Minute)) }

// kindPresence remembers whether an optional kind is served.
type kindPresence struct {
	mu      sync.Mutex
	served  bool
	checked time.Time
}

// podMonitorsServed reports whether the PodMonitor kind is installed, asking
// the API server at most once per podMonitorRecheck.
func (r *MQTTBrokerReconciler) podMonitorsServed() (bool, error) {
	p := &r.podMonitorKind
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.checked.IsZero() && time.Since(p.checked) < time.Duration(podMonitorRecheck.Load()) {
		return p.served, nil
	}
	_, err := r.Client.RESTMapper().RESTMapping(resources.PodMonitorGVK.GroupKind(), resources.PodMonitorGVK.Version)
	switch {
	case err == nil:
		p.served = true
	case meta.IsNoMatchError(err):
		p.served = false
	default:
		return false, fmt.Errorf("looking up the PodMonitor kind: %w", err)
	}
	p.checked = time.Now()
	return p.served, nil
}

// syncPodMonitor keeps the broker's PodMonitor (spec.monitoring.podMonitor)
// where prometheus-operator is installed, and removes it when disabled.
// Without the kind it does nothing: monitoring is optional. The operator
// does not watch PodMonitors (a watch on a kind that may not exist would
// fail), so a hand edit is repaired at the broker's next reconcile.
func (r *MQTTBrokerReconciler) syncPodMonitor(ctx context.Context, b *v1alpha1.MQTTBroker) error {
	served, err := r.podMonitorsServed()
	if err != nil || !served {
		if err == nil {
			log.FromContext(ctx).V(2).Info("PodMonitor kind not installed; no PodMonitor for the broker")
		}
		return err
	}
	if resources.PodMonitorWanted(b) {
		err := apply(ctx, r.Client, resources.PodMonitor(b, r.Options))
		if meta.IsNoMatchError(err) { // uninstalled meanwhile
			r.forgetPodMonitorKind()
			return nil
		}
		return err
	}
	pm := &unstructured.Unstructured{}
	pm.SetGroupVersionKind(resources.PodMonitorGVK)
	pm.SetNamespace(b.Namespace)
	pm.SetName(b.Name)
	err = r.Client.Delete(ctx, pm)
	if apierrors.IsNotFound(err) || meta.IsNoMatchError(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("deleting PodMonitor %s: %w", client.ObjectKeyFromObject(pm), err)
	}
	return nil
}

func (r *MQTTBrokerReconciler) forgetPodMonitorKind() {
	r.podMonitorKind.mu.Lock()
	r.podMonitorKind.checked = time.Time{}
	r.podMonitorKind.mu.Unlock()
}
