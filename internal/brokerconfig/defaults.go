package brokerconfig

// Defaults of the fields a broker.yaml may leave out. Parse fills in what a
// file does not say, so a file of just the version runs a broker; the
// operator still writes every field. The limits are the MQTTBroker API's
// defaults, so a hand-written file behaves like an operator-managed broker.
const (
	// DefaultListenerAddress is the one listener's address when the file
	// has no listeners: plain MQTT on every address (logins still need a
	// password unless allowAnonymous).
	DefaultListenerAddress = ":1883"
	// DefaultHealthAddress: probes and Prometheus must reach it from
	// outside the pod; it serves no secret and changes nothing.
	DefaultHealthAddress = ":9090"
	// DefaultAdminAddress is loopback only: the admin API replaces who may
	// log in, so it is reachable from elsewhere only when a file says so
	// (the operator's does). It is off anyway without a token file.
	DefaultAdminAddress = "127.0.0.1:9091"
	// DefaultStoragePath is where pods mount the broker's volume.
	DefaultStoragePath = "/var/lib/mqtt"

	DefaultMaxConnections            = 10_000
	DefaultMaxPacketSize             = 1 << 20
	DefaultMaxInflight               = 64
	DefaultMaxQoS                    = 2
	DefaultSessionExpirySeconds      = 2 * 3600
	DefaultMaxKeepaliveSeconds       = 300
	DefaultMaxSubscriptionsPerClient = 100
)

// DefaultListener is the listener of a file that names none.
func DefaultListener() Listener {
	return Listener{Name: "mqtt", Protocol: ProtocolTCP, Address: DefaultListenerAddress}
}

// Defaults is the configuration a file that says nothing but its version
// stands for. Limits whose zero value already means a default (see Limits)
// stay zero.
func Defaults() Config {
	return Config{
		Version:       Version,
		Listeners:     []Listener{DefaultListener()},
		HealthAddress: DefaultHealthAddress,
		AdminAddress:  DefaultAdminAddress,
		Limits: Limits{
			MaxConnections:            DefaultMaxConnections,
			MaxPacketSize:             DefaultMaxPacketSize,
			MaxInflight:               DefaultMaxInflight,
			MaxQoS:                    DefaultMaxQoS,
			RetainAvailable:           true,
			SessionExpirySeconds:      DefaultSessionExpirySeconds,
			MaxKeepaliveSeconds:       DefaultMaxKeepaliveSeconds,
			MaxSubscriptionsPerClient: DefaultMaxSubscriptionsPerClient,
		},
		Storage: Storage{Path: DefaultStoragePath},
	}
}
