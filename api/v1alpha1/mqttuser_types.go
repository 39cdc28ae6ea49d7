package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Username is an MQTT username. It may not contain '/', '+', '#', '%',
// spaces or control characters, because usernames are substituted for %u into
// topic filters, where those characters would change the filter's meaning.
// +kubebuilder:validation:MinLength=1
// +kubebuilder:validation:MaxLength=128
// +kubebuilder:validation:XValidation:rule="self.matches('^[^/+#%[:space:][:cntrl:]]+$')",message="a username must not contain '/', '+', '#', '%', spaces or control characters: it is substituted for %u into topic filters"
type Username string

// AuthenticationType says how an MQTT user proves who it is.
// +kubebuilder:validation:Enum=Password;ClientCertificate
type AuthenticationType string

const (
	// AuthenticationPassword is a username and password in CONNECT.
	AuthenticationPassword AuthenticationType = "Password"
	// AuthenticationClientCertificate is a TLS client certificate.
	AuthenticationClientCertificate AuthenticationType = "ClientCertificate"
)

// SecretKeyReference names one key of a Secret in the same namespace.
type SecretKeyReference struct {
	// name of the Secret.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
	// key in the Secret's data that holds the password.
	// +kubebuilder:default=password
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +optional
	Key string `json:"key,omitempty"`
}

// MQTTUserSpec is an identity MQTT clients log in with.
// +kubebuilder:validation:XValidation:rule="self.authentication == 'Password' || !has(self.passwordSecretRef)",message="passwordSecretRef only applies to authentication Password"
type MQTTUserSpec struct {
	// brokerRef names the MQTTBroker, in this namespace, this user logs in to.
	// It cannot be changed: delete the user and create it for the other broker.
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="brokerRef is immutable: delete this MQTTUser and create a new one for the other broker"
	BrokerRef BrokerReference `json:"brokerRef"`

	// username clients send in CONNECT. Empty uses the MQTTUser's name.
	// +optional
	Username Username `json:"username,omitempty"`

	// authentication is Password (default) or ClientCertificate. A
	// certificate user gets a client certificate (CN = username) and key,
	// issued by its broker's certificate authority, in its connection
	// Secret, and logs in over TLS with no password. The broker checks the
	// certificate's fingerprint against the user, so deleting the user
	// rejects the certificate at once. Needs a TLS listener on the broker.
	// +kubebuilder:default=Password
	// +optional
	Authentication AuthenticationType `json:"authentication,omitempty"`

	// passwordSecretRef points at the password in a Secret you manage; changing
	// that Secret rotates the password. Empty means the operator generates a
	// strong random password once and keeps it in the connection Secret.
	// +optional
	PasswordSecretRef *SecretKeyReference `json:"passwordSecretRef,omitempty"`

	// connectionSecretName is the Secret the operator writes for applications:
	// host, ports, username, password (or tls.crt and tls.key for a
	// certificate user), ca.crt when the broker has TLS, and a ready-to-use
	// uri. Empty uses
	// "<MQTTUser name>-mqtt".
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:XValidation:rule="self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')",message="connectionSecretName must be a valid Secret name: lowercase letters, digits, '-' and '.'"
	// +optional
	ConnectionSecretName string `json:"connectionSecretName,omitempty"`

	// limits bound what this user's clients may take of the broker, so one
	// user's devices cannot crowd out the others. Changes apply at once,
	// without a restart or a reconnect.
	// +optional
	Limits *UserLimits `json:"limits,omitempty"`
}

// UserLimits are per-user quotas (spec.limits). Unset means no limit of
// the user's own; the broker's spec.limits still apply to every client.
type UserLimits struct {
	// maxConnections bounds the user's live connections over all pods of
	// the broker together. A login over it is refused: MQTT 5 reason 0x97
	// (quota exceeded), MQTT 3.1.1 return code 3 (server unavailable). A
	// login that takes over the user's own client ID does not count twice.
	// Lowering it does not disconnect anyone: it refuses new logins until
	// the user is below it.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=10000000
	// +optional
	MaxConnections int32 `json:"maxConnections,omitempty"`

	// maxSubscriptions bounds the subscriptions of each of the user's
	// connections; a filter over it is refused in SUBACK (MQTT 5 reason 0x97,
	// 3.1.1 0x80) while the rest of the SUBSCRIBE proceeds.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100000
	// +optional
	MaxSubscriptions int32 `json:"maxSubscriptions,omitempty"`

	// publishRate bounds the PUBLISH packets per second of each of the
	// user's connections. A client above it is slowed, not cut off: the
	// broker stops reading from it until it is back within the rate (TCP
	// flow control holds it back). Bursts of up to one second's worth pass.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000000
	// +optional
	PublishRate int32 `json:"publishRate,omitempty"`

	// publishBytesPerSecond bounds the bytes of PUBLISH packets (topic and
	// payload) per second of each of the user's connections, slowed like
	// publishRate. At least 1024.
	// +kubebuilder:validation:Minimum=1024
	// +kubebuilder:validation:Maximum=10737418240
	// +optional
	PublishBytesPerSecond int64 `json:"publishBytesPerSecond,omitempty"`

	// maxInflight bounds the unacknowledged QoS 1 and 2 messages of each of
	// the user's connections in each direction: an MQTT 5 client is told it
	// as its Receive Maximum in CONNACK, and messages to the client wait
	// while it has that many unacknowledged. 1 to 65535.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	// +optional
	MaxInflight int32 `json:"maxInflight,omitempty"`
}

// MQTTUserStatus is what the operator observed of the user.
type MQTTUserStatus struct {
	// observedGeneration is the spec generation this status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// conditions: Ready when the user is enforced on every ready broker pod.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// username in effect.
	// +optional
	Username string `json:"username,omitempty"`

	// connectionSecretName is the Secret that holds the connection details.
	// +optional
	ConnectionSecretName string `json:"connectionSecretName,omitempty"`

	// permissions are the TopicACL rules that apply to this user, in the
	// order the broker evaluates them: within one TopicACL the first rule
	// that matches decides; across TopicACLs any Deny wins, then any Allow;
	// anything no rule allows is denied.
	// +optional
	// +listType=atomic
	Permissions []EffectiveRule `json:"permissions,omitempty"`
}

// EffectiveRule is one ACL rule as it applies to a user.
type EffectiveRule struct {
	// acl is the name of the TopicACL the rule comes from.
	ACL string `json:"acl"`
	// topic is the rule's topic filter, with %u already replaced by the
	// username (%c stays: it depends on the client).
	Topic string `json:"topic"`
	// access is Publish, Subscribe or PublishSubscribe.
	Access ACLAccess `json:"access"`
	// effect is Allow or Deny.
	Effect ACLEffect `json:"effect"`
}

// MQTTUser is a username and credentials for one MQTTBroker.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=mqu,categories=mqtt
// +kubebuilder:printcolumn:name="Broker",type=string,JSONPath=`.spec.brokerRef.name`
// +kubebuilder:printcolumn:name="Username",type=string,JSONPath=`.status.username`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].reason`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:validation:XValidation:rule="size(self.metadata.name) <= 63",message="MQTTUser names are limited to 63 characters so that they fit the label that marks the user's connection Secret"
type MQTTUser struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is the desired user.
	Spec MQTTUserSpec `json:"spec"`
	// status is what the operator observed.
	// +optional
	Status MQTTUserStatus `json:"status,omitempty"`
}

// MQTTUserList is a list of MQTTUsers.
// +kubebuilder:object:root=true
type MQTTUserList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []MQTTUser `json:"items"`
}
