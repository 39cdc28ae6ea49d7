package main

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/mqtt-operator/mqtt-operator/broker-image/internal/httpapi"
)

// The health port is open to anything that reaches the pod: it serves at
// most httpapi.MaxConnections connections at once and closes the next one
// at once, instead of holding every idle keep-alive socket it is given.
func TestHealthPortCapsConnections(t *testing.T) {
	f := newBrokerFiles(t)
	f.writeConfig(t)
	f.writeBundle(t, f.authBundle())
	f.start(t)
	http.DefaultTransport.(*http.Transport).CloseIdleConnections() // the readiness polls' sockets

	deadline := time.Now().Add(processLimit)
	for held := 0; held < httpapi.MaxConnections; {
		c, err := net.Dial("tcp", f.health)
		if err != nil {
			t.Fatal(err)
		}
		if healthzOn(c) {
			defer c.Close()
			held++
			continue
		}
		_ = c.Close() // a slot of a closed poll not yet given back
		if time.Now().After(deadline) {
			t.Fatalf("only %d connections served, want %d", held, httpapi.MaxConnections)
		}
		time.Sleep(20 * time.Millisecond)
	}
	extra, err := net.Dial("tcp", f.health)
	if err != nil {
		t.Fatal(err)
	}
	defer extra.Close()
	_ = extra.SetReadDeadline(time.Now().Add(3 * time.Second))
	_, err = extra.Read(make([]byte, 1))
	var ne net.Error
	if err == nil || (errors.As(err, &ne) && ne.Timeout()) {
		t.Errorf("connection %d over the cap was kept open (%v)", httpapi.MaxConnections+1, err)
	}
}

// healthzOn sends GET /healthz on c, leaving it open (keep-alive), and
// reports whether it was answered.
func healthzOn(c net.Conn) bool {
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	defer func() { _ = c.SetDeadline(time.Time{}) }()
	if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: broker\r\n\r\n"); err != nil {
		return false
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return false
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}
