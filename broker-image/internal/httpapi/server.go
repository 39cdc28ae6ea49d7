package httpapi

import (
	"net"
	"net/http"
	"sync"
	"time"
)

// Limits of the health and admin ports. Both are reachable by anything that
// can reach the pod (the health port by design, for kubelet and Prometheus),
// and net/http keeps an idle keep-alive connection forever by default: a few
// thousand idle sockets would hold a goroutine and buffers each.
var (
	// ReadTimeout bounds reading a whole request; the largest, an admin
	// PUT of an auth bundle (32 MiB at most), takes well under it.
	ReadTimeout = 30 * time.Second
	// WriteTimeout bounds writing a response (/metrics is the largest).
	WriteTimeout = 30 * time.Second
	// IdleTimeout closes a keep-alive connection that sends no new
	// request; Prometheus scrapes every 15-60 s and reconnects cheaply.
	IdleTimeout = 30 * time.Second
	// MaxConnections is the most connections one port serves at once;
	// kubelet probes, a scraper and the operator need a handful.
	MaxConnections = 64
)

// NewServer returns a server for handler with the timeouts above.
func NewServer(addr string, handler http.Handler) *http.Server {
	return &http.Server{
		Addr: addr, Handler: handler,
		ReadHeaderTimeout: 5 * time.Second, ReadTimeout: ReadTimeout, WriteTimeout: WriteTimeout, IdleTimeout: IdleTimeout,
	}
}

// Listen binds addr and serves at most MaxConnections at once: a connection
// over the cap is closed as soon as it is accepted, so a flood fails fast
// instead of queueing in front of the kubelet's probes.
func Listen(addr string) (net.Listener, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	return &cappedListener{Listener: l, free: MaxConnections}, nil
}

type cappedListener struct {
	net.Listener
	mu   sync.Mutex
	free int
}

func (l *cappedListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		l.mu.Lock()
		admitted := l.free > 0
		if admitted {
			l.free--
		}
		l.mu.Unlock()
		if admitted {
			return &cappedConn{Conn: c, release: l.release}, nil
		}
		_ = c.Close()
	}
}

func (l *cappedListener) release() {
	l.mu.Lock()
	l.free++
	l.mu.Unlock()
}

// cappedConn gives its slot back once, however often it is closed.
type cappedConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *cappedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}
