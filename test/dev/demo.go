package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/eclipse/paho.golang/paho"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/mqtt-operator/mqtt-operator/api/v1alpha1"
)

// waitEnforced waits until every sample user and ACL reports that the
// running broker enforces it, and the broker says so too.
func waitEnforced(ctx context.Context, c client.Client) error {
	deadline := time.Now().Add(60 * time.Second)
	for {
		pending := ""
		var users v1alpha1.MQTTUserList
		var acls v1alpha1.TopicACLList
		if err := c.List(ctx, &users, client.InNamespace(namespace)); err != nil {
			return err
		}
		if err := c.List(ctx, &acls, client.InNamespace(namespace)); err != nil {
			return err
		}
		for _, u := range users.Items {
			if r := meta.FindStatusCondition(u.Status.Conditions, v1alpha1.ConditionReady); r == nil || r.Status != "True" {
				pending = "MQTTUser " + u.Name
			}
		}
		for _, a := range acls.Items {
			if r := meta.FindStatusCondition(a.Status.Conditions, v1alpha1.ConditionReady); r == nil || r.Status != "True" {
				pending = "TopicACL " + a.Name
			}
		}
		var broker v1alpha1.MQTTBroker
		if err := c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: "telemetry"}, &broker); err != nil {
			return err
		}
		if r := meta.FindStatusCondition(broker.Status.Conditions, v1alpha1.ConditionAuthSynced); r == nil || r.Status != "True" {
			pending = "the broker's AuthSynced condition"
		}
		if pending == "" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s is not enforced after 60s", pending)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// demoClient logs in with the credentials from a user's connection Secret,
// exactly as an application would.
func demoClient(ctx context.Context, c client.Client, addr, secret string) (*paho.Client, chan *paho.Publish, error) {
	var s corev1.Secret
	if err := c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: secret}, &s); err != nil {
		return nil, nil, fmt.Errorf("reading connection Secret %s: %w", secret, err)
	}
	conn, err := net.DialTimeout("tcp", addr, 3*time.Second)
	if err != nil {
		return nil, nil, err
	}
	received := make(chan *paho.Publish, 10)
	cl := paho.NewClient(paho.ClientConfig{Conn: conn, OnPublishReceived: []func(paho.PublishReceived) (bool, error){
		func(pr paho.PublishReceived) (bool, error) { received <- pr.Packet; return true, nil },
	}})
	username := string(s.Data["username"])
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := cl.Connect(cctx, &paho.Connect{ClientID: username + "-demo", KeepAlive: 30, CleanStart: true,
		Username: username, UsernameFlag: true, Password: s.Data["password"], PasswordFlag: true}); err != nil {
		return nil, nil, fmt.Errorf("logging in as %s: %w", username, err)
	}
	return cl, received, nil
}

// publishSubscribe proves the samples work: the dashboard subscribes to the
// readings, the gateway publishes one (and fails to impersonate another
// gateway), and the dashboard receives exactly the allowed one.
func publishSubscribe(ctx context.Context, c client.Client, addr string, out io.Writer) error {
	dash, received, err := demoClient(ctx, c, addr, "dashboard-mqtt")
	if err != nil {
		return err
	}
	defer func() { _ = dash.Disconnect(&paho.Disconnect{}) }()
	gw, _, err := demoClient(ctx, c, addr, "sensor-gateway-mqtt")
	if err != nil {
		return err
	}
	defer func() { _ = gw.Disconnect(&paho.Disconnect{}) }()
	if _, err := dash.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "telemetry/#", QoS: 1}}}); err != nil {
		return fmt.Errorf("dashboard subscribing to telemetry/#: %w", err)
	}
	fmt.Fprintln(out, "  dashboard      SUBSCRIBE telemetry/#                           granted")
	denied, _ := gw.Publish(ctx, &paho.Publish{Topic: "telemetry/other-gateway/temperature", Payload: []byte("spoofed"), QoS: 1})
	if denied == nil || denied.ReasonCode != 0x87 {
		return errors.New("the gateway could publish as another gateway: the ACL is not enforced")
	}
	fmt.Fprintln(out, "  sensor-gateway PUBLISH   telemetry/other-gateway/temperature  refused (not authorised by its TopicACL)")
	if _, err := gw.Publish(ctx, &paho.Publish{Topic: "telemetry/sensor-gateway/temperature", Payload: []byte("21.5"), QoS: 1}); err != nil {
		return fmt.Errorf("the gateway publishing its reading: %w", err)
	}
	fmt.Fprintln(out, "  sensor-gateway PUBLISH   telemetry/sensor-gateway/temperature acknowledged")
	select {
	case m := <-received:
		if string(m.Payload) != "21.5" {
			return fmt.Errorf("the dashboard received %q on %s, not the reading", m.Payload, m.Topic)
		}
		fmt.Fprintf(out, "  dashboard      received  %s = %s\n", m.Topic, m.Payload)
	case <-time.After(5 * time.Second):
		return errors.New("the dashboard received nothing")
	}
	return nil
}
