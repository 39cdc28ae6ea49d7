// Package cluster makes a broker pod one member of a clustered MQTTBroker:
// an embedded nats-server routes to the other pods, and mochi hooks bridge
// MQTT publishes and subscriptions to NATS subjects (see bridge.go). A
// broker without a cluster section never builds any of it.
package cluster

import (
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/mqtt-operator/mqtt-operator/internal/brokerconfig"
)

const (
	// maxControlLine fits a 65,535-byte MQTT topic escaped to three times
	// its length, with prefix and reply subject (pitfall 4: nats-server's
	// default of 4 KiB closed the bridge's connection for good on one long
	// topic).
	maxControlLine = 1 << 20
	// AckTimeout is the backstop for a QoS 1/2 forward: a pod that has not
	// acknowledged by then is taken as not having the message. A pod whose
	// route closes fails its pending acknowledgements at once.
	AckTimeout  = time.Second
	statusEvery = 50 * time.Millisecond
)

// handoverQueue is how many messages nats.go may hand over to the bridge
// before pump moves them to the inbox (deliver.go), which bounds them in
// bytes. nats.go reads a burst of a whole socket buffer at a time (hundreds
// of small messages) before pump runs again on a busy machine: 256 places
// overflowed with 64-byte messages. The channel holds pointers (512 KiB);
// the messages in it are only those of the last few milliseconds, which
// the embedded server's own limit on what it buffers for the connection
// bounds too.
const handoverQueue = 65536

// Options configure a Node.
type Options struct {
	Config *brokerconfig.Cluster
	// MaxPayload is the largest MQTT packet the broker takes; NATS payloads
	// are allowed that plus room for headers.
	MaxPayload int
	Server     *mqtt.Server
	Log        *slog.Logger
}

// Node is this pod's member of the cluster: the embedded server, the
// in-process connection, and the bridge.
type Node struct {
	cfg     *brokerconfig.Cluster
	name    string // cluster name
	node    string // this pod's node name
	nodeTok string // node as a subject token
	srv     *server.Server
	sopts   *server.Options
	log     *slog.Logger
	mq      *mqtt.Server
	token   string

	connMu sync.Mutex
	nc     *nats.Conn // replaced when closed (pitfall 4)

	peersMu sync.Mutex
	peers   []string // configured peer addresses

	known      atomic.Pointer[[]string] // node tokens of the other pods seen so far
	routeCount atomic.Int64             // route connections when known was last completed
	addMu      sync.Mutex

	bridge  *bridge
	acks    *ackTable
	joined  atomic.Bool  // had routes to every peer once, or waited JoinGrace
	started atomic.Int64 // when Start began, Unix nanoseconds
	sess    sessions
	// retained holds the stamps of retained messages (retained.go).
	retained retainedStamps
	moves    moves // sessions sent to another pod (move.go)
	// draining: this pod adopts no sessions (handover.go); adopting runs
	// the adoptions others ask for.
	draining atomic.Bool
	adopting adoptions
	// outboxes hold messages for unreachable pods (partition.go).
	outboxes outboxes
	// sending is read-held by a send from choosing its pods until the
	// message is sent, write-held for a moment before a barrier ping is
	// answered (publishing.go).
	sending sync.RWMutex
	// Sessions lets the broker's other hooks follow sessions that move
	// between pods (move.go); set before Start.
	Sessions SessionHooks
	// HoldPuback has a client's connection take the next PUBACK mochi
	// writes for a packet ID out of the stream (pipeline.go; the guard's
	// HoldPuback); set before Start. Without it, QoS 1 messages wait for
	// the other pods in OnPublish.
	HoldPuback func(nc net.Conn, packetID uint16) (taken <-chan struct{}, ok bool)

	stop chan struct{}
	done chan struct{}

	Counters    Counters
	dropLogged  atomic.Int64 // unix seconds of the last slow-consumer warning
	countLogged atomic.Int64 // unix seconds of the last unanswered user count (usercount.go)
}

// Counters are the cluster metrics.
type Counters struct {
	Forwarded, Received, Dropped atomic.Uint64
	PeersConnected               atomic.Int64
}

// NodeName is the configured node name, or the one the environment gives.
func NodeName(c *brokerconfig.Cluster) string {
	if c.NodeName != "" {
		return c.NodeName
	}
	return os.Getenv(brokerconfig.NodeNameEnv)
}

// New builds the node; nothing listens before Start.
func New(o Options) (*Node, error) {
	c := o.Config
	node := NodeName(c)
	if node == "" {
		return nil, fmt.Errorf("cluster: no node name: set cluster.nodeName or the %s environment variable", brokerconfig.NodeNameEnv)
	}
	pw, err := os.ReadFile(c.PasswordFile)
	if err != nil {
		return nil, fmt.Errorf("cluster: reading the password file: %w", err)
	}
	password := strings.TrimSpace(string(pw))
	if len(password) < 16 {
		return nil, errors.New("cluster: the password file holds fewer than 16 characters")
	}
	host, portStr, err := net.SplitHostPort(c.Address)
	if err != nil {
		return nil, fmt.Errorf("cluster.address: %w", err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("cluster.address: port: %w", err)
	}
	if host == "" {
		host = "0.0.0.0"
	}
	if port == 0 {
		port = server.RANDOM_PORT // as for the listeners: port 0 picks a free one (nats-server's 0 is "no cluster")
	}
	tok := make([]byte, 24)
	if _, err := rand.Read(tok); err != nil {
		return nil, err
	}
	n := &Node{cfg: c, name: c.Name, node: node, nodeTok: TopicSubject(node), log: o.Log.With("component", "cluster"), mq: o.Server,
		token: hex.EncodeToString(tok), stop: make(chan struct{}), done: make(chan struct{}), acks: newAckTable(),
		adopting: adoptions{slots: make(chan struct{}, 8)}, moves: moves{slots: make(chan struct{}, 16)},
		sess: sessions{byID: map[string]*session{}, clock: wallClock}}
	// Properties travel base64url in headers (4/3 of their size): twice the
	// MQTT packet always fits.
	maxPayload := 2*o.MaxPayload + 64<<10
	if o.MaxPayload <= 0 || maxPayload > 1<<30 {
		maxPayload = 1 << 30
	}
	n.sopts = &server.Options{
		ServerName: node,
		// Pitfall 1: a client listener must exist (DontListen breaks routes
		// and Shutdown). Loopback, random port, a token only this process
		// knows; the bridge connects in-process anyway.
		Host: "127.0.0.1", Port: server.RANDOM_PORT, Authorization: n.token,
		NoSigs: true, NoSystemAccount: true,
		MaxControlLine: maxControlLine, MaxPayload: int32(maxPayload),
		MaxPending: 256 << 20,
		Cluster: server.ClusterOpts{
			Name: c.Name, Host: host, Port: port,
			Username: c.Name, Password: password,
			NoAdvertise: true, ConnectRetries: 0,
		},
	}
	if c.TLS != nil {
		tc, err := routeTLS(c.TLS, c.Name)
		if err != nil {
			return nil, err
		}
		n.sopts.Cluster.TLSConfig, n.sopts.Cluster.TLSTimeout = tc, 2
	}
	n.setRoutes(c.Peers, password)
	srv, err := server.NewServer(n.sopts)
	if err != nil {
		return nil, fmt.Errorf("cluster: building the embedded NATS server: %w", err)
	}
	srv.SetLoggerV2(newNatsLog(n.log, password), false, false, false)
	n.srv = srv
	n.bridge = newBridge(n)
	return n, nil
}

// routeTLS is the TLS of routes, both ends: each proves a certificate from
// the cluster's CA, issued for the cluster's name. The name, not the peer's
// address, is what a route verifies: pods are reached by per-pod DNS names
// in Kubernetes but by IP elsewhere (local pods), and a certificate of
// another cluster under the same CA must not pass.
func routeTLS(t *brokerconfig.ClusterTLS, clusterName string) (*tls.Config, error) {
	pair, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("cluster.tls: loading the certificate: %w", err)
	}
	ca, err := os.ReadFile(t.CAFile)
	if err != nil {
		return nil, fmt.Errorf("cluster.tls: reading the CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		return nil, errors.New("cluster.tls: the CA file holds no PEM certificate")
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{pair}, ServerName: clusterName,
		RootCAs: pool, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert,
		// The accepting end checks the name too (Go verifies a client
		// certificate's chain only).
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("cluster route: the peer sent no certificate")
			}
			if err := cs.PeerCertificates[0].VerifyHostname(clusterName); err != nil {
				return fmt.Errorf("cluster route: the peer's certificate is not for this cluster: %w", err)
			}
			return nil
		},
	}, nil
}

func (n *Node) setRoutes(peers []string, password string) {
	scheme := "nats-route"
	routes := make([]*url.URL, 0, len(peers))
	for _, p := range peers {
		routes = append(routes, &url.URL{Scheme: scheme, Host: p, User: url.UserPassword(n.name, password)})
	}
	n.sopts.Routes = routes
	n.peersMu.Lock()
	n.peers = append([]string(nil), peers...)
	n.peersMu.Unlock()
}

// Start starts the embedded server and the bridge connection.
func (n *Node) Start() error {
	n.started.Store(time.Now().UnixNano())
	go n.srv.Start()
	if !n.srv.ReadyForConnections(10 * time.Second) {
		n.srv.Shutdown()
		return fmt.Errorf("cluster: the embedded NATS server did not start (is %s free?)", n.cfg.Address)
	}
	if err := n.connect(); err != nil {
		n.srv.Shutdown()
		return err
	}
	go n.bridge.pump()
	go n.bridge.deliver()
	go n.watch()
	n.log.Info("cluster node started", "cluster", n.name, "node", n.node, "address", n.cfg.Address, "peers", len(n.cfg.Peers), "tls", n.cfg.TLS != nil)
	return nil
}

// droppedInbound says that messages from other pods were dropped, at most
// once a minute.
func (n *Node) droppedInbound() {
	if now := time.Now().Unix(); now-n.dropLogged.Load() >= 60 {
		n.dropLogged.Store(now)
		n.log.Warn("cluster: messages from other pods arrive faster than this pod delivers them; the excess is dropped (QoS 0) or refused to its publisher (QoS 1/2)",
			"metric", "mqtt_cluster_qos0_dropped_total")
	}
}

// connect (re)makes the in-process connection and every subscription the
// bridge holds.
func (n *Node) connect() error {
	nc, err := nats.Connect("", nats.InProcessServer(n.srv), nats.Token(n.token), nats.Name("mqtt-bridge-"+n.node),
		nats.NoReconnect(), nats.PingInterval(10*time.Second),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			if errors.Is(err, nats.ErrSlowConsumer) {
				n.droppedInbound() // counted by DroppedMessages
				return
			}
			n.log.Warn("cluster bridge connection error", "error", err.Error())
		}))
	if err != nil {
		return fmt.Errorf("cluster: connecting the bridge in-process: %w", err)
	}
	n.connMu.Lock()
	n.nc = nc
	n.connMu.Unlock()
	if err := n.bridge.resubscribe(nc); err != nil {
		nc.Close()
		return err
	}
	return nil
}

func (n *Node) conn() *nats.Conn {
	n.connMu.Lock()
	defer n.connMu.Unlock()
	return n.nc
}

// watch repairs the in-process connection, learns the other pods' names,
// counts routes, and fails acknowledgements pending on a pod that is gone.
func (n *Node) watch() {
	defer close(n.done)
	t := time.NewTicker(statusEvery)
	defer t.Stop()
	synced := map[string]bool{} // pods told this pod's sessions
	for tick := 0; ; tick++ {
		select {
		case <-n.stop:
			return
		case <-t.C:
		}
		if tick%100 == 0 {
			n.sess.sweep()
			n.retained.sweep(n.held)
			n.sweepMoves()
		}
		if nc := n.conn(); nc == nil || nc.IsClosed() {
			n.log.Warn("cluster bridge connection closed; reconnecting")
			if err := n.connect(); err != nil {
				n.log.Error("cluster bridge could not reconnect", "error", err.Error())
			}
			clear(synced)
		}
		st := n.routes()
		if nc := n.conn(); nc != nil && !nc.IsClosed() {
			n.syncSessions(nc, st, synced)
			n.pullRetained(nc, st)
			n.watchPeers(nc)
		}
		n.Counters.PeersConnected.Store(int64(len(st)))
		for _, name := range st {
			n.learn(TopicSubject(name))
		}
		n.acks.failGone(n.alive)
	}
}

// alive reports whether the pod with node token tok can still answer: it
// has a route and its bridge's subscriptions are known here.
func (n *Node) alive(tok string) bool {
	return n.srv.GlobalAccount().Interest(pingSubject(tok)) > 0
}

// learn adds a node token to the pods messages are forwarded to.
func (n *Node) learn(tok string) {
	if tok == n.nodeTok {
		return
	}
	if k := n.known.Load(); k != nil {
		for _, t := range *k {
			if t == tok {
				return
			}
		}
	}
	n.addMu.Lock()
	defer n.addMu.Unlock()
	var next []string
	if k := n.known.Load(); k != nil {
		for _, t := range *k {
			if t == tok {
				return
			}
		}
		next = append(next, *k...)
	}
	if len(next) >= 4*brokerconfig.MaxClusterPeers {
		next = next[1:] // bounded: pods renamed over time fall off
	}
	next = append(next, tok)
	n.known.Store(&next)
}

// routes returns the node names of the pods this one has a route to.
func (n *Node) routes() []string {
	rz, err := n.srv.Routez(nil)
	if err != nil {
		return nil
	}
	seen := map[string]bool{}
	var names []string
	for _, r := range rz.Routes {
		if r.RemoteName != "" && !seen[r.RemoteName] {
			seen[r.RemoteName] = true
			names = append(names, r.RemoteName)
		}
	}
	return names
}

// Ready is nil while the in-process connection is up, once the pod has
// had a route to every peer it was given (the peers include itself). A
// peer lost after that shows in Status, not here: one dead pod must not
// take every other pod out of the Service.
func (n *Node) Ready() error {
	if nc := n.conn(); nc == nil || !nc.IsConnected() {
		return errors.New("cluster: bridge connection is down")
	}
	if n.joined.Load() {
		return nil
	}
	err := n.meshComplete()
	if err == nil && !n.retained.loaded.Load() {
		if len(n.routes()) == 0 {
			n.retained.loaded.Store(true) // the first pod: nobody to copy from
		} else {
			err = errors.New("cluster: the retained messages of the other pods are not copied yet")
		}
	}
	if err != nil {
		if time.Since(time.Unix(0, n.started.Load())) < JoinGrace() {
			return err
		}
		// A peer still missing after the grace does not keep this pod out
		// of service: on a broker's first scale-up the StatefulSet replaces
		// pod 0 (not clustered yet, so no route to it) only once the new
		// pods are ready, and a pod that cannot be scheduled must not hold
		// the others back. /v1/cluster still says the mesh is partial.
		n.log.Warn("serving without a route to every peer after the join grace", "grace", JoinGrace(), "reason", err.Error())
	}
	n.joined.Store(true)
	return nil
}

// joinGrace is how long a starting pod waits for routes to every peer
// before it serves anyway (Ready). Tests shorten it.
var joinGrace atomic.Int64

func init() { joinGrace.Store(int64(10 * time.Second)) }

// JoinGrace is the wait for a full mesh before a starting pod is ready
// with the peers it has.
func JoinGrace() time.Duration { return time.Duration(joinGrace.Load()) }

// SetJoinGrace changes JoinGrace (tests).
func SetJoinGrace(d time.Duration) { joinGrace.Store(int64(d)) }

func (n *Node) meshComplete() error {
	n.peersMu.Lock()
	want := len(n.peers) - 1
	n.peersMu.Unlock()
	names := n.routes()
	if len(names) < want {
		return fmt.Errorf("cluster: routes to %d of %d peers", len(names), want)
	}
	for _, name := range names {
		n.learn(TopicSubject(name))
	}
	return nil
}

// SetPeers changes the routes in place (nats-server reload): scaling never
// restarts a pod.
func (n *Node) SetPeers(peers []string) error {
	n.peersMu.Lock()
	same := len(peers) == len(n.peers)
	for i := range peers {
		if !same || peers[i] != n.peers[i] {
			same = false
			break
		}
	}
	n.peersMu.Unlock()
	if same {
		return nil
	}
	opts := n.sopts.Clone()
	n.sopts = opts
	n.setRoutes(peers, opts.Cluster.Password)
	if err := n.srv.ReloadOptions(opts); err != nil {
		return fmt.Errorf("cluster: reloading the peers: %w", err)
	}
	n.dropOutboxesOf(peers)
	n.log.Info("cluster peers reloaded", "peers", len(peers))
	return nil
}

// Close stops the bridge and the embedded server.
func (n *Node) Close() {
	select {
	case <-n.stop:
		return
	default:
	}
	close(n.stop)
	<-n.done
	n.acks.failAll()
	if nc := n.conn(); nc != nil {
		nc.Close()
	}
	n.bridge.close()
	n.srv.Shutdown()
	n.srv.WaitForShutdown()
}

// Hook is the mochi hook that bridges this pod's clients to the cluster.
func (n *Node) Hook() mqtt.Hook { return n.bridge }

// SyncSubscriptions subscribes on NATS for every filter mochi already
// holds (sessions restored from the store at start).
func (n *Node) SyncSubscriptions() {
	for _, cl := range n.mq.Clients.GetAll() {
		for filter := range cl.State.Subscriptions.GetAll() {
			n.bridge.add(cl.ID, filter, false)
		}
	}
}

// HoldInbound stops (true) or resumes (false) this pod's delivery of
// messages from other pods. For tests that need a pod that has the interest
// but does not answer.
func (n *Node) HoldInbound(hold bool) { n.bridge.hold(hold) }

// LimitInbound sets the bound, in bytes, of the messages from other pods
// waiting for delivery (64 MiB). For tests that overflow it.
func (n *Node) LimitInbound(bytes int) { n.bridge.inq.setLimit(bytes) }

// DropConnection closes the in-process connection, as nats-server does to
// a connection that broke a limit (pitfall 4). For tests of the repair.
func (n *Node) DropConnection() {
	if nc := n.conn(); nc != nil {
		nc.Close()
	}
}

// natsLog sends nats-server's log to the broker's, quieter: its notices
// (start-up lines) at debug, warnings and errors (a peer refused for a bad
// password, garbage on the cluster port) at warn.
type natsLog struct {
	l *slog.Logger
	// secrets are replaced wherever they appear: nats-server logs a
	// removed route's URL with its password ("Removed route
	// nats-route://name:password@host", on every scale-in).
	secrets []string
}

func newNatsLog(l *slog.Logger, password string) *natsLog {
	return &natsLog{l: l, secrets: []string{password, url.UserPassword("x", password).String()[2:], url.QueryEscape(password)}}
}

// userinfo matches the user information of a URL.
var userinfo = regexp.MustCompile(`://[^/@\s]*@`)

func (g *natsLog) redact(f string, v ...any) string {
	s := userinfo.ReplaceAllString(fmt.Sprintf(f, v...), "://[REDACTED]@")
	for _, secret := range g.secrets {
		if secret != "" {
			s = strings.ReplaceAll(s, secret, "[REDACTED]")
		}
	}
	return s
}

func (g *natsLog) Noticef(f string, v ...any) { g.l.Debug(g.redact(f, v...)) }
func (g *natsLog) Warnf(f string, v ...any)   { g.l.Warn(g.redact(f, v...)) }
func (g *natsLog) Fatalf(f string, v ...any)  { g.l.Error(g.redact(f, v...)) }
func (g *natsLog) Errorf(f string, v ...any)  { g.l.Warn(g.redact(f, v...)) }
func (g *natsLog) Debugf(string, ...any)      {}
func (g *natsLog) Tracef(string, ...any)      {}
