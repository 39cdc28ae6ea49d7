// Package broker assembles the MQTT broker: mochi's server behind the guard's
// listeners, the policy hook, optional persistence, and the reload paths for
// configuration and auth bundle.
package broker

import (
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/mqtt-operator/mqtt-operator/broker-image/internal/certs"
	"github.com/mqtt-operator/mqtt-operator/broker-image/internal/cluster"
	"github.com/mqtt-operator/mqtt-operator/broker-image/internal/contain"
	"github.com/mqtt-operator/mqtt-operator/broker-image/internal/flow"
	"github.com/mqtt-operator/mqtt-operator/broker-image/internal/guard"
	"github.com/mqtt-operator/mqtt-operator/broker-image/internal/mochilog"
	"github.com/mqtt-operator/mqtt-operator/broker-image/internal/policy"
	"github.com/mqtt-operator/mqtt-operator/broker-image/internal/session"
	"github.com/mqtt-operator/mqtt-operator/broker-image/internal/store"
	"github.com/mqtt-operator/mqtt-operator/internal/brokerconfig"
)

// ConnectTimeout is how long a new connection has to send CONNECT. Tests
// shorten it before New.
var ConnectTimeout = 10 * time.Second

// ClientWritesPending is the length of each client's queue of pending
// writes. When it is nearly full, flow control holds the publisher back
// (package flow); past that mochi drops the message (a QoS 1/2 one stays
// queued, but is only resent when the client reconnects). mochi's default,
// 8,192, is a 64 KiB buffer per connection that the Go runtime counts as
// heap in use from the start, and against its memory limit, though no page
// of it is touched while idle: 10,000 idle clients had about 700 MiB of heap
// in use, close to the Go memory limit of a pod with 1 GiB, where the
// collector runs flat out. 1,024 (18 KiB of heap per idle client) lost
// nothing in make bench-broker: the publishers wait a little more often.
// Tests shrink it before New.
var ClientWritesPending = 1024

// Broker is one running MQTT broker.
type Broker struct {
	server *mqtt.Server
	guard  *guard.Guard
	Policy *policy.Hook
	store  *store.Hook  // nil without persistent storage
	certs  *certs.Store // nil without TLS listeners
	// cluster is this pod's member of a clustered broker; nil on a single
	// pod, which then runs no NATS server and no cluster hook.
	cluster *cluster.Node
	log     *slog.Logger
	// panics counts the panics recovered in our hooks where mochi calls
	// them from goroutines nobody recovers (see package contain).
	panics *contain.Recoverer

	mu         sync.Mutex // serialises reloads
	cfg        *brokerconfig.Config
	bundle     *brokerconfig.AuthBundle
	generation int64

	listeners []listeners.Listener
	started   atomic.Bool
	draining  atomic.Bool
	// shedding is set while a Shed moves clients elsewhere (shed.go);
	// shedTotal counts the clients it moved.
	shedding  atomic.Bool
	shedTotal atomic.Uint64
	// admitting is held (read) by a login from the drain check to the end
	// of its admission, which may pull its session from another pod; a
	// drain takes it (write) to begin, so no login it does not see is
	// still on its way in.
	admitting sync.RWMutex
	closeOnce sync.Once

	reloadOK, reloadFailed, reloadStale atomic.Uint64

	// BundleCache, when set, is the file the bundle in force is copied to
	// (see LoadCachedBundle). Set it before applying the first bundle.
	BundleCache string
}

// New builds a broker from a validated configuration. Nothing listens until
// Start. A panic while building it (a bug: the configuration validated) is
// returned as an error, so no configuration takes the process down with a
// stack trace instead of a message.
func New(cfg *brokerconfig.Config, log *slog.Logger) (b *Broker, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	defer recoverSetup("building the broker", &err)
	return build(cfg, log)
}

// recoverSetup turns a panic during setup into an error in *err.
func recoverSetup(doing string, err *error) {
	if r := recover(); r != nil {
		*err = fmt.Errorf("%s: %v (a broker bug: please report it with the configuration)", doing, r)
	}
}

func build(cfg *brokerconfig.Config, log *slog.Logger) (*Broker, error) {
	caps := capabilities(cfg)
	server := mqtt.New(&mqtt.Options{
		Capabilities: caps,
		// While a subscriber's queue is not empty mochi collects its
		// messages into one write of up to this size (default 2 KiB, a
		// system call per ~25 small messages). The buffer exists only
		// while there is a backlog.
		ClientNetWriteBufferSize: 16 << 10,
		// mochi logs whole packets (passwords, payloads) at WARN and DEBUG:
		// its handler keeps only summaries of them.
		Logger: slog.New(mochilog.New(log.Handler())).With("component", "mochi"),
	})
	b := &Broker{
		server: server,
		guard:  &guard.Guard{Limits: guard.NewLimits(uint32(cfg.Limits.MaxPacketSize), int64(cfg.Limits.MaxConnections), ConnectTimeout), Log: log},
		log:    log,
		cfg:    cfg,
		panics: &contain.Recoverer{Log: log},
	}
	// Every hook of ours goes in through contained: mochi calls hooks from
	// clients' write loops and its event loop, where a panic would end the
	// process.
	contained := func(h mqtt.Hook) mqtt.Hook { return contain.Hook(h, b.panics) }
	// Close a listener's clients without mochi's Clients.GetByListener, which
	// deadlocks (see guard.Guard.CloseClients).
	b.guard.CloseClients = func(listener string) {
		for _, cl := range server.Clients.GetAll() {
			if cl.Net.Listener == listener && !cl.Closed() {
				_ = server.DisconnectClient(cl, packets.ErrServerShuttingDown)
			}
		}
	}
	b.Policy = policy.New(server, log)
	b.Policy.Flow = flow.New(int(caps.MaximumInflight))
	b.Policy.LoggedIn = b.guard.LoggedIn
	b.Policy.Full = func() bool { return atomic.LoadInt64(&server.Info.ClientsConnected) >= b.guard.Limits.MaxConnections() }
	if !flow.Available() {
		log.Warn("this build of mochi hides its per-client write queue: publishers are not held back for full subscribers, full queues drop messages")
	}
	if err := server.AddHook(contained(b.Policy), nil); err != nil {
		return nil, fmt.Errorf("adding policy hook: %w", err)
	}
	if err := server.AddHook(contained(new(ackHook)), nil); err != nil {
		return nil, fmt.Errorf("adding acknowledgement hook: %w", err)
	}
	if err := server.AddHook(contained(b.Policy.WillCheck()), nil); err != nil {
		return nil, fmt.Errorf("adding will check hook: %w", err)
	}
	if err := server.AddHook(contained(session.NewOrderHook(server)), nil); err != nil {
		return nil, fmt.Errorf("adding session order hook: %w", err)
	}
	if cfg.Storage.Persistent {
		st, err := store.Open(store.Options{Path: filepath.Join(cfg.Storage.Path, "broker.db"), Durable: cfg.Storage.Durable, Log: log, Panics: b.panics}, server)
		if err != nil {
			return nil, err
		}
		if err := server.AddHook(contained(st), nil); err != nil {
			_ = st.Stop()
			return nil, fmt.Errorf("adding store hook: %w", err)
		}
		b.store = st
		b.Policy.SessionDeleted = st.OnClientExpired
	}
	if cfg.Cluster != nil {
		// Last: it forwards only what every other hook let through, and a
		// QoS 1/2 message's acknowledgement waits for the other pods.
		node, err := cluster.New(cluster.Options{Config: cfg.Cluster, MaxPayload: int(cfg.Limits.MaxPacketSize), Server: server, Log: log})
		if err != nil {
			return nil, err
		}
		if err := server.AddHook(contained(node.Hook()), nil); err != nil {
			return nil, fmt.Errorf("adding cluster hook: %w", err)
		}
		b.cluster = node
		node.Sessions = b.movedSessionHooks()
		node.HoldPuback = guard.HoldPuback
		b.Policy.CountElsewhere = node.UserConnections
	}
	b.Policy.Admit = b.admit
	if cfg.TLS != nil {
		certStore, err := certs.Load(cfg.TLS.CertFile, cfg.TLS.KeyFile, cfg.TLS.ClientCAFile)
		if err != nil {
			return nil, err
		}
		b.certs = certStore
	}
	for _, l := range cfg.Listeners {
		var ln listeners.Listener
		switch l.Protocol {
		case brokerconfig.ProtocolTCP:
			ln = b.guard.NewTCP(l.Name, l.Address, nil)
		case brokerconfig.ProtocolTLS:
			ln = b.guard.NewTCP(l.Name, l.Address, b.certs.ServerConfig())
		case brokerconfig.ProtocolWebSocket:
			ln = b.guard.NewWebSocket(l.Name, l.Address, l.Path, nil)
		case brokerconfig.ProtocolSecureWebSocket:
			ln = b.guard.NewWebSocket(l.Name, l.Address, l.Path, b.certs.ServerConfig())
		}
		b.listeners = append(b.listeners, ln)
	}
	b.applyQuotas(cfg)
	return b, nil
}

// Start binds every listener and starts serving. A port that cannot be bound
// fails Start.
// A panic while starting is returned as an error too.
func (b *Broker) Start() (err error) {
	defer recoverSetup("starting the broker", &err)
	for _, l := range b.listeners {
		if err := b.server.AddListener(l); err != nil {
			return err // names the listener
		}
	}
	if b.cluster != nil {
		if err := b.cluster.Start(); err != nil {
			return err
		}
	}
	if err := b.server.Serve(); err != nil {
		return fmt.Errorf("starting MQTT server: %w", err)
	}
	if b.cluster != nil {
		b.cluster.SyncSubscriptions() // sessions restored from the store
	}
	if b.store != nil {
		if n := b.Policy.DeleteOrphanedSessions(); n > 0 {
			b.log.Info("deleted stored sessions of users that no longer exist", "sessions", n)
		}
		b.countRestored()
		b.Policy.RecountRetained()
		if _, err := b.store.ReplayPending(b.server); err != nil {
			return err
		}
	}
	b.started.Store(true)
	return nil
}

// countRestored sets mochi's subscription and retained gauges from the state
// it loaded from the store; mochi counts only what arrives while it runs, so
// the metrics would read 0 after every restart.
func (b *Broker) countRestored() {
	var subs int64
	for _, cl := range b.server.Clients.GetAll() {
		subs += int64(cl.State.Subscriptions.Len())
	}
	atomic.StoreInt64(&b.server.Info.Subscriptions, subs)
	atomic.StoreInt64(&b.server.Info.Retained, int64(b.server.Topics.Retained.Len()))
}

// ListenerAddress returns the bound address of the named listener.
func (b *Broker) ListenerAddress(name string) string {
	for _, l := range b.listeners {
		if l.ID() == name {
			return l.Address()
		}
	}
	return ""
}

// Ready reports whether the broker should receive traffic: listening, an auth
// bundle in force, and not draining.
func (b *Broker) Ready() error {
	switch {
	case !b.started.Load():
		return errors.New("listeners not started")
	case b.Policy.Current() == nil:
		return errors.New("no auth bundle loaded")
	case b.draining.Load():
		return errors.New("draining")
	case b.cluster != nil:
		return b.cluster.Ready()
	}
	return nil
}

// ClusterStatus is this pod's view of the cluster; false on a single pod.
func (b *Broker) ClusterStatus() (brokerconfig.ClusterStatus, bool) {
	if b.cluster == nil {
		return brokerconfig.ClusterStatus{}, false
	}
	st := b.cluster.Status()
	st.Clients, st.Draining, st.Shedding = b.Clients(), b.draining.Load(), b.shedding.Load()
	return st, true
}

// Cluster is this pod's cluster member, nil on a single pod (for tests and
// metrics).
func (b *Broker) Cluster() *cluster.Node { return b.cluster }

// Revision is the auth bundle revision in force ("" before the first).
func (b *Broker) Revision() string {
	if s := b.Policy.Current(); s != nil {
		return s.Revision
	}
	return ""
}

// ReloadCertificate reads the TLS certificate files and the client CA file
// again. New handshakes use the new pair and CAs; established connections are
// untouched. An invalid pair or CA file is refused and the one in use stays.
func (b *Broker) ReloadCertificate() error {
	if b.certs == nil {
		return nil
	}
	changed, err := b.certs.Reload()
	if err != nil {
		b.log.Error("refused new TLS files; keeping the ones in use", "error", err.Error(),
			"inUseExpires", b.certs.NotAfter().UTC().Format(time.RFC3339))
	}
	if changed {
		// Also after a partial refusal: the file that was valid is in use.
		b.log.Info("TLS files reloaded", "expires", b.certs.NotAfter().UTC().Format(time.RFC3339))
	}
	return err
}

// CertificateFiles are the TLS files to watch (the pair and the client CA
// file); empty without TLS.
func (b *Broker) CertificateFiles() []string {
	if b.certs == nil {
		return nil
	}
	return b.certs.Files()
}

// Server exposes mochi's server, for tests and metrics.
func (b *Broker) Server() *mqtt.Server { return b.server }

// admit refuses a login that completes while the broker drains: the
// client list the drain works through was taken when it began, so such a
// client would be cut off by the final close, not sent elsewhere, and a
// persistent session it brought here (moved from another pod) would go
// with the pod. MQTT 5 clients get 0x9C (use another server), MQTT 3.1.1
// ones 0x03 (server unavailable); both try again, on another pod. Then a
// clustered broker takes the client ID over on the other pods.
func (b *Broker) admit(cl *mqtt.Client, username string) packets.Code {
	b.admitting.RLock()
	defer b.admitting.RUnlock()
	if b.draining.Load() {
		if cl.Properties.ProtocolVersion == 5 {
			return packets.ErrUseAnotherServer
		}
		return packets.ErrServerUnavailable
	}
	if b.cluster != nil {
		return b.cluster.Admit(cl, username)
	}
	return packets.CodeSuccess
}

// movedSessionHooks tells flow control and the durable store about sessions
// that move between pods (cluster/move.go): mochi calls no hook for them.
func (b *Broker) movedSessionHooks() cluster.SessionHooks {
	return cluster.SessionHooks{
		Imported: func(cl *mqtt.Client, subs []packets.Subscription, queued []packets.Packet) {
			if b.store == nil {
				return
			}
			if len(subs) > 0 {
				codes := make([]byte, len(subs))
				for i, sub := range subs {
					codes[i] = sub.Qos
				}
				b.store.OnSubscribed(cl, packets.Packet{Filters: subs}, codes)
			}
			for _, pk := range queued {
				b.store.OnQosPublish(cl, pk, 0, 0)
			}
		},
		TakenOver: b.Policy.TakenOver,
		CountUser: b.Policy.UserConnections,
		Gone: func(cl *mqtt.Client) {
			b.Policy.OnClientExpired(cl)
			if b.store != nil {
				b.store.OnClientExpired(cl)
			}
		},
	}
}
