// Package brokerconfig is the contract between the operator and the broker: the
// broker configuration as a plain versioned struct. The operator renders it into
// the broker's ConfigMap; the broker parses and validates it before applying it.
// Both sides import this package, so what the operator renders is what the
// broker accepts.
package brokerconfig

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"

	"sigs.k8s.io/yaml"
)

// Version of the configuration format. The broker refuses any other.
const Version = "broker.mqtt-operator.io/config-v1"

// FileName is the key of the configuration in the broker's ConfigMap and the
// name of the file the broker reads.
const FileName = "broker.yaml"

// Listener protocols.
const (
	ProtocolTCP             = "tcp"
	ProtocolTLS             = "tls"
	ProtocolWebSocket       = "websocket"
	ProtocolSecureWebSocket = "secureWebsocket"
)

// Config is everything the broker needs to run, except secrets. Parse gives
// every field a file leaves out its default (defaults.go); Validate and
// Marshal, for configurations built in Go, take every field as it is.
type Config struct {
	// Version must equal the package's Version.
	Version string `json:"version"`
	// Listeners are the MQTT endpoints, in a stable order. Default: one
	// tcp listener "mqtt" on :1883.
	Listeners []Listener `json:"listeners"`
	// HealthAddress serves /healthz, /readyz and /metrics. Default :9090.
	HealthAddress string `json:"healthAddress"`
	// AdminAddress serves the authenticated admin API. Default
	// 127.0.0.1:9091.
	AdminAddress string `json:"adminAddress"`
	// AllowAnonymous lets clients connect without a username.
	AllowAnonymous bool `json:"allowAnonymous"`
	// Limits bound what clients may ask; they reload in place.
	Limits Limits `json:"limits"`
	// Storage says where and whether state persists.
	Storage Storage `json:"storage"`
	// TLS is the server certificate of the tls and secureWebsocket
	// listeners. The broker reloads the files in place when they change.
	TLS *TLS `json:"tls,omitempty"`
	// Cluster, when set, joins the broker to the other pods of its
	// MQTTBroker (cluster.go). Absent for a single pod.
	Cluster *Cluster `json:"cluster,omitempty"`
}

// TLS names the PEM files of the broker's server certificate.
type TLS struct {
	// CertFile holds the certificate chain, leaf first.
	CertFile string `json:"certFile"`
	// KeyFile holds the private key.
	KeyFile string `json:"keyFile"`
	// ClientCAFile, when set, holds the CA certificates (PEM) a client
	// certificate must chain to. Clients may then log in with a
	// certificate instead of a password; those that present none still
	// can with a password. Reloaded in place like the pair.
	ClientCAFile string `json:"clientCAFile,omitempty"`
}

// Listener is one MQTT endpoint.
type Listener struct {
	// Name is unique among listeners and names the container port.
	Name string `json:"name"`
	// Protocol is one of the Protocol constants.
	Protocol string `json:"protocol"`
	// Address is host:port; an empty host listens on every address.
	Address string `json:"address"`
	// Path is the HTTP path of WebSocket listeners.
	Path string `json:"path,omitempty"`
}

// Limits bound what clients may ask of the broker. Zero means "no limit" only
// where the field says so.
type Limits struct {
	MaxConnections int32 `json:"maxConnections"`
	MaxPacketSize  int32 `json:"maxPacketSize"`
	MaxInflight    int32 `json:"maxInflight"`
	// MaxQueuedMessages bounds the QoS 1/2 messages held for one client,
	// sent and unacknowledged or waiting (also while a persistent session is
	// offline); beyond it new messages for that client are dropped and
	// counted. 0 means DefaultMaxQueuedMessages.
	MaxQueuedMessages int32 `json:"maxQueuedMessages,omitempty"`
	// MaxQueuedBytesPerClient bounds the bytes of messages held for one
	// client (waiting to be written, or unacknowledged, or queued while a
	// persistent session is offline). A client that stopped reading and is
	// over it is disconnected; an offline session over it drops new
	// messages. 0 means DefaultMaxQueuedBytesPerClient.
	MaxQueuedBytesPerClient int64 `json:"maxQueuedBytesPerClient,omitempty"`
	// MaxQueuedBytesTotal bounds the same bytes for all clients of the
	// broker together. 0 derives it from the container's memory limit (see
	// QueuedBytesTotal).
	MaxQueuedBytesTotal int64 `json:"maxQueuedBytesTotal,omitempty"`
	MaxQoS              int32 `json:"maxQoS"`
	// RetainAvailable lets clients publish retained messages.
	RetainAvailable      bool  `json:"retainAvailable"`
	SessionExpirySeconds int64 `json:"sessionExpirySeconds"`
	MaxKeepaliveSeconds  int32 `json:"maxKeepaliveSeconds"`
	// PublishRatePerClient is PUBLISH packets per second per client; 0 = no limit.
	PublishRatePerClient      int32 `json:"publishRatePerClient"`
	MaxSubscriptionsPerClient int32 `json:"maxSubscriptionsPerClient"`

	// Connections that have not logged in have a budget of their own, so
	// they cannot lock logged-in clients out (they reload in place).
	// MaxPendingConnections bounds them; 0 means a quarter of
	// maxConnections, at least 64 and at most 10,000. When it is full, the
	// oldest one that has not sent a whole CONNECT is closed for a new one.
	MaxPendingConnections int32 `json:"maxPendingConnections,omitempty"`
	// MaxPendingConnectionsPerAddress bounds them per source address and
	// ConnectRatePerAddress bounds new connections per second per source
	// address; 0 = no limit (the default: behind a Service without
	// externalTrafficPolicy: Local, a node's devices share one address).
	MaxPendingConnectionsPerAddress int32 `json:"maxPendingConnectionsPerAddress,omitempty"`
	ConnectRatePerAddress           int32 `json:"connectRatePerAddress,omitempty"`
	// MaxConnectPacketSize bounds the CONNECT packet, which arrives before
	// the client proved anything; 0 means 16 KiB. Never above maxPacketSize.
	MaxConnectPacketSize int32 `json:"maxConnectPacketSize,omitempty"`

	// MaxRetainedMessages and MaxRetainedBytes (topics and payloads) bound
	// the retained messages the broker keeps; past them a retained PUBLISH
	// is delivered but not kept. 0 means DefaultMaxRetainedMessages and
	// DefaultMaxRetainedBytes.
	MaxRetainedMessages int32 `json:"maxRetainedMessages,omitempty"`
	MaxRetainedBytes    int64 `json:"maxRetainedBytes,omitempty"`
	// MaxTopicLength (bytes) and MaxTopicLevels bound topic names and
	// filters; 0 means DefaultMaxTopicLength and DefaultMaxTopicLevels.
	MaxTopicLength int32 `json:"maxTopicLength,omitempty"`
	MaxTopicLevels int32 `json:"maxTopicLevels,omitempty"`
	// TopicAliasMaximum is the most topic aliases of one MQTT 5
	// connection in each direction: advertised in CONNACK for the client's
	// own, and the most the broker uses for what it sends (never more than
	// the client advertised). Each holds one topic name for the life of the
	// connection. Unset means DefaultTopicAliasMaximum; 0 turns topic
	// aliases off. Applies to connections made after a reload.
	TopicAliasMaximum *int32 `json:"topicAliasMaximum,omitempty"`
}

// DefaultTopicAliasMaximum is the topic aliases per connection and
// direction when none is set, mosquitto's default.
const DefaultTopicAliasMaximum = 10

// MaxTopicAliasMaximum bounds TopicAliasMaximum: with topics of up to
// maxTopicLength bytes (4 KiB by default), a connection's aliases hold at
// most about 8 MiB.
const MaxTopicAliasMaximum = 1000

// TopicAliases is TopicAliasMaximum with the default applied.
func (l *Limits) TopicAliases() int32 {
	if l.TopicAliasMaximum == nil {
		return DefaultTopicAliasMaximum
	}
	return *l.TopicAliasMaximum
}

// Defaults of the limits whose zero value means "the default".
const (
	DefaultMaxRetainedMessages = 100_000
	DefaultMaxRetainedBytes    = 64 << 20
	DefaultMaxTopicLength      = 4096
	DefaultMaxTopicLevels      = 32
)

// RetainedMessages, RetainedBytes, TopicLength and TopicLevels are the
// limits with their defaults applied.
func (l *Limits) RetainedMessages() int {
	return orDefault(int(l.MaxRetainedMessages), DefaultMaxRetainedMessages)
}
func (l *Limits) RetainedBytes() int {
	return orDefault(int(l.MaxRetainedBytes), DefaultMaxRetainedBytes)
}
func (l *Limits) TopicLength() int { return orDefault(int(l.MaxTopicLength), DefaultMaxTopicLength) }
func (l *Limits) TopicLevels() int { return orDefault(int(l.MaxTopicLevels), DefaultMaxTopicLevels) }

func orDefault(v, def int) int {
	if v == 0 {
		return def
	}
	return v
}

// Storage says where broker state lives.
type Storage struct {
	// Persistent means Path is on a volume that outlives the pod.
	Persistent bool `json:"persistent"`
	// Path is the directory the broker keeps its state in.
	Path string `json:"path"`
	// Durable fsyncs every QoS 1/2 message before acknowledging it, so an
	// acknowledged message survives the node losing power. Only with
	// Persistent.
	Durable bool `json:"durable,omitempty"`
}

// startOnly are the limits mochi reads into its capabilities at start and
// never again; changing them needs a restart.
func (l *Limits) startOnly() [5]int64 {
	retain := int64(0)
	if l.RetainAvailable {
		retain = 1
	}
	return [5]int64{int64(l.MaxQoS), retain, int64(l.MaxInflight), l.SessionExpirySeconds, int64(l.QueuedMessages())}
}

// DefaultMaxQueuedMessages is the per-client queue bound when none is set,
// the same as mosquitto's max_queued_messages default.
const DefaultMaxQueuedMessages = 1000

// QueuedMessages is MaxQueuedMessages with the default applied.
func (l *Limits) QueuedMessages() int32 {
	if l.MaxQueuedMessages == 0 {
		return DefaultMaxQueuedMessages
	}
	return l.MaxQueuedMessages
}

// DefaultMaxQueuedBytesPerClient is the per-client byte bound when none is
// set: sixteen messages of the default maximum packet size.
const DefaultMaxQueuedBytesPerClient = 16 << 20

// QueuedBytesPerClient is MaxQueuedBytesPerClient with the default applied.
func (l *Limits) QueuedBytesPerClient() int64 {
	if l.MaxQueuedBytesPerClient == 0 {
		return DefaultMaxQueuedBytesPerClient
	}
	return l.MaxQueuedBytesPerClient
}

// DefaultMaxQueuedBytesTotal is the broker-wide byte bound when none is set
// and the memory limit is not known.
const DefaultMaxQueuedBytesTotal = 512 << 20

// QueuedBytesTotal is MaxQueuedBytesTotal, or when that is 0, a quarter of
// memoryLimit (the container's limit in bytes; 0 when not known, which gives
// DefaultMaxQueuedBytesTotal). The rest of the limit is for the garbage the
// collector has not yet freed (at the broker's GOGC of 200 the heap grows to
// three times what is live before a collection; mochi copies every message
// for every subscriber, also those it then refuses), the broker's own
// state, and what mochi holds that is not counted (connections, read
// buffers, subscriptions, retained messages).
func (l *Limits) QueuedBytesTotal(memoryLimit int64) int64 {
	switch {
	case l.MaxQueuedBytesTotal != 0:
		return l.MaxQueuedBytesTotal
	case memoryLimit > 0:
		return memoryLimit / 4
	}
	return DefaultMaxQueuedBytesTotal
}

// Marshal renders c as the YAML the broker reads. It refuses an invalid c, so
// the operator can never write a configuration the broker would reject.
func Marshal(c *Config) ([]byte, error) {
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("invalid broker config: %w", err)
	}
	return yaml.Marshal(c)
}

// Parse reads and validates a configuration. A field the file leaves out
// takes its default (Defaults); one it sets, even to zero or false, keeps
// what it says. Unknown fields are errors: a typo must not silently fall
// back to a default.
func Parse(data []byte) (*Config, error) {
	c := Defaults()
	// Decoding a list reuses the elements already there, field by field:
	// the default listener must not lend its address to the file's first.
	c.Listeners = nil
	c.Version = ""
	if err := yaml.UnmarshalStrict(data, &c); err != nil {
		return nil, fmt.Errorf("parsing broker config: %w", err)
	}
	if c.Listeners == nil {
		c.Listeners = []Listener{DefaultListener()}
	}
	if c.Cluster != nil && c.Cluster.Address == "" {
		c.Cluster.Address = DefaultClusterAddress
	}
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("invalid broker config: %w", err)
	}
	return &c, nil
}

// RestartHash identifies the parts of c the broker cannot change while it
// runs: listeners, service addresses, storage, TLS file paths, the limits
// mochi fixes when it starts (maxQoS, retain, maxInflight, sessionExpiry),
// and the cluster's identity and port (not its peers: scaling the broker
// changes them, and reloads them in place).
// Pods are rolled when, and only when, it changes. Everything else reloads
// in place: maxConnections, maxPacketSize, maxKeepalive, the per-client
// publish rate and subscription quota, and anonymous access.
func (c *Config) RestartHash() string {
	restartOnly := struct {
		Listeners     []Listener
		HealthAddress string
		AdminAddress  string
		Storage       Storage
		TLS           *TLS     `json:",omitempty"` // absent when nil: adding TLS support rolled no existing pod
		StartLimits   [5]int64 `json:",omitempty"`
		Cluster       *Cluster `json:",omitempty"` // absent when nil, as TLS
	}{c.Listeners, c.HealthAddress, c.AdminAddress, c.Storage, c.TLS, c.Limits.startOnly(), c.Cluster.restartOnly()}
	data, _ := json.Marshal(restartOnly) // plain structs of strings and bools always marshal
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:8])
}
