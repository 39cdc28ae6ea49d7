package controllers

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/mqtt-operator/mqtt-operator/api/v1alpha1"
	"github.com/mqtt-operator/mqtt-operator/internal/resources"
)

func installPodMonitorCRD(t *testing.T) { installCRD(t, resources.PodMonitorGVK, "podmonitors") }

func podMonitor(t *testing.T, ns string) (*unstructured.Unstructured, error) {
	t.Helper()
	pm := &unstructured.Unstructured{}
	pm.SetGroupVersionKind(resources.PodMonitorGVK)
	return pm, k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "telemetry"}, pm)
}

// Every broker gets a PodMonitor once prometheus-operator's kind exists,
// with the operator's labels and the broker's pod selector; without the
// kind nothing fails; spec.monitoring.podMonitor: Disabled removes it.
func TestPodMonitorFollowsItsKindAndTheSpec(t *testing.T) {
	podMonitorRecheck.Store(0) // notice the kind at the next reconcile
	t.Cleanup(func() { podMonitorRecheck.Store(int64(time.Minute)) })
	ns := newNamespace(t)
	kindWasThere := k8s.Get(context.Background(), client.ObjectKey{Name: "podmonitors.monitoring.coreos.com"}, &apiextensionsv1.CustomResourceDefinition{}) == nil
	b := createBroker(t, ns, nil)
	if !kindWasThere {
		// Without the kind the broker is reconciled as ever.
		eventually(t, wait, "the StatefulSet", func() error {
			_, err := get(t, ns, "telemetry", &appsv1.StatefulSet{})
			return err
		})
		installPodMonitorCRD(t)
	}
	// Any spec change reconciles the broker again (the operator does not
	// watch an optional kind).
	setSpec := func(mutate func(*v1alpha1.MQTTBroker)) {
		t.Helper()
		eventually(t, wait, "updating the broker", func() error {
			cur, err := get(t, ns, "telemetry", &v1alpha1.MQTTBroker{})
			if err != nil {
				return err
			}
			mutate(cur)
			return k8s.Update(context.Background(), cur)
		})
	}
	setSpec(func(b *v1alpha1.MQTTBroker) { b.Spec.Limits.MaxConnections = 500 })
	eventually(t, wait, "the broker's PodMonitor", func() error {
		pm, err := podMonitor(t, ns)
		if err != nil {
			return err
		}
		spec := fmt.Sprint(pm.Object["spec"])
		for k, v := range resources.SelectorLabels(b) {
			if !strings.Contains(spec, k+":"+v) {
				return fmt.Errorf("selector lacks %s=%s: %s", k, v, spec)
			}
		}
		if !strings.Contains(spec, "port:health") || !strings.Contains(spec, "path:/metrics") || !strings.Contains(spec, "interval:15s") {
			return fmt.Errorf("endpoint is not the health port's /metrics every 15s: %s", spec)
		}
		if pm.GetLabels()["release"] != "prometheus-test" {
			return fmt.Errorf("labels %v lack the operator's release=prometheus-test", pm.GetLabels())
		}
		if refs := pm.GetOwnerReferences(); len(refs) != 1 || refs[0].Name != "telemetry" || refs[0].Controller == nil || !*refs[0].Controller {
			return fmt.Errorf("owner references %v", refs)
		}
		return nil
	})

	setSpec(func(b *v1alpha1.MQTTBroker) {
		b.Spec.Monitoring = &v1alpha1.MonitoringSpec{PodMonitor: v1alpha1.PodMonitorDisabled}
	})
	eventually(t, wait, "the PodMonitor removed", func() error {
		if _, err := podMonitor(t, ns); !apierrors.IsNotFound(err) {
			return fmt.Errorf("still there (%v)", err)
		}
		return nil
	})
}
