// Package resources builds the Kubernetes objects that make up one MQTT broker.
// Every function here is pure: the same MQTTBroker and Options give the same
// objects, with no client, clock, environment or randomness involved. The
// controller applies what these functions return.
package resources

import (
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	v1alpha1 "github.com/mqtt-operator/mqtt-operator/api/v1alpha1"
)

// Options are the operator-wide settings the builders need.
type Options struct {
	// BrokerImage is the default broker image, used unless spec.image is set.
	BrokerImage string
	// OperatorNamespace is where the operator runs; only operator pods there may
	// reach a broker's admin port. Empty closes the admin port to everyone.
	OperatorNamespace string
	// ClusterDomain is the DNS suffix of Services in this cluster, for the
	// names in server certificates. Empty means DefaultClusterDomain.
	ClusterDomain string
	// PodMonitorLabels are added to every broker's PodMonitor (the labels
	// a Prometheus selects monitors by); PodMonitorInterval is its scrape
	// interval, empty for Prometheus' own.
	PodMonitorLabels   map[string]string
	PodMonitorInterval string
}

// Label keys and values the operator puts on everything it creates.
const (
	LabelName      = "app.kubernetes.io/name"
	LabelInstance  = "app.kubernetes.io/instance"
	LabelComponent = "app.kubernetes.io/component"
	LabelManagedBy = "app.kubernetes.io/managed-by"

	// OperatorName is the managed-by value and the operator pods' name label.
	OperatorName = "mqtt-operator"
	brokerName   = "mqtt-broker"

	// AnnotationRestartHash on the pod template changes exactly when pods must
	// restart to pick up a configuration change.
	AnnotationRestartHash = "broker.mqtt-operator.io/restart-hash"
)

// Names of a broker's children, all derived from the broker's name.
func StatefulSetName(b *v1alpha1.MQTTBroker) string     { return b.Name }
func ClientServiceName(b *v1alpha1.MQTTBroker) string   { return b.Name }
func HeadlessServiceName(b *v1alpha1.MQTTBroker) string { return b.Name + "-headless" }
func ConfigMapName(b *v1alpha1.MQTTBroker) string       { return b.Name + "-config" }
func ServiceAccountName(b *v1alpha1.MQTTBroker) string  { return b.Name + "-broker" }

// AuthSecretName holds the rendered auth bundle (users with password hashes,
// ACLs) that the broker pods mount.
func AuthSecretName(b *v1alpha1.MQTTBroker) string { return b.Name + "-auth" }

// AuthStateSecretName holds the operator's bookkeeping about the bundle.
func AuthStateSecretName(b *v1alpha1.MQTTBroker) string { return b.Name + "-auth-state" }

// AdminSecretName holds the token the operator authenticates to the
// broker's admin API with.
func AdminSecretName(b *v1alpha1.MQTTBroker) string { return b.Name + "-admin" }

// SelectorLabels select the broker's pods. They never change for a broker, as
// a StatefulSet's selector is immutable.
func SelectorLabels(b *v1alpha1.MQTTBroker) map[string]string {
	return map[string]string{LabelName: brokerName, LabelInstance: b.Name}
}

// Selector is SelectorLabels in the string form of status.selector.
func Selector(b *v1alpha1.MQTTBroker) string {
	return fmt.Sprintf("%s=%s,%s=%s", LabelInstance, b.Name, LabelName, brokerName)
}

func commonLabels(b *v1alpha1.MQTTBroker) map[string]string {
	l := SelectorLabels(b)
	l[LabelComponent] = "broker"
	l[LabelManagedBy] = OperatorName
	return l
}

// objectMeta names a child in the broker's namespace, labels it and makes the
// broker its controlling owner, so deleting the broker deletes it.
func objectMeta(b *v1alpha1.MQTTBroker, name string) metav1.ObjectMeta {
	return metav1.ObjectMeta{
		Name:      name,
		Namespace: b.Namespace,
		Labels:    commonLabels(b),
		OwnerReferences: []metav1.OwnerReference{{
			APIVersion:         v1alpha1.GroupVersion.String(),
			Kind:               "MQTTBroker",
			Name:               b.Name,
			UID:                b.UID,
			Controller:         ptr.To(true),
			BlockOwnerDeletion: ptr.To(true),
		}},
	}
}
