package integration

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/mqtt-operator/mqtt-operator/api/v1alpha1"
)

// credentials are what an application reads from its connection Secret.
type credentials struct{ username, password string }

func connectionSecret(t *testing.T, ns, name string) credentials {
	t.Helper()
	var s corev1.Secret
	if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, &s); err != nil {
		t.Fatalf("connection Secret %s: %v", name, err)
	}
	return credentials{string(s.Data["username"]), string(s.Data["password"])}
}

// mqttClient is an MQTT 5 client that records what it receives and how the
// server ended its session.
type mqttClient struct {
	*paho.Client
	received     chan *paho.Publish
	disconnected chan struct{}
}

func dial(t *testing.T, addr string, c credentials, clientID string) (*mqttClient, error) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 3*time.Second)
	if err != nil {
		return nil, err
	}
	return connectOver(t, conn, c, clientID)
}

// connectOver runs MQTT 5 over an established connection (TCP, TLS or
// WebSocket). Without a username (a certificate user) it sends no username
// or password.
func connectOver(t *testing.T, conn net.Conn, c credentials, clientID string) (*mqttClient, error) {
	t.Helper()
	m := &mqttClient{received: make(chan *paho.Publish, 100), disconnected: make(chan struct{})}
	closed := false
	end := func() {
		if !closed {
			closed = true
			close(m.disconnected)
		}
	}
	m.Client = paho.NewClient(paho.ClientConfig{
		Conn: conn,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			m.received <- pr.Packet
			return true, nil
		}},
		OnServerDisconnect: func(*paho.Disconnect) { end() },
		OnClientError:      func(error) { end() },
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cp := &paho.Connect{ClientID: clientID, KeepAlive: 30, CleanStart: true}
	if c.username != "" {
		cp.Username, cp.UsernameFlag, cp.Password, cp.PasswordFlag = c.username, true, []byte(c.password), true
	}
	ack, err := m.Connect(ctx, cp)
	if err != nil {
		_ = conn.Close()
		if ack != nil {
			return nil, fmt.Errorf("CONNACK reason 0x%02x: %w", ack.ReasonCode, err)
		}
		return nil, err
	}
	t.Cleanup(func() { _ = m.Disconnect(&paho.Disconnect{}) })
	return m, nil
}

func mustDial(t *testing.T, addr string, c credentials, clientID string) *mqttClient {
	t.Helper()
	m, err := dial(t, addr, c, clientID)
	if err != nil {
		t.Fatalf("%s could not connect: %v", c.username, err)
	}
	return m
}

// subscribe returns the granted QoS or the refusal code.
func (m *mqttClient) subscribe(t *testing.T, filter string) byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ack, err := m.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: filter, QoS: 1}}})
	if ack == nil || len(ack.Reasons) != 1 {
		t.Fatalf("subscribe %s: %v", filter, err)
	}
	return ack.Reasons[0]
}

// publish sends at QoS 1 and returns the PUBACK reason (0x87: not authorised).
func (m *mqttClient) publish(t *testing.T, topic, payload string) byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := m.Publish(ctx, &paho.Publish{Topic: topic, Payload: []byte(payload), QoS: 1})
	if resp == nil {
		t.Fatalf("publish to %s: %v", topic, err)
	}
	return resp.ReasonCode
}

// next returns the next message's payload, or fails after the deadline.
func (m *mqttClient) next(t *testing.T) string {
	t.Helper()
	select {
	case p := <-m.received:
		return string(p.Payload)
	case <-time.After(5 * time.Second):
		t.Fatal("no message arrived")
		return ""
	}
}

// readyReason returns the reason of an object's Ready condition.
func readyReason(t *testing.T, ns, name string, obj client.Object) (string, error) {
	t.Helper()
	if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, obj); err != nil {
		return "", err
	}
	var conds []metav1.Condition
	switch o := obj.(type) {
	case *v1alpha1.MQTTUser:
		conds = o.Status.Conditions
	case *v1alpha1.TopicACL:
		conds = o.Status.Conditions
	case *v1alpha1.MQTTBroker:
		conds = o.Status.Conditions
	default:
		return "", errors.New("no conditions")
	}
	for _, c := range conds {
		if c.Type == v1alpha1.ConditionReady {
			return c.Reason, nil
		}
	}
	return "", errors.New("no Ready condition")
}
