package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// MQTTBrokerSpec is the desired state of one MQTT broker.
// +kubebuilder:validation:XValidation:rule="!has(self.tls) || self.listeners.tls.enabled || self.listeners.secureWebsocket.enabled",message="spec.tls is set but neither the tls nor the secureWebsocket listener is enabled; enable one (listeners.tls.enabled: true) or remove spec.tls"
// +kubebuilder:validation:XValidation:rule="!has(self.autoscaling) || !has(self.autoscaling.targetCPUUtilizationPercentage) || !has(self.resources) || ((!has(self.resources.requests) || size(self.resources.requests) == 0) && (!has(self.resources.limits) || size(self.resources.limits) == 0)) || (has(self.resources.requests) && 'cpu' in self.resources.requests) || (has(self.resources.limits) && 'cpu' in self.resources.limits)",message="spec.autoscaling.targetCPUUtilizationPercentage is relative to the pods' CPU request, and spec.resources sets none: add resources.requests.cpu (or leave spec.resources out for the default of 100m)"
type MQTTBrokerSpec struct {
	// replicas is the number of broker pods, 0 to 16. 0 stops the broker and
	// keeps its storage; 1 runs one pod; 2 to 16 run one logical broker whose
	// pods route messages between them, so a client may connect to any pod.
	// A broker becomes clustered the first time it runs more than one pod and
	// stays clustered after (see docs/clustering.md): scaling it never
	// restarts the pods that keep running.
	// +kubebuilder:default=1
	// +kubebuilder:validation:XValidation:rule="self >= 0 && self <= 16",message="replicas must be between 0 and 16: 0 stops the broker and keeps its storage, 1 runs one pod, 2 to 16 run one clustered broker"
	// +optional
	Replicas *int32 `json:"replicas,omitempty"`

	// image overrides the broker container image. Empty uses the broker image
	// this operator version was built and tested with. Another image must be
	// on the operator's allow-list (by default: other tags of its broker
	// image's repository), else the broker is not applied (reason NotAllowed).
	// +kubebuilder:validation:MaxLength=512
	// +kubebuilder:validation:XValidation:rule="!self.contains(' ')",message="image must be an image reference without spaces, such as registry.example.com/mqtt-broker:1.2.3"
	// +optional
	Image string `json:"image,omitempty"`

	// imagePullPolicy of the broker container. Empty lets Kubernetes choose
	// (IfNotPresent, or Always for a ':latest' tag).
	// +kubebuilder:validation:Enum=Always;IfNotPresent;Never
	// +optional
	ImagePullPolicy corev1.PullPolicy `json:"imagePullPolicy,omitempty"`

	// resources of the broker container. Empty gets requests of 100m CPU and
	// 128Mi memory and a 1Gi memory limit. An idle connection costs the broker
	// about 40 KiB; size the memory limit to maxConnections.
	// +optional
	Resources corev1.ResourceRequirements `json:"resources,omitempty"`

	// pod holds scheduling and metadata knobs for the broker pods.
	// +optional
	Pod PodTemplate `json:"pod,omitempty"`

	// listeners are the network endpoints the broker accepts MQTT clients on.
	// +kubebuilder:default={tcp:{enabled:true,port:1883},tls:{enabled:false,port:8883},websocket:{enabled:false,port:8083},secureWebsocket:{enabled:false,port:8084}}
	// +optional
	Listeners Listeners `json:"listeners,omitempty"`

	// service configures the client Service in front of the broker pods.
	// +kubebuilder:default={}
	// +optional
	Service ServiceSpec `json:"service,omitempty"`

	// storage is where the broker keeps sessions and retained messages.
	// +kubebuilder:default={}
	// +optional
	Storage Storage `json:"storage,omitempty"`

	// limits protect the broker and its tenants from clients that ask too much.
	// maxConnections, maxPacketSize, maxKeepalive, publishRatePerClient and
	// maxSubscriptionsPerClient change in place, without a restart; maxQoS,
	// retainAvailable, maxInflight, maxQueuedMessages and sessionExpiry are
	// fixed when a broker pod starts, so changing them rolls the pods one at
	// a time.
	// +kubebuilder:default={}
	// +optional
	Limits Limits `json:"limits,omitempty"`

	// allowAnonymous lets clients connect without a username. Off by default:
	// every client then needs an MQTTUser. Anonymous clients still only get what
	// a TopicACL grants to the anonymous subject.
	// +kubebuilder:default=false
	// +optional
	AllowAnonymous bool `json:"allowAnonymous,omitempty"`

	// tls configures the certificates of the tls and secureWebsocket
	// listeners. When one of them is enabled and tls is empty, the operator
	// manages a certificate authority and the server certificate itself.
	// +optional
	TLS *TLSSpec `json:"tls,omitempty"`

	// autoscaling scales replicas between bounds from load: the operator
	// keeps a HorizontalPodAutoscaler (autoscaling/v2) on this broker's
	// scale subresource, which sets spec.replicas. Leave replicas out of
	// what you commit to Git while it is on (docs/autoscaling.md). Removing
	// autoscaling removes the HorizontalPodAutoscaler and leaves replicas
	// where it put them.
	// +optional
	Autoscaling *AutoscalingSpec `json:"autoscaling,omitempty"`

	// rebalance evens out the clients of a clustered broker over its pods.
	// MQTT connections are long-lived and stay on the pod they first
	// reached, so pods added by a scale-out would sit idle: once every pod
	// is ready and joined, the operator asks the busiest pods to send
	// clients elsewhere (MQTT 5 clients are told 0x9C, "use another
	// server"), at a bounded rate, until every pod is within a band of the
	// mean. Clients reconnect through the Service; persistent sessions
	// follow them. On unless enabled is false.
	// +optional
	Rebalance *RebalanceSpec `json:"rebalance,omitempty"`

	// monitoring says how Prometheus finds the broker's metrics.
	// +optional
	Monitoring *MonitoringSpec `json:"monitoring,omitempty"`
}

// MonitoringSpec says how Prometheus finds a broker's metrics.
type MonitoringSpec struct {
	// podMonitor: Enabled (the default) keeps a prometheus-operator
	// PodMonitor that scrapes the broker's pods, whenever that kind is
	// installed in the cluster (without it nothing is made and nothing
	// fails); Disabled removes it. Its labels and interval are the
	// operator's (the chart's brokerMonitoring values).
	// +kubebuilder:validation:Enum=Enabled;Disabled
	// +kubebuilder:default=Enabled
	// +optional
	PodMonitor string `json:"podMonitor,omitempty"`
}

// PodMonitor values.
const (
	PodMonitorEnabled  = "Enabled"
	PodMonitorDisabled = "Disabled"
)

// PodTemplate holds the pod-level settings a platform team usually needs.
type PodTemplate struct {
	// annotations added to every broker pod.
	// +optional
	Annotations map[string]string `json:"annotations,omitempty"`

	// labels added to every broker pod. The app.kubernetes.io/ labels the
	// operator selects pods by cannot be overridden.
	// +kubebuilder:validation:XValidation:rule="!self.exists(k, k in ['app.kubernetes.io/name', 'app.kubernetes.io/instance', 'app.kubernetes.io/component', 'app.kubernetes.io/managed-by'])",message="pod.labels must not set app.kubernetes.io/name, instance, component or managed-by: the operator selects broker pods by them"
	// +optional
	Labels map[string]string `json:"labels,omitempty"`

	// nodeSelector constrains broker pods to nodes with these labels.
	// +optional
	NodeSelector map[string]string `json:"nodeSelector,omitempty"`

	// tolerations let broker pods run on tainted nodes. Each taint key must be
	// on the operator's allow-list (empty by default), else the broker is not
	// applied (reason NotAllowed).
	// +optional
	// +listType=atomic
	Tolerations []corev1.Toleration `json:"tolerations,omitempty"`

	// affinity rules for broker pods.
	// +optional
	Affinity *corev1.Affinity `json:"affinity,omitempty"`

	// topologySpreadConstraints for broker pods.
	// +optional
	// +listType=atomic
	TopologySpreadConstraints []corev1.TopologySpreadConstraint `json:"topologySpreadConstraints,omitempty"`

	// priorityClassName of broker pods. It must be on the operator's
	// allow-list (empty by default), else the broker is not applied (reason
	// NotAllowed).
	// +kubebuilder:validation:MaxLength=253
	// +optional
	PriorityClassName string `json:"priorityClassName,omitempty"`
}

// Ports the broker uses for itself; listeners cannot take them.
const (
	// HealthPort serves /healthz, /readyz and /metrics.
	HealthPort = 9090
	// AdminPort serves the authenticated admin API the operator pushes to.
	AdminPort = 9091
)

// Listeners are the broker's MQTT endpoints.
// +kubebuilder:validation:XValidation:rule="self.tcp.enabled || self.tls.enabled || self.websocket.enabled || self.secureWebsocket.enabled",message="at least one listener must be enabled, or no client could connect"
// +kubebuilder:validation:XValidation:rule="[self.tcp.enabled ? self.tcp.port : -1, self.tls.enabled ? self.tls.port : -2, self.websocket.enabled ? self.websocket.port : -3, self.secureWebsocket.enabled ? self.secureWebsocket.port : -4].all(p, [self.tcp.enabled ? self.tcp.port : -1, self.tls.enabled ? self.tls.port : -2, self.websocket.enabled ? self.websocket.port : -3, self.secureWebsocket.enabled ? self.secureWebsocket.port : -4].filter(q, q == p).size() == 1)",message="enabled listeners must use different ports"
type Listeners struct {
	// tcp is MQTT over plain TCP (default: on, port 1883).
	// +kubebuilder:default={}
	// +optional
	TCP TCPListener `json:"tcp,omitempty"`

	// tls is MQTT over TLS (default: off, port 8883).
	// +kubebuilder:default={}
	// +optional
	TLS TLSListener `json:"tls,omitempty"`

	// websocket is MQTT over WebSocket at path /mqtt (default: off, port 8083).
	// +kubebuilder:default={}
	// +optional
	WebSocket WebSocketListener `json:"websocket,omitempty"`

	// secureWebsocket is MQTT over WebSocket with TLS at path /mqtt (default:
	// off, port 8084).
	// +kubebuilder:default={}
	// +optional
	SecureWebSocket SecureWebSocketListener `json:"secureWebsocket,omitempty"`
}

// ListenerPort is the port a listener uses in the pod and on the Services.
// Ports below 1024 need a capability the non-root broker does not have.
// +kubebuilder:validation:XValidation:rule="self >= 1024 && self <= 65535",message="port must be between 1024 and 65535: the broker runs as non-root without NET_BIND_SERVICE"
// +kubebuilder:validation:XValidation:rule="self != 9090 && self != 9091",message="ports 9090 (health and metrics) and 9091 (admin API) are reserved for the broker itself"
type ListenerPort int32

// TCPListener is MQTT over plain TCP.
type TCPListener struct {
	// enabled turns the listener on. A pointer, so that Go clients that leave
	// it unset get the default (on) instead of an explicit false.
	// +kubebuilder:default=true
	// +optional
	Enabled *bool `json:"enabled,omitempty"`
	// port of the listener.
	// +kubebuilder:default=1883
	// +optional
	Port ListenerPort `json:"port,omitempty"`
}

// TLSListener is MQTT over TLS.
type TLSListener struct {
	// enabled turns the listener on.
	// +kubebuilder:default=false
	// +optional
	Enabled bool `json:"enabled,omitempty"`
	// port of the listener.
	// +kubebuilder:default=8883
	// +optional
	Port ListenerPort `json:"port,omitempty"`
}

// WebSocketListener is MQTT over WebSocket.
type WebSocketListener struct {
	// enabled turns the listener on.
	// +kubebuilder:default=false
	// +optional
	Enabled bool `json:"enabled,omitempty"`
	// port of the listener.
	// +kubebuilder:default=8083
	// +optional
	Port ListenerPort `json:"port,omitempty"`
}

// SecureWebSocketListener is MQTT over WebSocket with TLS.
type SecureWebSocketListener struct {
	// enabled turns the listener on.
	// +kubebuilder:default=false
	// +optional
	Enabled bool `json:"enabled,omitempty"`
	// port of the listener.
	// +kubebuilder:default=8084
	// +optional
	Port ListenerPort `json:"port,omitempty"`
}

// ServiceSpec configures the client Service.
type ServiceSpec struct {
	// type of the client Service.
	// +kubebuilder:validation:Enum=ClusterIP;NodePort;LoadBalancer
	// +kubebuilder:default=ClusterIP
	// +optional
	Type corev1.ServiceType `json:"type,omitempty"`

	// annotations on the client Service, e.g. for a cloud load balancer.
	// +optional
	Annotations map[string]string `json:"annotations,omitempty"`
}

// StorageType says where broker state lives.
// +kubebuilder:validation:Enum=Ephemeral;Persistent
type StorageType string

const (
	// StorageEphemeral keeps state in an emptyDir: lost when the pod goes.
	StorageEphemeral StorageType = "Ephemeral"
	// StoragePersistent keeps state on a PersistentVolumeClaim per pod.
	StoragePersistent StorageType = "Persistent"
)

// StorageDurability says when a QoS 1 or 2 message is safe on the volume.
// +kubebuilder:validation:Enum=Buffered;Fsync
type StorageDurability string

const (
	// DurabilityBuffered commits broker state to the volume in the background.
	DurabilityBuffered StorageDurability = "Buffered"
	// DurabilityFsync commits and fsyncs a QoS 1/2 message before the PUBACK.
	DurabilityFsync StorageDurability = "Fsync"
)

// Storage is where the broker keeps its state.
// +kubebuilder:validation:XValidation:rule="self.type == 'Persistent' || (!has(self.size) && !has(self.storageClassName))",message="storage.size and storage.storageClassName only apply to type Persistent"
// +kubebuilder:validation:XValidation:rule="self.?type.orValue('Ephemeral') == 'Persistent' || self.?durability.orValue('Buffered') == 'Buffered'",message="storage.durability Fsync needs type Persistent: ephemeral storage does not outlive the pod, so there is nothing to make durable"
// +kubebuilder:validation:XValidation:rule="has(self.size) == has(oldSelf.size) && has(self.storageClassName) == has(oldSelf.storageClassName)",message="storage type, size and storageClassName cannot be changed after the broker is created: a StatefulSet's volume claims are immutable; create a new broker instead"
type Storage struct {
	// type is Ephemeral (an emptyDir, the default) or Persistent (a
	// PersistentVolumeClaim per pod).
	// +kubebuilder:default=Ephemeral
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="storage type, size and storageClassName cannot be changed after the broker is created: a StatefulSet's volume claims are immutable; create a new broker instead"
	// +optional
	Type StorageType `json:"type,omitempty"`

	// size of each pod's volume claim for type Persistent. Default 1Gi.
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="storage type, size and storageClassName cannot be changed after the broker is created: a StatefulSet's volume claims are immutable; create a new broker instead"
	// +optional
	Size *resource.Quantity `json:"size,omitempty"`

	// storageClassName of the volume claims for type Persistent. Empty uses the
	// cluster's default StorageClass.
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="storage type, size and storageClassName cannot be changed after the broker is created: a StatefulSet's volume claims are immutable; create a new broker instead"
	// +optional
	StorageClassName *string `json:"storageClassName,omitempty"`

	// durability says when a QoS 1 or 2 message is safe, for type Persistent.
	// Buffered (the default) commits sessions, inflight and retained messages
	// to the volume in the background: they survive the broker crashing and
	// the pod being deleted, but not the node losing power in the moment
	// after a message was acknowledged. Fsync commits and fsyncs every QoS 1
	// and 2 message before the broker acknowledges it, so no acknowledged
	// message is lost to any crash, at a cost in throughput measured in
	// docs/benchmarks.md. Changing it rolls the pods.
	// +optional
	Durability StorageDurability `json:"durability,omitempty"`
}

// Limits bound what clients may ask of the broker.
type Limits struct {
	// maxConnections is the most clients connected to one broker pod at once.
	// +kubebuilder:default=10000
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000000
	// +optional
	MaxConnections int32 `json:"maxConnections,omitempty"`

	// maxPacketSize is the largest MQTT packet in bytes the broker accepts;
	// larger packets close the connection before anything is allocated for them.
	// +kubebuilder:default=1048576
	// +kubebuilder:validation:XValidation:rule="self >= 1024 && self <= 268435455",message="maxPacketSize must be between 1024 bytes and 268435455 bytes (MQTT's own maximum)"
	// +optional
	MaxPacketSize int32 `json:"maxPacketSize,omitempty"`

	// maxInflight is the number of unacknowledged QoS 1 and 2 messages in
	// flight per client (MQTT 5 receive maximum). Changing it rolls the pods.
	// +kubebuilder:default=64
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	// +optional
	MaxInflight int32 `json:"maxInflight,omitempty"`

	// maxQueuedMessages bounds the QoS 1 and 2 messages the broker holds for
	// one client: sent and not yet acknowledged, or waiting to be sent,
	// including while a persistent session is offline. Once a client's queue
	// is full, further messages for it are dropped and counted in the
	// broker's mqtt_messages_dropped_total metric. Changing it rolls the pods.
	// +kubebuilder:default=1000
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	// +optional
	MaxQueuedMessages int32 `json:"maxQueuedMessages,omitempty"`

	// maxQueuedBytesPerClient bounds, in bytes, the messages the broker holds
	// for one client: waiting to be written, sent and not yet acknowledged,
	// or queued while a persistent session is offline. A client that stopped
	// reading and passes it is disconnected (MQTT 5 reason 0x97, quota
	// exceeded); an offline session that passes it keeps the messages it
	// has and drops new ones. Clients that are reading are never cut off:
	// publishers wait for them. Both are counted in the broker's metrics.
	// Unset means 16 MiB. Changes apply in place.
	// +kubebuilder:validation:XValidation:rule="self >= 65536 && self <= 1099511627776",message="maxQueuedBytesPerClient must be between 65536 bytes (64 KiB) and 1099511627776 bytes (1 TiB)"
	// +optional
	MaxQueuedBytesPerClient int64 `json:"maxQueuedBytesPerClient,omitempty"`

	// maxQueuedBytesTotal bounds the same bytes for all clients of one broker
	// pod together: past it, clients that stopped reading are disconnected
	// and offline sessions drop new messages. Unset means a quarter of the
	// broker container's memory limit, or 512 MiB without one. Changes
	// apply in place.
	// +kubebuilder:validation:XValidation:rule="self >= 1048576 && self <= 17592186044416",message="maxQueuedBytesTotal must be between 1048576 bytes (1 MiB) and 17592186044416 bytes (16 TiB)"
	// +optional
	MaxQueuedBytesTotal int64 `json:"maxQueuedBytesTotal,omitempty"`

	// maxQoS is the highest quality of service the broker grants: 0, 1 or 2.
	// Changing it rolls the pods.
	// +kubebuilder:default=2
	// +kubebuilder:validation:XValidation:rule="self >= 0 && self <= 2",message="maxQoS must be 0, 1 or 2"
	// +optional
	MaxQoS *int32 `json:"maxQoS,omitempty"`

	// retainAvailable lets clients publish retained messages. Changing it
	// rolls the pods.
	// +kubebuilder:default=true
	// +optional
	RetainAvailable *bool `json:"retainAvailable,omitempty"`

	// sessionExpiry is the longest a disconnected persistent session is kept,
	// as a duration such as 1h or 30m. Changing it rolls the pods.
	// +kubebuilder:default="2h"
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="self.matches('^([0-9]+(h|m|s))+$') && duration(self) <= duration('720h')",message="sessionExpiry must be a duration of hours, minutes and seconds (such as 2h or 90m) no longer than 720h"
	// +optional
	SessionExpiry string `json:"sessionExpiry,omitempty"`

	// maxKeepalive is the longest keepalive interval in seconds a client may
	// use; the broker tells MQTT 5 clients to use this one when they ask for
	// more.
	// +kubebuilder:default=300
	// +kubebuilder:validation:XValidation:rule="self >= 10 && self <= 65535",message="maxKeepalive must be between 10 and 65535 seconds"
	// +optional
	MaxKeepalive int32 `json:"maxKeepalive,omitempty"`

	// publishRatePerClient is the most PUBLISH packets per second one client may
	// send; 0 means no limit.
	// +kubebuilder:default=0
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=1000000
	// +optional
	PublishRatePerClient int32 `json:"publishRatePerClient,omitempty"`

	// maxSubscriptionsPerClient is the most topic filters one client may be
	// subscribed to at once.
	// +kubebuilder:default=100
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100000
	// +optional
	MaxSubscriptionsPerClient int32 `json:"maxSubscriptionsPerClient,omitempty"`

	// maxPendingConnections bounds the connections that have not logged in
	// yet, per pod, apart from maxConnections, so sockets that never log in
	// cannot lock clients out: when it is full, the oldest connection that
	// has not sent a whole CONNECT is closed to make room. Unset means a
	// quarter of maxConnections, at least 64 and at most 10000.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000000
	// +optional
	MaxPendingConnections int32 `json:"maxPendingConnections,omitempty"`

	// maxPendingConnectionsPerAddress bounds the connections not logged in
	// yet from one source address; unset means no limit. Only useful where
	// the pods see the clients' own addresses (a Service with
	// externalTrafficPolicy: Local): otherwise every device behind one node
	// shares that node's address.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000000
	// +optional
	MaxPendingConnectionsPerAddress int32 `json:"maxPendingConnectionsPerAddress,omitempty"`

	// connectRatePerAddress is the most new connections per second (with a
	// burst of as many) from one source address; unset means no limit. The
	// same caveat about source addresses applies.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000000
	// +optional
	ConnectRatePerAddress int32 `json:"connectRatePerAddress,omitempty"`

	// maxConnectPacketSize is the largest CONNECT packet in bytes, checked
	// at its header before anything is read or allocated: a CONNECT comes
	// before the client proved anything. Unset means 16384 (a JWT password
	// and a small will fit). Never more than maxPacketSize.
	// +kubebuilder:validation:Minimum=256
	// +kubebuilder:validation:Maximum=1048576
	// +optional
	MaxConnectPacketSize int32 `json:"maxConnectPacketSize,omitempty"`

	// maxRetainedMessages bounds the retained messages one broker pod keeps
	// (they live in memory and are all loaded at every start). Past it, or
	// past maxRetainedBytes, a retained PUBLISH is delivered to current
	// subscribers but not kept, and counted in mqtt_retained_refused_total.
	// Unset means 100000.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=10000000
	// +optional
	MaxRetainedMessages int32 `json:"maxRetainedMessages,omitempty"`

	// maxRetainedBytes bounds the topics and payloads of the retained
	// messages one broker pod keeps, as a quantity such as 64Mi. Unset
	// means 64Mi.
	// +kubebuilder:validation:XValidation:rule="isQuantity(self) && quantity(self).isGreaterThan(quantity('0')) && quantity(self).compareTo(quantity('64Gi')) <= 0",message="maxRetainedBytes must be a quantity such as 64Mi, above 0 and at most 64Gi"
	// +kubebuilder:validation:MaxLength=32
	// +optional
	MaxRetainedBytes string `json:"maxRetainedBytes,omitempty"`

	// maxTopicLength is the longest topic name or filter in bytes; a PUBLISH
	// to a longer one disconnects the client (MQTT 5 reason 0x90) and a
	// longer filter is refused in SUBACK. Unset means 4096.
	// +kubebuilder:validation:Minimum=16
	// +kubebuilder:validation:Maximum=65535
	// +optional
	MaxTopicLength int32 `json:"maxTopicLength,omitempty"`

	// maxTopicLevels is the most levels (parts between slashes) of a topic
	// name or filter, treated like maxTopicLength. Unset means 32.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000
	// +optional
	MaxTopicLevels int32 `json:"maxTopicLevels,omitempty"`

	// topicAliasMaximum is the most MQTT 5 topic aliases per connection in
	// each direction: the broker tells each client it may use this many, and
	// uses at most this many (and no more than the client allows) for the
	// messages it sends. Each alias holds one topic name for the life of the
	// connection, so a connection's aliases hold at most twice this many
	// topics. 0 turns topic aliases off. Changes apply to new connections.
	// +kubebuilder:default=10
	// +kubebuilder:validation:XValidation:rule="self >= 0 && self <= 1000",message="topicAliasMaximum must be between 0 (no topic aliases) and 1000"
	// +optional
	TopicAliasMaximum *int32 `json:"topicAliasMaximum,omitempty"`
}

// TLSMode says where the broker's server certificate comes from.
// +kubebuilder:validation:Enum=OperatorManaged;ExistingSecret;CertManager
type TLSMode string

const (
	// TLSOperatorManaged: the operator runs a CA for the broker and issues
	// and renews the server certificate.
	TLSOperatorManaged TLSMode = "OperatorManaged"
	// TLSExistingSecret: a kubernetes.io/tls Secret you manage.
	TLSExistingSecret TLSMode = "ExistingSecret"
	// TLSCertManager: a cert-manager Certificate the operator creates.
	TLSCertManager TLSMode = "CertManager"
)

// TLSSpec configures the broker's certificates.
//
// Whatever the mode, the operator also runs a certificate authority per
// broker for client certificates (MQTTUsers with authentication
// ClientCertificate), and copies the server certificate into a Secret it
// owns only after checking it, so a broken certificate never reaches a pod.
// +kubebuilder:validation:XValidation:rule="self.mode != 'ExistingSecret' || has(self.secretName)",message="mode ExistingSecret needs secretName: the kubernetes.io/tls Secret holding tls.crt and tls.key"
// +kubebuilder:validation:XValidation:rule="self.mode == 'ExistingSecret' || !has(self.secretName)",message="secretName only applies to mode ExistingSecret"
// +kubebuilder:validation:XValidation:rule="self.mode != 'CertManager' || has(self.issuerRef)",message="mode CertManager needs issuerRef: the cert-manager Issuer or ClusterIssuer that signs the certificate"
// +kubebuilder:validation:XValidation:rule="self.mode == 'CertManager' || !has(self.issuerRef)",message="issuerRef only applies to mode CertManager"
// +kubebuilder:validation:XValidation:rule="duration(self.renewBefore) < duration(self.certificateDuration)",message="renewBefore must be shorter than certificateDuration"
// +kubebuilder:validation:XValidation:rule="duration(self.caRenewBefore) < duration(self.caDuration)",message="caRenewBefore must be shorter than caDuration"
// +kubebuilder:validation:XValidation:rule="duration(self.certificateDuration) <= duration(self.caDuration)",message="certificateDuration must not be longer than caDuration: a certificate cannot outlive its CA"
type TLSSpec struct {
	// mode is OperatorManaged (default), ExistingSecret or CertManager.
	// +kubebuilder:default=OperatorManaged
	// +optional
	Mode TLSMode `json:"mode,omitempty"`

	// secretName of a kubernetes.io/tls Secret in this namespace with tls.crt
	// (leaf first, then intermediates), tls.key and optionally ca.crt, for
	// mode ExistingSecret. The operator watches it: a valid new pair reaches
	// the pods without a restart; a broken one is refused (condition
	// TLSReady=False) and the pods keep the last good one.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +optional
	SecretName string `json:"secretName,omitempty"`

	// issuerRef names the cert-manager issuer, for mode CertManager.
	// +optional
	IssuerRef *IssuerReference `json:"issuerRef,omitempty"`

	// dnsNames are extra names the server certificate carries, such as the
	// external name of a LoadBalancer Service. The in-cluster names (the
	// client Service, the headless Service and every pod) are always there.
	// Modes OperatorManaged and CertManager.
	// +kubebuilder:validation:MaxItems=32
	// +kubebuilder:validation:items:MaxLength=253
	// +kubebuilder:validation:items:Pattern=`^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	// +listType=set
	// +optional
	DNSNames []string `json:"dnsNames,omitempty"`

	// certificateDuration is how long server and client certificates the
	// operator issues are valid (default 90 days).
	// +kubebuilder:default="2160h"
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1h')",message="certificateDuration must be at least 1h"
	// +optional
	CertificateDuration *metav1.Duration `json:"certificateDuration,omitempty"`

	// renewBefore is how long before expiry a certificate is replaced
	// (default 30 days).
	// +kubebuilder:default="720h"
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('5m')",message="renewBefore must be at least 5m"
	// +optional
	RenewBefore *metav1.Duration `json:"renewBefore,omitempty"`

	// caDuration is how long a certificate authority the operator creates is
	// valid (default 5 years).
	// +kubebuilder:default="43800h"
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('2h')",message="caDuration must be at least 2h"
	// +optional
	CADuration *metav1.Duration `json:"caDuration,omitempty"`

	// caRenewBefore is how long before the CA expires its successor is
	// created (default 1 year). The successor is trusted at once (it joins
	// ca.crt in every connection Secret) and starts signing half of
	// caRenewBefore later, so clients have that long to pick up the new
	// bundle; the old CA stays trusted until it expires.
	// +kubebuilder:default="8760h"
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('10m')",message="caRenewBefore must be at least 10m"
	// +optional
	CARenewBefore *metav1.Duration `json:"caRenewBefore,omitempty"`
}

// IssuerReference names a cert-manager issuer.
type IssuerReference struct {
	// name of the Issuer (in this namespace) or ClusterIssuer.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
	// kind is Issuer (default) or ClusterIssuer.
	// +kubebuilder:default=Issuer
	// +kubebuilder:validation:Enum=Issuer;ClusterIssuer
	// +optional
	Kind string `json:"kind,omitempty"`
	// group of the issuer kind (default cert-manager.io; external issuers
	// have their own).
	// +kubebuilder:default=cert-manager.io
	// +kubebuilder:validation:MaxLength=253
	// +optional
	Group string `json:"group,omitempty"`
}

// AutoscalingSpec bounds and drives automatic scaling.
// +kubebuilder:validation:XValidation:rule="self.minReplicas <= self.maxReplicas",message="autoscaling.minReplicas must not exceed autoscaling.maxReplicas"
// +kubebuilder:validation:XValidation:rule="has(self.targetCPUUtilizationPercentage) || has(self.targetConnectionsPerPod) || has(self.targetMessagesPerSecondPerPod)",message="autoscaling needs at least one target: targetCPUUtilizationPercentage, targetConnectionsPerPod or targetMessagesPerSecondPerPod"
type AutoscalingSpec struct {
	// minReplicas is the fewest replicas autoscaling may choose, 1 to 16.
	// +kubebuilder:default=1
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=16
	// +optional
	MinReplicas int32 `json:"minReplicas,omitempty"`

	// maxReplicas is the most replicas autoscaling may choose, 1 to 16.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=16
	MaxReplicas int32 `json:"maxReplicas"`

	// targetCPUUtilizationPercentage is the average CPU use of the broker
	// pods, in percent of their CPU request, to scale towards (read from
	// the resource metrics API: metrics-server).
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100
	// +optional
	TargetCPUUtilizationPercentage int32 `json:"targetCPUUtilizationPercentage,omitempty"`

	// targetConnectionsPerPod is the average number of MQTT clients logged
	// in per pod to scale towards (the pods' mqtt_clients_connected, read
	// through the custom metrics API: the chart's metrics adapter).
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000000
	// +optional
	TargetConnectionsPerPod int32 `json:"targetConnectionsPerPod,omitempty"`

	// targetMessagesPerSecondPerPod is the average number of PUBLISH
	// packets per second through each pod, in and out, to scale towards
	// (mqtt_messages_per_second, through the custom metrics API).
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=10000000
	// +optional
	TargetMessagesPerSecondPerPod int32 `json:"targetMessagesPerSecondPerPod,omitempty"`

	// scaleDownStabilizationSeconds is how long the load must stay low
	// before autoscaling removes pods (each removal drains a pod: its
	// clients reconnect elsewhere and its sessions move). 0 to 3600; 300
	// when unset.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=3600
	// +optional
	ScaleDownStabilizationSeconds *int32 `json:"scaleDownStabilizationSeconds,omitempty"`
}

// RebalanceSpec tunes rebalancing (spec.rebalance).
type RebalanceSpec struct {
	// enabled turns rebalancing off when false; it is on by default.
	// +optional
	Enabled *bool `json:"enabled,omitempty"`

	// tolerancePercent is the band around the mean number of clients per
	// pod within which a pod counts as balanced (at least 2 clients either
	// way), 5 to 100; 20 when unset.
	// +kubebuilder:validation:Minimum=5
	// +kubebuilder:validation:Maximum=100
	// +optional
	TolerancePercent int32 `json:"tolerancePercent,omitempty"`

	// clientsPerSecond bounds how fast clients are moved, over all pods
	// together, 1 to 1000; 20 when unset. Each moved client reconnects and
	// logs in again: keep this within what the pods' login rate allows.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000
	// +optional
	ClientsPerSecond int32 `json:"clientsPerSecond,omitempty"`
}

// MQTTBroker runs one MQTT broker: its pods, Services, configuration and
// protections.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:subresource:scale:specpath=.spec.replicas,statuspath=.status.replicas,selectorpath=.status.selector
// +kubebuilder:resource:shortName=mqb,categories=mqtt
// +kubebuilder:printcolumn:name="Replicas",type=integer,JSONPath=`.spec.replicas`
// +kubebuilder:printcolumn:name="Ready-Pods",type=integer,JSONPath=`.status.readyReplicas`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].reason`
// +kubebuilder:printcolumn:name="Clustered",type=string,JSONPath=`.status.conditions[?(@.type=="Clustered")].status`
// +kubebuilder:printcolumn:name="Users",type=integer,JSONPath=`.status.auth.users`,priority=1
// +kubebuilder:printcolumn:name="Auth-Synced",type=string,JSONPath=`.status.conditions[?(@.type=="AuthSynced")].status`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:validation:XValidation:rule="size(self.metadata.name) <= 52",message="MQTTBroker names are limited to 52 characters so that the names of its pods and Services stay valid"
// +kubebuilder:validation:XValidation:rule="self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')",message="an MQTTBroker name must start with a lowercase letter and hold only lowercase letters, digits and '-' (no '.'): it names the broker's Services, which must be DNS labels"
type MQTTBroker struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is the desired broker.
	// +kubebuilder:default={}
	// +optional
	Spec MQTTBrokerSpec `json:"spec,omitempty"`
	// status is what the operator observed.
	// +optional
	Status MQTTBrokerStatus `json:"status,omitempty"`
}

// MQTTBrokerList is a list of MQTTBrokers.
// +kubebuilder:object:root=true
type MQTTBrokerList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []MQTTBroker `json:"items"`
}
