package guard

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/mochi-mqtt/server/v2/listeners"
)

// Guard is shared by all listeners of one broker: one connection limit, one
// set of counters.
type Guard struct {
	Limits  *Limits
	Stats   Stats
	Log     *slog.Logger
	preauth preauth
	// CloseClients disconnects the clients of one listener when it closes.
	// mochi's own (Clients.GetByListener) takes its read lock twice and can
	// deadlock against a client being removed at the same moment, so the
	// broker passes one that does not; nil falls back to mochi's.
	CloseClients func(listener string)
}

func (g *Guard) closeClients(id string, mochis listeners.CloseFn) {
	if g.CloseClients != nil {
		g.CloseClients(id)
		return
	}
	mochis(id)
}

// admit wraps a new connection, or closes it when the broker is full.
func (g *Guard) admit(raw net.Conn) (*conn, bool) {
	// Logged-in clients are bounded by maxConnections (the policy hook);
	// those not logged in by their own budget (preauth.go).
	if g.Stats.Open.Add(1) > g.Limits.MaxConnections()+g.Limits.MaxPending() {
		g.Stats.Open.Add(-1)
		g.Stats.RefusedOverLimit.Add(1)
		_ = raw.Close()
		return nil, false
	}
	c := &conn{Conn: raw, limits: g.Limits, stats: &g.Stats, addr: hostOf(raw.RemoteAddr())}
	c.frames.firstMax = g.Limits.MaxConnectPacketSize()
	c.frames.checkTopics = true
	evict, ok := g.admitStranger(c)
	if evict != nil {
		_ = evict.Close()
	}
	if !ok {
		g.Stats.Open.Add(-1)
		_ = raw.Close()
		return nil, false
	}
	c.onClose = func() { g.Stats.Open.Add(-1); g.leave(c) }
	g.Stats.Accepted.Add(1)
	// mochi replaces this deadline with its keepalive deadline once CONNECT
	// has been read; until then a silent client is dropped.
	_ = raw.SetReadDeadline(time.Now().Add(g.Limits.ConnectTimeout()))
	return c, true
}

// serveConn runs mochi on one connection, so that a panic in the decoder or a
// hook closes this connection only.
func (g *Guard) serveConn(id string, c *conn, establish listeners.EstablishFn) {
	defer func() {
		if r := recover(); r != nil {
			g.Stats.Panics.Add(1)
			g.Log.Error("recovered from a panic on a client connection; closed it", "listener", id,
				"remote", c.RemoteAddr().String(), "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
		}
		_ = c.Close()
	}()
	if err := establish(id, c); err != nil {
		g.Log.Debug("connection ended", "listener", id, "remote", c.RemoteAddr().String(), "error", err.Error())
	}
}

// socket is what both kinds of listener share: a name, an address, the
// bound socket (TLS-wrapped when configured) and a way to stop accepting.
type socket struct {
	id, address string
	tlsConfig   *tls.Config
	guard       *Guard
	ln          net.Listener
	closing     atomic.Bool

	// The connections being served, so Close can end them and return only
	// when none is left in mochi: mochi adds to its client WaitGroup inside
	// EstablishConnection and waits on it right after closing the
	// listeners; a connection still on its way in would otherwise add to it
	// while it is being waited on.
	mu    sync.Mutex
	conns map[*conn]struct{}
	wg    sync.WaitGroup
	// ended is set, under mu, once Close waits for the connections; a
	// connection accepted before that is served even when the listener
	// stopped accepting since (a drain), so it gets a CONNACK that sends
	// it elsewhere rather than a bare close.
	ended bool
}

// serve runs mochi on c unless the listener has been closed.
func (s *socket) serve(c *conn, establish listeners.EstablishFn) {
	s.mu.Lock()
	if s.ended {
		s.mu.Unlock()
		_ = c.Close()
		return
	}
	if s.conns == nil {
		s.conns = map[*conn]struct{}{}
	}
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		s.wg.Done()
	}()
	s.guard.serveConn(s.id, c, establish)
}

// closeTimeout bounds how long Close waits for connections to end.
const closeTimeout = 5 * time.Second

// endConnections closes what mochi has not (connections that never sent
// CONNECT) and waits until every connection has left mochi.
func (s *socket) endConnections() {
	s.mu.Lock()
	s.ended = true
	for c := range s.conns {
		_ = c.Close()
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(closeTimeout):
		s.guard.Log.Warn("connections still open after the listener closed", "listener", s.id)
	}
}

func (s *socket) ID() string { return s.id }

func (s *socket) Address() string {
	if s.ln != nil {
		return s.ln.Addr().String()
	}
	return s.address
}

// bind binds the socket, so a port conflict fails the broker at start.
func (s *socket) bind() error {
	ln, err := net.Listen("tcp", s.address)
	if err != nil {
		return fmt.Errorf("listener %s: %w", s.id, err)
	}
	if s.tlsConfig != nil {
		ln = tls.NewListener(ln, s.tlsConfig)
	}
	s.ln = ln
	return nil
}

// StopAccepting closes the socket but leaves connected clients alone, for a
// drain that disconnects them one by one.
func (s *socket) StopAccepting() {
	s.mu.Lock()
	first := s.closing.CompareAndSwap(false, true)
	s.mu.Unlock()
	if first && s.ln != nil {
		_ = s.ln.Close()
	}
}

// TCP is an MQTT listener over TCP, optionally with TLS.
type TCP struct {
	socket
}

// NewTCP returns a TCP (or, with tlsConfig, TLS) listener.
func (g *Guard) NewTCP(id, address string, tlsConfig *tls.Config) *TCP {
	return &TCP{socket: socket{id: id, address: address, tlsConfig: tlsConfig, guard: g}}
}

// Protocol names the listener's protocol for mochi's logs.
func (l *TCP) Protocol() string {
	if l.tlsConfig != nil {
		return "tls"
	}
	return "tcp"
}

// Init binds the socket.
func (l *TCP) Init(*slog.Logger) error { return l.bind() }

// Serve accepts until Close. Unlike mochi's own listener, a transient accept
// error (out of file descriptors) does not end it.
func (l *TCP) Serve(establish listeners.EstablishFn) {
	backoff := 5 * time.Millisecond
	for {
		raw, err := l.ln.Accept()
		if err != nil {
			if l.closing.Load() || errors.Is(err, net.ErrClosed) {
				return
			}
			l.guard.Log.Warn("accept failed; retrying", "listener", l.id, "error", err.Error())
			time.Sleep(backoff)
			backoff = min(backoff*2, time.Second)
			continue
		}
		backoff = 5 * time.Millisecond
		c, ok := l.guard.admit(raw)
		if !ok {
			continue
		}
		go l.serve(c, establish)
	}
}

// Close stops accepting and has mochi disconnect this listener's clients.
func (l *TCP) Close(closeClients listeners.CloseFn) {
	l.StopAccepting()
	l.guard.closeClients(l.id, closeClients)
	l.endConnections()
}

// WebSocket is an MQTT listener over WebSocket (RFC 6455, subprotocol "mqtt")
// at one path, optionally with TLS.
type WebSocket struct {
	socket
	path      string
	srv       *http.Server
	upgrader  websocket.Upgrader
	establish listeners.EstablishFn
}

// NewWebSocket returns a WebSocket (or, with tlsConfig, secure WebSocket) listener.
func (g *Guard) NewWebSocket(id, address, path string, tlsConfig *tls.Config) *WebSocket {
	return &WebSocket{
		socket: socket{id: id, address: address, tlsConfig: tlsConfig, guard: g}, path: path,
		upgrader: websocket.Upgrader{
			Subprotocols: []string{"mqtt"},
			// MQTT clients authenticate in CONNECT, not with cookies, so a
			// cross-origin page gains nothing a direct connection would not.
			CheckOrigin: func(*http.Request) bool { return true },
		},
	}
}

// Protocol names the listener's protocol for mochi's logs.
func (l *WebSocket) Protocol() string {
	if l.tlsConfig != nil {
		return "wss"
	}
	return "ws"
}

// Init binds the socket. A path net/http does not accept is an error,
// found before anything is bound (brokerconfig refuses such paths; this is
// the last line should one slip through).
func (l *WebSocket) Init(*slog.Logger) error {
	mux, err := l.mux()
	if err != nil {
		return err
	}
	if err := l.bind(); err != nil {
		return err
	}
	l.srv = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(l.guard.Log.Handler(), slog.LevelDebug),
	}
	return nil
}

// mux serves the listener's path. ServeMux panics on a pattern it does not
// accept; that becomes an error.
func (l *WebSocket) mux() (mux *http.ServeMux, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("listener %s: path %q: %v", l.id, l.path, r)
		}
	}()
	mux = http.NewServeMux()
	mux.HandleFunc(l.path, l.handle)
	return mux, nil
}

func (l *WebSocket) handle(w http.ResponseWriter, r *http.Request) {
	ws, err := l.upgrader.Upgrade(w, r, nil)
	if err != nil {
		return // the upgrader already answered with an HTTP error
	}
	ws.SetReadLimit(int64(l.guard.Limits.MaxPacketSize()) + 1024)
	c, ok := l.guard.admit(&wsConn{Conn: ws.NetConn(), ws: ws})
	if !ok {
		return
	}
	l.serve(c, l.establish)
}

// Serve serves HTTP until Close.
func (l *WebSocket) Serve(establish listeners.EstablishFn) {
	l.establish = establish
	if err := l.srv.Serve(l.ln); err != nil && !errors.Is(err, http.ErrServerClosed) && !l.closing.Load() {
		l.guard.Log.Error("websocket listener stopped", "listener", l.id, "error", err.Error())
	}
}

// Close stops accepting and has mochi disconnect this listener's clients.
func (l *WebSocket) Close(closeClients listeners.CloseFn) {
	l.StopAccepting()
	l.guard.closeClients(l.id, closeClients)
	l.endConnections()
	if l.srv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = l.srv.Shutdown(ctx)
	}
}
