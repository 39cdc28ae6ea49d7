package brokerconfig

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"path"
	"strconv"
	"strings"
)

// Validate reports every problem in c, joined, or nil. Whatever it accepts
// the broker can start with: a mistake it lets through would surface only
// when the broker binds its ports, or as a panic in net/http.
func (c *Config) Validate() error {
	var errs []error
	if c.Version != Version {
		errs = append(errs, fmt.Errorf("version %q is not supported, want %q", c.Version, Version))
	}
	if len(c.Listeners) == 0 {
		errs = append(errs, errors.New("listeners: at least one is required"))
	}
	// Every port is bound on every address the broker has, so two of them
	// on one port cannot both bind, whatever their hosts.
	ports := map[int]string{}
	usePort := func(where, addr string) {
		port, err := validAddress(addr)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("%s: %w", where, err))
		case port == 0: // a free port each
		case ports[port] != "":
			errs = append(errs, fmt.Errorf("%s: port %d is already used by %s", where, port, ports[port]))
		default:
			ports[port] = where
		}
	}
	usePort("healthAddress", c.HealthAddress)
	usePort("adminAddress", c.AdminAddress)
	names := map[string]string{}
	for i, l := range c.Listeners {
		where := fmt.Sprintf("listeners[%d]", i)
		if err := validListenerName(l.Name); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", where, err))
		} else if other, dup := names[l.Name]; dup {
			errs = append(errs, fmt.Errorf("%s: name %q is already used by %s", where, l.Name, other))
		} else {
			names[l.Name] = where
		}
		switch l.Protocol {
		case ProtocolTCP, ProtocolTLS:
			if l.Path != "" {
				errs = append(errs, fmt.Errorf("%s: path is only for %s and %s listeners, not %s", where, ProtocolWebSocket, ProtocolSecureWebSocket, l.Protocol))
			}
		case ProtocolWebSocket, ProtocolSecureWebSocket:
			if err := ValidateWebSocketPath(l.Path); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", where, err))
			}
		default:
			errs = append(errs, fmt.Errorf("%s: unknown protocol %q, want one of %s, %s, %s, %s", where, l.Protocol,
				ProtocolTCP, ProtocolTLS, ProtocolWebSocket, ProtocolSecureWebSocket))
		}
		if (l.Protocol == ProtocolTLS || l.Protocol == ProtocolSecureWebSocket) && c.TLS == nil {
			errs = append(errs, fmt.Errorf("%s: protocol %s needs tls.certFile and tls.keyFile", where, l.Protocol))
		}
		usePort(where, l.Address)
	}
	if c.TLS != nil && (c.TLS.CertFile == "" || c.TLS.KeyFile == "") {
		errs = append(errs, errors.New("tls: certFile and keyFile are both required"))
	}
	if c.Cluster != nil {
		errs = append(errs, c.Cluster.validate(usePort)...)
	}
	errs = append(errs, c.Limits.validate()...)
	if c.Storage.Path == "" {
		errs = append(errs, errors.New("storage.path is required"))
	}
	if c.Storage.Durable && !c.Storage.Persistent {
		errs = append(errs, errors.New("storage.durable needs storage.persistent"))
	}
	return errors.Join(errs...)
}

// validListenerName applies Kubernetes' rule for port names (IANA service
// names), since the operator names container ports after listeners.
func validListenerName(name string) error {
	bad := len(name) == 0 || len(name) > 15 || name[0] == '-' || name[len(name)-1] == '-' ||
		strings.Contains(name, "--") || !strings.ContainsAny(name, "abcdefghijklmnopqrstuvwxyz")
	for _, r := range name {
		bad = bad || !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-')
	}
	if bad {
		return fmt.Errorf("name %q must be 1-15 lowercase letters, digits and single '-' inside, with at least one letter (a Kubernetes port name)", name)
	}
	return nil
}

// ValidateWebSocketPath reports why p cannot be the HTTP path of a
// WebSocket listener, or nil: it must be a clean absolute path of URL path
// characters, which net/http's ServeMux accepts as a plain path (no method,
// host or {wildcard}) and which a request can reach.
func ValidateWebSocketPath(p string) error {
	switch {
	case p == "":
		return errors.New("path is required for websocket listeners (for example /mqtt)")
	case len(p) > 1024:
		return fmt.Errorf("path is %d bytes, at most 1024 are allowed", len(p))
	case p[0] != '/':
		return fmt.Errorf("path %q must start with '/'", p)
	}
	for _, r := range p {
		// RFC 3986 path characters without '%': a pattern is matched
		// against the unescaped path, so an escape would never match.
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("/-._~!$&'()*+,;=:@", r)) {
			return fmt.Errorf("path %q contains %q; use letters, digits and -._~!$&'()*+,;=:@/", p, r)
		}
	}
	if clean := path.Clean(p); clean != p && clean+"/" != p {
		return fmt.Errorf("path %q is not clean (no empty, '.' or '..' segments): net/http redirects requests for it to %q", p, clean)
	}
	return registersInServeMux(p)
}

// registersInServeMux is the last word on a path: the broker registers it in
// a ServeMux, which panics on a pattern it does not accept.
func registersInServeMux(p string) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("path %q is not a pattern net/http accepts: %v", p, r)
		}
	}()
	http.NewServeMux().Handle(p, http.NotFoundHandler())
	return nil
}

// validAddress checks host:port and returns the port. The host is empty
// (every address), an IP address or a DNS name.
func validAddress(addr string) (int, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return 0, fmt.Errorf("address %q: %w (want host:port, for example :1883)", addr, err)
	}
	n, err := strconv.Atoi(port)
	if err != nil || port == "" || len(port) > 5 || strings.TrimLeft(port, "0123456789") != "" || n > 65535 {
		return 0, fmt.Errorf("address %q: port must be a number 0-65535 (0 picks a free port)", addr)
	}
	if host != "" && net.ParseIP(host) == nil && !validHostName(host) {
		return 0, fmt.Errorf("address %q: host %q is neither an IP address nor a DNS name", addr, host)
	}
	return n, nil
}

func validHostName(h string) bool {
	if len(h) > 253 {
		return false
	}
	labels := strings.Split(strings.TrimSuffix(h, "."), ".")
	if strings.Trim(labels[len(labels)-1], "0123456789") == "" {
		return false // an all-numeric last label: a mistyped IP address such as 256.1.1.1
	}
	for _, label := range labels {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
				return false
			}
		}
	}
	return true
}

func (l *Limits) validate() []error {
	var errs []error
	check := func(name string, v, lo, hi int64) {
		if v < lo || v > hi {
			errs = append(errs, fmt.Errorf("limits.%s: %d is outside [%d, %d]", name, v, lo, hi))
		}
	}
	check("maxConnections", int64(l.MaxConnections), 1, 1_000_000)
	check("maxPacketSize", int64(l.MaxPacketSize), 1024, 268_435_455)
	check("maxInflight", int64(l.MaxInflight), 1, 65535)
	// Packet IDs are 16 bits: a client cannot hold more distinct messages.
	check("maxQueuedMessages", int64(l.MaxQueuedMessages), 0, 65535)
	if l.MaxQueuedBytesPerClient != 0 {
		check("maxQueuedBytesPerClient", l.MaxQueuedBytesPerClient, 64<<10, 1<<40)
	}
	if l.MaxQueuedBytesTotal != 0 {
		check("maxQueuedBytesTotal", l.MaxQueuedBytesTotal, 1<<20, 1<<44)
	}
	check("maxQoS", int64(l.MaxQoS), 0, 2)
	check("sessionExpirySeconds", l.SessionExpirySeconds, 0, 720*3600)
	check("maxKeepaliveSeconds", int64(l.MaxKeepaliveSeconds), 10, 65535)
	check("publishRatePerClient", int64(l.PublishRatePerClient), 0, 1_000_000)
	check("maxSubscriptionsPerClient", int64(l.MaxSubscriptionsPerClient), 1, 100_000)
	check("maxPendingConnections", int64(l.MaxPendingConnections), 0, 1_000_000)
	check("maxPendingConnectionsPerAddress", int64(l.MaxPendingConnectionsPerAddress), 0, 1_000_000)
	check("connectRatePerAddress", int64(l.ConnectRatePerAddress), 0, 1_000_000)
	check("maxRetainedMessages", int64(l.MaxRetainedMessages), 0, 10_000_000)
	check("maxRetainedBytes", l.MaxRetainedBytes, 0, 64<<30)
	check("maxTopicLength", int64(l.MaxTopicLength), 0, 65535)
	check("maxTopicLevels", int64(l.MaxTopicLevels), 0, 1000)
	check("topicAliasMaximum", int64(l.TopicAliases()), 0, MaxTopicAliasMaximum)
	if l.MaxConnectPacketSize != 0 {
		check("maxConnectPacketSize", int64(l.MaxConnectPacketSize), 256, 1<<20)
	}
	return errs
}
