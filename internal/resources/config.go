package resources

import (
	"fmt"
	"net"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	v1alpha1 "github.com/mqtt-operator/mqtt-operator/api/v1alpha1"
	"github.com/mqtt-operator/mqtt-operator/internal/brokerconfig"
)

// Paths inside the broker container. The three mounts are siblings: a
// volume mounted inside a read-only ConfigMap mount would need a mount point
// the runtime cannot create.
const (
	configDir = "/etc/mqtt/config"
	authDir   = "/etc/mqtt/auth"
	adminDir  = "/etc/mqtt/admin"
	dataDir   = "/var/lib/mqtt"
)

// AdminTokenKey is the key of the admin API token in the broker's admin
// Secret and the name of the file the broker reads it from.
const AdminTokenKey = "token"

// enabledListener is one enabled listener of the spec with its wire protocol.
type enabledListener struct {
	name     string
	protocol string
	port     int32
}

// enabledListeners lists the spec's enabled listeners in a fixed order, so
// rendered objects never reorder between reconciles.
func enabledListeners(b *v1alpha1.MQTTBroker) []enabledListener {
	l := b.Spec.Listeners
	all := []struct {
		on bool
		enabledListener
	}{
		{valueOr(l.TCP.Enabled, true), enabledListener{"mqtt", brokerconfig.ProtocolTCP, int32(l.TCP.Port)}},
		{l.TLS.Enabled, enabledListener{"mqtts", brokerconfig.ProtocolTLS, int32(l.TLS.Port)}},
		{l.WebSocket.Enabled, enabledListener{"ws", brokerconfig.ProtocolWebSocket, int32(l.WebSocket.Port)}},
		{l.SecureWebSocket.Enabled, enabledListener{"wss", brokerconfig.ProtocolSecureWebSocket, int32(l.SecureWebSocket.Port)}},
	}
	var out []enabledListener
	for _, e := range all {
		if e.on {
			out = append(out, e.enabledListener)
		}
	}
	return out
}

// BrokerConfig renders the broker configuration for b, with a cluster
// section when cl is set. It fails only for a spec the CRD schema should
// already have refused.
func BrokerConfig(b *v1alpha1.MQTTBroker, cl *Clustering, opts Options) (*brokerconfig.Config, error) {
	lim := b.Spec.Limits
	expiry := time.Duration(0)
	if lim.SessionExpiry != "" {
		d, err := time.ParseDuration(lim.SessionExpiry)
		if err != nil {
			return nil, fmt.Errorf("limits.sessionExpiry: %w", err)
		}
		expiry = d
	}
	var retainedBytes int64
	if lim.MaxRetainedBytes != "" {
		q, err := resource.ParseQuantity(lim.MaxRetainedBytes)
		if err != nil {
			return nil, fmt.Errorf("limits.maxRetainedBytes: %w", err)
		}
		retainedBytes = q.Value()
	}
	cfg := &brokerconfig.Config{
		Version:        brokerconfig.Version,
		HealthAddress:  net.JoinHostPort("", strconv.Itoa(v1alpha1.HealthPort)),
		AdminAddress:   net.JoinHostPort("", strconv.Itoa(v1alpha1.AdminPort)),
		AllowAnonymous: b.Spec.AllowAnonymous,
		Limits: brokerconfig.Limits{
			MaxConnections:            lim.MaxConnections,
			MaxPacketSize:             lim.MaxPacketSize,
			MaxInflight:               lim.MaxInflight,
			MaxQueuedMessages:         lim.MaxQueuedMessages,
			MaxQueuedBytesPerClient:   lim.MaxQueuedBytesPerClient,
			MaxQueuedBytesTotal:       lim.MaxQueuedBytesTotal,
			MaxQoS:                    valueOr(lim.MaxQoS, 2),
			RetainAvailable:           valueOr(lim.RetainAvailable, true),
			SessionExpirySeconds:      int64(expiry / time.Second),
			MaxKeepaliveSeconds:       lim.MaxKeepalive,
			PublishRatePerClient:      lim.PublishRatePerClient,
			MaxSubscriptionsPerClient: lim.MaxSubscriptionsPerClient,

			MaxPendingConnections:           lim.MaxPendingConnections,
			MaxPendingConnectionsPerAddress: lim.MaxPendingConnectionsPerAddress,
			ConnectRatePerAddress:           lim.ConnectRatePerAddress,
			MaxConnectPacketSize:            lim.MaxConnectPacketSize,

			MaxRetainedMessages: lim.MaxRetainedMessages,
			MaxRetainedBytes:    retainedBytes,
			MaxTopicLength:      lim.MaxTopicLength,
			MaxTopicLevels:      lim.MaxTopicLevels,
			TopicAliasMaximum:   copyOf(lim.TopicAliasMaximum),
		},
		Storage: brokerconfig.Storage{
			Persistent: b.Spec.Storage.Type == v1alpha1.StoragePersistent,
			Durable:    b.Spec.Storage.Type == v1alpha1.StoragePersistent && b.Spec.Storage.Durability == v1alpha1.DurabilityFsync,
			Path:       dataDir,
		},
	}
	for _, l := range enabledListeners(b) {
		bl := brokerconfig.Listener{Name: l.name, Protocol: l.protocol, Address: net.JoinHostPort("", strconv.Itoa(int(l.port)))}
		if l.protocol == brokerconfig.ProtocolWebSocket || l.protocol == brokerconfig.ProtocolSecureWebSocket {
			bl.Path = "/mqtt"
		}
		cfg.Listeners = append(cfg.Listeners, bl)
	}
	if TLSEnabled(b) {
		cfg.TLS = &brokerconfig.TLS{
			CertFile:     tlsDir + "/" + TLSCertKey,
			KeyFile:      tlsDir + "/" + TLSKeyKey,
			ClientCAFile: tlsDir + "/" + TLSClientCAKey,
		}
	}
	if cl != nil {
		cfg.Cluster = clusterConfig(b, cl, opts)
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("rendering broker config: %w", err)
	}
	return cfg, nil
}

// ConfigMap holds the rendered broker configuration the pods mount. The broker
// watches the file, so changes that need no restart apply in place.
func ConfigMap(b *v1alpha1.MQTTBroker, cfg *brokerconfig.Config) (*corev1.ConfigMap, error) {
	data, err := brokerconfig.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	return &corev1.ConfigMap{
		ObjectMeta: objectMeta(b, ConfigMapName(b)),
		Data:       map[string]string{brokerconfig.FileName: string(data)},
	}, nil
}

func valueOr[T any](p *T, def T) T {
	if p == nil {
		return def
	}
	return *p
}

// copyOf is a pointer to a copy of *p, nil for nil: the rendered config
// shares nothing with the object it came from.
func copyOf[T any](p *T) *T {
	if p == nil {
		return nil
	}
	v := *p
	return &v
}
