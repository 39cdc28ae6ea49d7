package resources

import (
	"fmt"
	"regexp"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation"

	v1alpha1 "github.com/mqtt-operator/mqtt-operator/api/v1alpha1"
)

// PodMonitorGVK is prometheus-operator's PodMonitor, an optional
// dependency: the operator makes one per broker only where it is installed.
var PodMonitorGVK = schema.GroupVersionKind{Group: "monitoring.coreos.com", Version: "v1", Kind: "PodMonitor"}

// PodMonitorWanted reports whether b wants a PodMonitor (the default).
func PodMonitorWanted(b *v1alpha1.MQTTBroker) bool {
	return b.Spec.Monitoring == nil || b.Spec.Monitoring.PodMonitor != v1alpha1.PodMonitorDisabled
}

// PodMonitor scrapes /metrics on the health port of b's pods. Prometheus
// adds the namespace and pod labels the chart's alerts and dashboard select
// a broker by; the metrics carry no client or device label.
func PodMonitor(b *v1alpha1.MQTTBroker, opts Options) *unstructured.Unstructured {
	selector := map[string]any{}
	for k, v := range SelectorLabels(b) {
		selector[k] = v
	}
	endpoint := map[string]any{"port": healthPortName, "path": "/metrics", "scheme": "http"}
	if opts.PodMonitorInterval != "" {
		endpoint["interval"] = opts.PodMonitorInterval
	}
	return ownedUnstructured(b, PodMonitorGVK, opts.PodMonitorLabels, map[string]any{
		"selector":            map[string]any{"matchLabels": selector},
		"podMetricsEndpoints": []any{endpoint},
	})
}

// ownedUnstructured is an object of an optional kind (one the operator's
// scheme does not know) named after b and controlled by it, with b's labels
// over the extra ones, and spec.
func ownedUnstructured(b *v1alpha1.MQTTBroker, gvk schema.GroupVersionKind, extraLabels map[string]string, spec map[string]any) *unstructured.Unstructured {
	meta := objectMeta(b, b.Name)
	owner := meta.OwnerReferences[0]
	labels := map[string]any{}
	for k, v := range extraLabels {
		labels[k] = v
	}
	for k, v := range meta.Labels { // the operator's own win
		labels[k] = v
	}
	u := &unstructured.Unstructured{Object: map[string]any{
		"metadata": map[string]any{
			"name":      meta.Name,
			"namespace": meta.Namespace,
			"labels":    labels,
			"ownerReferences": []any{map[string]any{
				"apiVersion": owner.APIVersion, "kind": owner.Kind, "name": owner.Name, "uid": string(owner.UID),
				"controller": true, "blockOwnerDeletion": true,
			}},
		},
		"spec": spec,
	}}
	u.SetGroupVersionKind(gvk)
	return u
}

// ParseLabels parses "k=v,k2=v2" (the operator's --pod-monitor-labels) into
// labels, refusing keys and values Kubernetes would.
func ParseLabels(s string) (map[string]string, error) {
	out := map[string]string{}
	for _, kv := range strings.Split(s, ",") {
		if kv = strings.TrimSpace(kv); kv == "" {
			continue
		}
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return nil, fmt.Errorf("label %q: want key=value", kv)
		}
		if errs := validation.IsQualifiedName(k); len(errs) > 0 {
			return nil, fmt.Errorf("label key %q: %s", k, strings.Join(errs, "; "))
		}
		if errs := validation.IsValidLabelValue(v); len(errs) > 0 {
			return nil, fmt.Errorf("label %q value %q: %s", k, v, strings.Join(errs, "; "))
		}
		out[k] = v
	}
	return out, nil
}

// prometheusDuration is the duration syntax of Prometheus and its operator.
var prometheusDuration = regexp.MustCompile(`^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$`)

// ValidScrapeInterval checks a PodMonitor interval ("" for Prometheus' own).
func ValidScrapeInterval(s string) error {
	if s != "" && !prometheusDuration.MatchString(s) {
		return fmt.Errorf("scrape interval %q: want a Prometheus duration such as 30s or 1m", s)
	}
	return nil
}
