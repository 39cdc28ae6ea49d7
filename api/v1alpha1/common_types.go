package v1alpha1

// BrokerReference names an MQTTBroker in the same namespace. References never
// cross namespaces: a tenant can only attach users and ACLs to its own brokers.
type BrokerReference struct {
	// name is the name of the MQTTBroker in this object's namespace.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:XValidation:rule="self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')",message="brokerRef.name must be a lowercase RFC 1123 label (letters, digits and '-'), like the MQTTBroker's own name"
	Name string `json:"name"`
}

// Condition types shared by the kinds of this API. Every kind has Ready; the
// broker adds Available and Progressing.
const (
	// ConditionReady summarises the object: True when everything it asks for is
	// in place and serving.
	ConditionReady = "Ready"
	// ConditionAvailable is True when at least one broker pod accepts MQTT
	// connections (or the broker is deliberately scaled to zero).
	ConditionAvailable = "Available"
	// ConditionProgressing is True while a rollout or scale change is under way.
	ConditionProgressing = "Progressing"
	// ConditionAuthSynced is True when every ready broker pod enforces the
	// latest users and ACLs.
	ConditionAuthSynced = "AuthSynced"
	// ConditionTLSReady is True when the broker's server certificate is
	// valid and in its pods' TLS Secret; present only with a TLS listener.
	ConditionTLSReady = "TLSReady"
	// ConditionClustered is True when every pod of a clustered broker has
	// joined the mesh (a route to every peer); present only while the
	// broker is clustered and has pods.
	ConditionClustered = "Clustered"
)
