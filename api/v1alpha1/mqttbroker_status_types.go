package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Endpoint is one way to reach the broker from inside the cluster.
type Endpoint struct {
	// name of the listener: tcp, tls, websocket or secureWebsocket.
	Name string `json:"name"`
	// host is the client Service's in-cluster DNS name.
	Host string `json:"host"`
	// port of the listener on that Service.
	Port int32 `json:"port"`
	// url is a ready-to-use client URL, such as mqtt://host:1883.
	URL string `json:"url"`
}

// MQTTBrokerStatus is what the operator observed of the broker.
type MQTTBrokerStatus struct {
	// observedGeneration is the spec generation the rest of this status
	// describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// conditions: Ready (summary), Available (accepting clients) and
	// Progressing (a rollout or scale change under way).
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// replicas is the number of broker pods that exist.
	// +optional
	Replicas int32 `json:"replicas,omitempty"`

	// readyReplicas is the number of broker pods that are ready.
	// +optional
	ReadyReplicas int32 `json:"readyReplicas,omitempty"`

	// selector is the label selector of the broker pods, for the scale
	// subresource and HorizontalPodAutoscalers.
	// +optional
	Selector string `json:"selector,omitempty"`

	// endpoints lists where clients inside the cluster connect.
	// +optional
	// +listType=atomic
	Endpoints []Endpoint `json:"endpoints,omitempty"`

	// auth reports the users and ACLs the broker pods enforce.
	// +optional
	Auth *AuthStatus `json:"auth,omitempty"`

	// tls reports the certificates in use, when a TLS listener is enabled.
	// +optional
	TLS *TLSStatus `json:"tls,omitempty"`

	// cluster reports the mesh of a clustered broker, as each pod sees it;
	// absent for a broker that never ran more than one pod.
	// +optional
	Cluster *ClusterStatus `json:"cluster,omitempty"`

	// rebalance reports the last rebalance of a clustered broker's clients
	// over its pods (spec.rebalance); absent until the first.
	// +optional
	Rebalance *RebalanceStatus `json:"rebalance,omitempty"`
}

// Phases of a rebalance.
const (
	// RebalanceRunning: clients are being moved from the busiest pods.
	RebalanceRunning = "Rebalancing"
	// RebalanceDone: every pod is within the band of the mean.
	RebalanceDone = "Balanced"
	// RebalanceIncomplete: moved clients kept coming back to the same pods
	// (clients that connect to a pod's own address, or a Service with
	// session affinity); the operator tries again after a while or when
	// the pods change.
	RebalanceIncomplete = "Incomplete"
)

// RebalanceStatus is the last rebalance of a broker's clients.
type RebalanceStatus struct {
	// phase is Rebalancing, Balanced or Incomplete.
	Phase string `json:"phase"`
	// startedAt is when the rebalance began.
	// +optional
	StartedAt *metav1.Time `json:"startedAt,omitempty"`
	// finishedAt is when it ended; unset while it runs.
	// +optional
	FinishedAt *metav1.Time `json:"finishedAt,omitempty"`
	// pods is the number of pods it balanced over.
	// +optional
	Pods int32 `json:"pods,omitempty"`
	// rounds is how many times the operator asked pods to move clients.
	// +optional
	Rounds int32 `json:"rounds,omitempty"`
	// clientsMoved is how many clients pods moved at its asking.
	// +optional
	ClientsMoved int32 `json:"clientsMoved,omitempty"`
	// clients is the number of clients on each pod, pod 0 first, when the
	// operator last looked during the rebalance.
	// +optional
	// +listType=atomic
	Clients []int32 `json:"clients,omitempty"`
}

// ClusterStatus is the mesh of a clustered broker.
type ClusterStatus struct {
	// name identifies the cluster: pods with another name (another broker's,
	// or a recreated broker's of the same name) are never let in.
	// +optional
	Name string `json:"name,omitempty"`
	// members are the pods the cluster should have, each as it reports
	// itself on its admin API.
	// +optional
	// +listType=map
	// +listMapKey=pod
	Members []ClusterMember `json:"members,omitempty"`
}

// ClusterMember is one pod of a clustered broker.
type ClusterMember struct {
	// pod is the pod's name (its node name in the cluster).
	Pod string `json:"pod"`
	// joined is true once the pod has a route to every peer it was given.
	Joined bool `json:"joined"`
	// connectedPeers is the number of other pods it has a route to.
	// +optional
	ConnectedPeers int32 `json:"connectedPeers"`
	// missingPeers are the peer addresses it has no route to.
	// +optional
	// +listType=atomic
	MissingPeers []string `json:"missingPeers,omitempty"`
	// message says why the pod did not report (not running yet, admin API
	// unreachable); empty when it did.
	// +optional
	Message string `json:"message,omitempty"`
}

// TLSStatus describes the broker's certificates. It never holds key
// material.
type TLSStatus struct {
	// mode the certificate comes from.
	// +optional
	Mode TLSMode `json:"mode,omitempty"`
	// secretName is the Secret the pods mount (tls.crt, tls.key, ca.crt,
	// client-ca.crt), written by the operator after checking the pair.
	// +optional
	SecretName string `json:"secretName,omitempty"`
	// notAfter is when the server certificate in use expires.
	// +optional
	NotAfter *metav1.Time `json:"notAfter,omitempty"`
	// renewalTime is when the operator replaces the server certificate
	// (OperatorManaged), or when it expects the issuer to (CertManager).
	// +optional
	RenewalTime *metav1.Time `json:"renewalTime,omitempty"`
	// serialNumber of the server certificate in use, in hex.
	// +optional
	SerialNumber string `json:"serialNumber,omitempty"`
	// dnsNames the server certificate carries.
	// +optional
	// +listType=atomic
	DNSNames []string `json:"dnsNames,omitempty"`
	// caNotAfter is when the certificate authority that signs client
	// certificates expires.
	// +optional
	CANotAfter *metav1.Time `json:"caNotAfter,omitempty"`
	// trustedCAs is the number of CA certificates in the trust bundle: 2
	// during a CA rollover.
	// +optional
	TrustedCAs int32 `json:"trustedCAs,omitempty"`
}

// AuthStatus says which auth bundle (users with password hashes, and ACLs)
// the operator rendered and how many ready pods enforce it.
type AuthStatus struct {
	// revision identifies the content of the rendered bundle.
	// +optional
	Revision string `json:"revision,omitempty"`
	// generation increases with every bundle the operator writes.
	// +optional
	Generation int64 `json:"generation,omitempty"`
	// users is the number of MQTTUsers in the bundle.
	// +optional
	Users int32 `json:"users"`
	// acls is the number of TopicACLs in the bundle.
	// +optional
	ACLs int32 `json:"acls"`
	// readyPods is the number of ready broker pods.
	// +optional
	ReadyPods int32 `json:"readyPods"`
	// podsInSync is the number of ready pods that reported enforcing this
	// revision.
	// +optional
	PodsInSync int32 `json:"podsInSync"`
}
