// Package mqtttest is the MQTT 5 client the integration and e2e tests log in
// with, as an application would: over TCP, TLS or WebSocket, with the
// credentials of a connection Secret. It records what it receives and how the
// server ended the session.
package mqtttest

import (
	"context"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// T is what the helpers need of a test: *testing.T and Ginkgo's GinkgoT()
// both have it.
type T interface {
	Helper()
	Fatalf(format string, args ...any)
	Cleanup(func())
}

// Credentials are what an application reads from its connection Secret. A
// certificate user has none: its TLS connection carries its identity.
type Credentials struct{ Username, Password string }

// Session asks for a session that outlives the connection: CleanStart false
// and an expiry, so QoS 1 messages wait for the client while it is away.
type Session struct {
	Persistent    bool
	ExpirySeconds uint32
}

// Client is a connected MQTT 5 client.
type Client struct {
	*paho.Client
	// Received gets every PUBLISH the server delivers.
	Received chan *paho.Publish
	// Disconnected closes when the server or the network ends the session.
	Disconnected chan struct{}
	// SessionPresent is the CONNACK's flag: the server resumed a session.
	SessionPresent bool
	// ServerDisconnect is the DISCONNECT the server ended the connection
	// with (such as 0x8E, session taken over), or nil; read it once
	// Disconnected is closed.
	ServerDisconnect *paho.Disconnect
}

// Dial connects over TCP.
func Dial(t T, addr string, c Credentials, clientID string) (*Client, error) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 3*time.Second)
	if err != nil {
		return nil, err
	}
	return Connect(t, conn, c, clientID, Session{})
}

// Connect runs MQTT 5 over an established connection (TCP, TLS or
// WebSocket). Without a username it sends no username or password. The
// client disconnects when the test ends.
func Connect(t T, conn net.Conn, c Credentials, clientID string, s Session) (*Client, error) {
	t.Helper()
	m := &Client{Received: make(chan *paho.Publish, 1000), Disconnected: make(chan struct{})}
	closed := make(chan struct{}, 1)
	closed <- struct{}{}
	end := func(d *paho.Disconnect) {
		select {
		case <-closed:
			m.ServerDisconnect = d
			close(m.Disconnected)
		default:
		}
	}
	m.Client = paho.NewClient(paho.ClientConfig{
		Conn: &packetLocked{Conn: conn},
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			m.Received <- pr.Packet
			return true, nil
		}},
		OnServerDisconnect: func(d *paho.Disconnect) { end(d) },
		OnClientError:      func(error) { end(nil) },
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cp := &paho.Connect{ClientID: clientID, KeepAlive: 30, CleanStart: !s.Persistent}
	if s.Persistent {
		cp.Properties = &paho.ConnectProperties{SessionExpiryInterval: &s.ExpirySeconds}
	}
	if c.Username != "" {
		cp.Username, cp.UsernameFlag, cp.Password, cp.PasswordFlag = c.Username, true, []byte(c.Password), true
	}
	ack, err := m.Connect(ctx, cp)
	if err != nil {
		_ = conn.Close()
		if ack != nil {
			return nil, fmt.Errorf("CONNACK reason 0x%02x: %w", ack.ReasonCode, err)
		}
		return nil, err
	}
	m.SessionPresent = ack.SessionPresent
	t.Cleanup(func() { _ = m.Disconnect(&paho.Disconnect{}) })
	return m, nil
}

// packetLocked makes each MQTT packet one uninterrupted write. paho writes a
// packet as several buffers and, without this, a PINGREQ from its pinger
// goroutine can land between a SUBSCRIBE's header and body: over TCP the
// buffers go out in one writev, but a TLS or WebSocket connection writes
// them one by one (the broker then rightly closes the connection for a
// malformed packet). paho takes the lock when the connection offers one.
type packetLocked struct {
	net.Conn
	sync.Mutex
}

// MustDial connects over TCP or fails the test.
func MustDial(t T, addr string, c Credentials, clientID string) *Client {
	t.Helper()
	m, err := Dial(t, addr, c, clientID)
	if err != nil {
		t.Fatalf("%s could not connect: %v", c.Username, err)
	}
	return m
}

// Subscribe subscribes at QoS 1 and returns the granted QoS or the refusal
// code (0x87: not authorised).
func (m *Client) Subscribe(t T, filter string) byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ack, err := m.Client.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: filter, QoS: 1}}})
	if ack == nil || len(ack.Reasons) != 1 {
		t.Fatalf("subscribe %s: %v", filter, err)
	}
	return ack.Reasons[0]
}

// Publish sends at QoS 1 and returns the PUBACK reason (0x87: not
// authorised).
func (m *Client) Publish(t T, topic, payload string) byte {
	t.Helper()
	code, err := m.TryPublish(topic, payload)
	if err != nil {
		t.Fatalf("publish to %s: %v", topic, err)
	}
	return code
}

// TryPublish sends at QoS 1 and returns the PUBACK reason, or the error
// when no PUBACK came (the connection broke): the message then counts as
// not acknowledged.
func (m *Client) TryPublish(topic, payload string) (byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := m.Client.Publish(ctx, &paho.Publish{Topic: topic, Payload: []byte(payload), QoS: 1})
	if resp == nil {
		if err == nil {
			err = fmt.Errorf("no PUBACK")
		}
		return 0, err
	}
	return resp.ReasonCode, nil
}

// Next returns the next message's payload, or fails after the deadline.
func (m *Client) Next(t T) string {
	t.Helper()
	select {
	case p := <-m.Received:
		return string(p.Payload)
	case <-time.After(5 * time.Second):
		t.Fatalf("no message arrived")
		return ""
	}
}
