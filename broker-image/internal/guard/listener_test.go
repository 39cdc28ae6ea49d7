package guard

import (
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"
)

// mochi's own CloseFn (Clients.GetByListener) takes a read lock twice and can
// deadlock against a client being removed at the same moment: a make test run
// hung ten minutes in a broker shutdown. With CloseClients set, a closing
// listener must use it and never mochi's.
func TestClosingAListenerBypassesMochisClientList(t *testing.T) {
	var closed []string
	g := &Guard{
		Limits: NewLimits(1024, 10, time.Second), Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		CloseClients: func(id string) { closed = append(closed, id) },
	}
	mochis := func(string) { t.Error("mochi's GetByListener path was used") }
	tcp := g.NewTCP("mqtt", "127.0.0.1:0", nil)
	if err := tcp.Init(nil); err != nil {
		t.Fatal(err)
	}
	tcp.Close(mochis)
	ws := g.NewWebSocket("ws", "127.0.0.1:0", "/mqtt", nil)
	if err := ws.Init(nil); err != nil {
		t.Fatal(err)
	}
	ws.Close(mochis)
	if len(closed) != 2 || closed[0] != "mqtt" || closed[1] != "ws" {
		t.Errorf("closed %v, want [mqtt ws]", closed)
	}
}

// A WebSocket path net/http refuses (it panics on such a pattern) is an
// error from Init, before the port is bound, never a panic.
func TestWebSocketPathNetHTTPRefusesIsAnError(t *testing.T) {
	g := &Guard{Limits: NewLimits(1024, 10, time.Second), Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	for _, path := range []string{"", "/{", "/a/{x...}/b"} {
		ws := g.NewWebSocket("ws", "127.0.0.1:0", path, nil)
		err := ws.Init(nil)
		if err == nil || !strings.Contains(err.Error(), "listener ws: path") {
			t.Errorf("path %q: Init returned %v, want an error naming the listener and path", path, err)
		}
		if ws.ln != nil {
			t.Errorf("path %q: the port was bound before the path was refused", path)
		}
	}
}

// A connection the listener accepted just before a drain stopped accepting is
// still handed to mochi (which answers its CONNECT with "use another server"):
// closing it bare made TestLoginDuringADrainIsSentElsewhere flaky and gives a
// client nothing to go on. Once Close waits for the connections, none is
// handed over any more.
func TestAConnectionAcceptedBeforeADrainIsServed(t *testing.T) {
	g := &Guard{Limits: NewLimits(1024, 10, time.Second), Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	tcp := g.NewTCP("mqtt", "127.0.0.1:0", nil)
	if err := tcp.Init(nil); err != nil {
		t.Fatal(err)
	}
	accepted := func() *conn {
		client, server := net.Pipe()
		t.Cleanup(func() { _ = client.Close() })
		c, ok := g.admit(server)
		if !ok {
			t.Fatal("the guard refused a connection")
		}
		return c
	}
	served := 0
	establish := func(string, net.Conn) error { served++; return nil }
	c := accepted()
	tcp.StopAccepting()
	tcp.serve(c, establish)
	if served != 1 {
		t.Fatal("a connection accepted before StopAccepting was closed without being served")
	}
	tcp.Close(func(string) {})
	tcp.serve(accepted(), establish)
	if served != 1 {
		t.Error("a connection was served after the listener closed")
	}
	if open := g.Stats.Open.Load(); open != 0 {
		t.Errorf("%d connections still counted open", open)
	}
}
