// Package v1alpha1 holds the broker.mqtt-operator.io/v1alpha1 API: MQTTBroker,
// MQTTUser and TopicACL. It depends only on k8s.io/api and apimachinery, so
// other programs can import it cheaply.
// +kubebuilder:object:generate=true
// +groupName=broker.mqtt-operator.io
package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

var (
	// GroupVersion is the API group and version of every kind in this package.
	GroupVersion = schema.GroupVersion{Group: "broker.mqtt-operator.io", Version: "v1alpha1"}

	// SchemeBuilder registers the kinds of this package with a runtime.Scheme.
	SchemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)

	// AddToScheme adds the kinds of this package to a runtime.Scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

func addKnownTypes(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion,
		&MQTTBroker{}, &MQTTBrokerList{},
		&MQTTUser{}, &MQTTUserList{},
		&TopicACL{}, &TopicACLList{},
	)
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}
