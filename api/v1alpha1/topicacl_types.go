package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TopicFilter is an MQTT topic filter: levels separated by '/', where '+'
// matches one whole level and '#', as the last level, matches the rest. The
// levels %u and %c stand for the client's username and client ID.
// +kubebuilder:validation:MaxLength=1024
// +kubebuilder:validation:XValidation:rule="size(self) > 0",message="topic must not be empty"
// +kubebuilder:validation:XValidation:rule="!self.contains('#') || self == '#' || (self.endsWith('/#') && self.indexOf('#') == size(self) - 1)",message="'#' must be the last level of a topic filter and stand alone in it, as in sensors/#"
// +kubebuilder:validation:XValidation:rule="!self.matches('[^/][+]|[+][^/]')",message="'+' must be a whole topic level, as in sensors/+/temperature, not part of one"
// +kubebuilder:validation:XValidation:rule="!self.matches('[^/]%|%[^uc]|%$|%[uc][^/]')",message="'%' may only appear as a whole level %u (username) or %c (client ID), as in devices/%u/#"
type TopicFilter string

// ACLAccess is what a rule governs.
// +kubebuilder:validation:Enum=Publish;Subscribe;PublishSubscribe
type ACLAccess string

const (
	// AccessPublish governs PUBLISH to matching topics.
	AccessPublish ACLAccess = "Publish"
	// AccessSubscribe governs SUBSCRIBE to matching filters and delivery from them.
	AccessSubscribe ACLAccess = "Subscribe"
	// AccessPublishSubscribe governs both.
	AccessPublishSubscribe ACLAccess = "PublishSubscribe"
)

// ACLEffect is what a matching rule does.
// +kubebuilder:validation:Enum=Allow;Deny
type ACLEffect string

const (
	// EffectAllow grants the access.
	EffectAllow ACLEffect = "Allow"
	// EffectDeny refuses the access.
	EffectDeny ACLEffect = "Deny"
)

// ACLRule allows or denies one kind of access to topics matching a filter.
type ACLRule struct {
	// topic is the MQTT topic filter the rule matches.
	Topic TopicFilter `json:"topic"`
	// access is Publish, Subscribe or PublishSubscribe.
	Access ACLAccess `json:"access"`
	// effect is Allow (default) or Deny.
	// +kubebuilder:default=Allow
	// +optional
	Effect ACLEffect `json:"effect,omitempty"`
}

// ACLSubjects says whom a TopicACL applies to.
// +kubebuilder:validation:XValidation:rule="(has(self.users) && size(self.users) > 0) || self.allAuthenticated || self.anonymous",message="subjects must name at least one user, or set allAuthenticated or anonymous"
type ACLSubjects struct {
	// users are MQTT usernames (as in MQTTUser .spec.username, or the
	// MQTTUser's name when that is empty).
	// +kubebuilder:validation:MaxItems=1000
	// +listType=set
	// +optional
	Users []Username `json:"users,omitempty"`

	// allAuthenticated applies the rules to every client that logged in with a
	// username.
	// +kubebuilder:default=false
	// +optional
	AllAuthenticated bool `json:"allAuthenticated"`

	// anonymous applies the rules to clients without a username (only
	// possible when the broker sets allowAnonymous).
	// +kubebuilder:default=false
	// +optional
	Anonymous bool `json:"anonymous"`
}

// TopicACLSpec grants or denies topic access to users of one broker.
type TopicACLSpec struct {
	// brokerRef names the MQTTBroker, in this namespace, whose clients these
	// rules govern. It cannot be changed.
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="brokerRef is immutable: delete this TopicACL and create a new one for the other broker"
	BrokerRef BrokerReference `json:"brokerRef"`

	// subjects are the clients the rules apply to.
	Subjects ACLSubjects `json:"subjects"`

	// rules are evaluated in order; the first rule that matches a topic and
	// access decides. Anything no rule allows is denied.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=256
	// +listType=atomic
	Rules []ACLRule `json:"rules"`
}

// TopicACLStatus is what the operator observed of the ACL.
type TopicACLStatus struct {
	// observedGeneration is the spec generation this status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// conditions: Ready when the rules are enforced on every ready broker
	// pod; SubjectsResolved is False while a named user has no MQTTUser.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// unknownUsers are usernames in subjects.users that no MQTTUser of the
	// broker has (yet). The rules apply to them as soon as such a user exists.
	// +optional
	// +listType=atomic
	UnknownUsers []string `json:"unknownUsers,omitempty"`
}

// TopicACL is an ordered list of allow and deny rules on MQTT topics for some
// users of one MQTTBroker.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=tacl,categories=mqtt
// +kubebuilder:printcolumn:name="Broker",type=string,JSONPath=`.spec.brokerRef.name`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].reason`
// +kubebuilder:printcolumn:name="Subjects",type=string,JSONPath=`.status.conditions[?(@.type=="SubjectsResolved")].reason`
// +kubebuilder:printcolumn:name="Unknown-Users",type=string,JSONPath=`.status.unknownUsers`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type TopicACL struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec holds the subjects and rules.
	Spec TopicACLSpec `json:"spec"`
	// status is what the operator observed.
	// +optional
	Status TopicACLStatus `json:"status,omitempty"`
}

// TopicACLList is a list of TopicACLs.
// +kubebuilder:object:root=true
type TopicACLList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []TopicACL `json:"items"`
}
