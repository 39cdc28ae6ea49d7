package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/mqtt-operator/mqtt-operator/api/v1alpha1"
	"github.com/mqtt-operator/mqtt-operator/internal/testenv"
	"github.com/mqtt-operator/mqtt-operator/test/mqtttest"
)

const (
	gatewayID   = "gateway-1"
	dashboardID = "dashboard-1"
	notAllowed  = 0x87
)

// deployment is the samples applied in a namespace, running and enforced.
type deployment struct {
	ns, addr           string
	gateway, dashboard credentials
}

// deploySamples applies config/samples and waits until the broker pod runs
// and every user and ACL reports Enforced.
func deploySamples(t *testing.T) *deployment {
	t.Helper()
	ns := newNamespace(t)
	objs, err := testenv.Samples(ns)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		if err := k8s.Create(context.Background(), o); err != nil {
			t.Fatalf("applying %s %s: %v", o.GetKind(), o.GetName(), err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := pods.WaitReady(ctx, ns, "telemetry", 1); err != nil {
		t.Fatal(err)
	}
	for _, o := range []struct {
		name string
		obj  client.Object
	}{{"sensor-gateway", &v1alpha1.MQTTUser{}}, {"dashboard", &v1alpha1.MQTTUser{}},
		{"sensor-gateway", &v1alpha1.TopicACL{}}, {"dashboard", &v1alpha1.TopicACL{}}} {
		eventually(t, 30*time.Second, fmt.Sprintf("%T %s enforced", o.obj, o.name), func() error {
			reason, err := readyReason(t, ns, o.name, o.obj)
			if err == nil && reason != "Enforced" {
				err = fmt.Errorf("Ready reason %s", reason)
			}
			return err
		})
	}
	eventually(t, 30*time.Second, "the broker reporting both users on its pod", func() error {
		var b v1alpha1.MQTTBroker
		if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "telemetry"}, &b); err != nil {
			return err
		}
		if a := b.Status.Auth; a == nil || a.Users != 2 || a.ACLs != 2 || a.PodsInSync != 1 {
			return fmt.Errorf("status.auth %+v", a)
		}
		return nil
	})
	return &deployment{
		ns: ns, addr: pods.PodAddr(ns, "telemetry-0") + ":1883",
		gateway: connectionSecret(t, ns, "sensor-gateway-mqtt"), dashboard: connectionSecret(t, ns, "dashboard-mqtt"),
	}
}

// The samples as written: the gateway publishes its readings, the dashboard
// reads them and commands the gateway, and everything else is refused.
func TestSamplesEnforceExactlyTheirACLs(t *testing.T) {
	d := deploySamples(t)
	gw := mqtttest.MustDial(t, d.addr, d.gateway, gatewayID)
	dash := mqtttest.MustDial(t, d.addr, d.dashboard, dashboardID)

	if code := dash.Subscribe(t, "telemetry/#"); code >= 0x80 {
		t.Fatalf("dashboard may read telemetry, SUBACK 0x%02x", code)
	}
	if code := dash.Subscribe(t, "commands/#"); code != notAllowed {
		t.Errorf("dashboard must not read commands, SUBACK 0x%02x", code)
	}
	if code := gw.Subscribe(t, "commands/sensor-gateway/+"); code >= 0x80 {
		t.Fatalf("gateway may read its commands, SUBACK 0x%02x", code)
	}
	if code := gw.Subscribe(t, "telemetry/#"); code != notAllowed {
		t.Errorf("gateway must not read telemetry, SUBACK 0x%02x", code)
	}

	if code := gw.Publish(t, "telemetry/other-gateway/temp", "impersonation"); code != notAllowed {
		t.Errorf("gateway published as another gateway, PUBACK 0x%02x", code)
	}
	if code := gw.Publish(t, "telemetry/sensor-gateway/temp", "21.5"); code >= 0x80 {
		t.Fatalf("gateway reading refused, PUBACK 0x%02x", code)
	}
	if got := dash.Next(t); got != "21.5" {
		t.Errorf("dashboard received %q first, want the reading (the refused one must never arrive)", got)
	}
	if code := dash.Publish(t, "commands/sensor-gateway/reboot", "now"); code >= 0x80 {
		t.Fatalf("dashboard command refused, PUBACK 0x%02x", code)
	}
	if got := gw.Next(t); got != "now" {
		t.Errorf("gateway received %q, want the command", got)
	}
	if _, err := mqtttest.Dial(t, d.addr, credentials{Username: "sensor-gateway", Password: "wrong-password"}, "intruder"); err == nil {
		t.Error("a wrong password was accepted")
	}
}

// Changing a TopicACL narrows access on live sessions at once: the next
// message the dashboard would get is refused, without a pod restart.
func TestACLChangeAppliesToLiveSessions(t *testing.T) {
	d := deploySamples(t)
	gw := mqtttest.MustDial(t, d.addr, d.gateway, gatewayID)
	dash := mqtttest.MustDial(t, d.addr, d.dashboard, dashboardID)
	dash.Subscribe(t, "telemetry/#")
	gw.Publish(t, "telemetry/sensor-gateway/temp", "before")
	if got := dash.Next(t); got != "before" {
		t.Fatalf("got %q", got)
	}
	restarts := restartCount(t, d.ns)

	acl := &v1alpha1.TopicACL{}
	if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: d.ns, Name: "dashboard"}, acl); err != nil {
		t.Fatal(err)
	}
	acl.Spec.Rules[0].Topic = "telemetry/sensor-gateway/humidity" // no longer the temperature
	start := time.Now()
	if err := k8s.Update(context.Background(), acl); err != nil {
		t.Fatal(err)
	}
	// Enforced means the next delivery is checked against the new rules: a
	// temperature probe followed by a still-allowed humidity marker must
	// bring the marker alone (one publisher, one subscriber: in order).
	eventually(t, 5*time.Second, "the narrowed ACL on the live session", func() error {
		gw.Publish(t, "telemetry/sensor-gateway/temp", "probe")
		gw.Publish(t, "telemetry/sensor-gateway/humidity", "marker")
		if got := dash.Next(t); got != "marker" {
			dash.Next(t) // the marker behind it
			return fmt.Errorf("still delivered %q", got)
		}
		return nil
	})
	t.Logf("ACL change enforced on the live session within %v", time.Since(start).Round(time.Millisecond))
	eventually(t, 10*time.Second, "TopicACL Ready again", func() error {
		reason, err := readyReason(t, d.ns, "dashboard", &v1alpha1.TopicACL{})
		if err == nil && reason != "Enforced" {
			err = fmt.Errorf("reason %s", reason)
		}
		return err
	})
	if after := restartCount(t, d.ns); after != restarts {
		t.Errorf("the ACL change restarted the broker (%d -> %d restarts)", restarts, after)
	}
}

func restartCount(t *testing.T, ns string) int32 {
	t.Helper()
	var p corev1.Pod
	if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "telemetry-0"}, &p); err != nil {
		t.Fatal(err)
	}
	if len(p.Status.ContainerStatuses) == 0 {
		return -1
	}
	return p.Status.ContainerStatuses[0].RestartCount
}

// Deleting an MQTTUser ends its live session within a second, and it cannot
// log in again.
func TestDeletedUserIsDisconnected(t *testing.T) {
	d := deploySamples(t)
	gw := mqtttest.MustDial(t, d.addr, d.gateway, gatewayID)
	user := &v1alpha1.MQTTUser{}
	if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: d.ns, Name: "sensor-gateway"}, user); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := k8s.Delete(context.Background(), user); err != nil {
		t.Fatal(err)
	}
	select {
	case <-gw.Disconnected:
		t.Logf("session closed %v after the delete", time.Since(start).Round(time.Millisecond))
	case <-time.After(5 * time.Second):
		t.Fatal("the deleted user's session is still open")
	}
	if _, err := mqtttest.Dial(t, d.addr, d.gateway, "gateway-again"); err == nil {
		t.Error("a deleted user logged in again")
	}
}

// Rotating the password Secret of a user: the old password stops working,
// the new one works, the live session of the old one ends.
func TestPasswordSecretRotation(t *testing.T) {
	d := deploySamples(t)
	old := mqtttest.MustDial(t, d.addr, d.dashboard, "dashboard-old")
	var s corev1.Secret
	if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: d.ns, Name: "dashboard-password"}, &s); err != nil {
		t.Fatal(err)
	}
	const rotated = "a-completely-new-dashboard-passphrase"
	s.Data = map[string][]byte{"password": []byte(rotated)}
	if err := k8s.Update(context.Background(), &s); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the new password accepted", func() error {
		c, err := mqtttest.Dial(t, d.addr, credentials{Username: "dashboard", Password: rotated}, fmt.Sprintf("dash-%d", time.Now().UnixNano()))
		if err == nil {
			_ = c.Disconnect(&paho.Disconnect{})
		}
		return err
	})
	select {
	case <-old.Disconnected:
	case <-time.After(5 * time.Second):
		t.Error("the session logged in with the old password is still open")
	}
	if _, err := mqtttest.Dial(t, d.addr, d.dashboard, "dashboard-old-again"); err == nil {
		t.Error("the old password still works")
	}
}

// A broker pod that crashes comes back from its mounted files with every
// user and ACL, and the operator's status says it enforces them.
func TestBrokerRestartKeepsUsersAndACLs(t *testing.T) {
	d := deploySamples(t)
	if err := pods.Kill(d.ns, "telemetry-0"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	eventually(t, 30*time.Second, "the pod restarted", func() error {
		if restartCount(t, d.ns) < 1 {
			return fmt.Errorf("not restarted yet")
		}
		return pods.WaitReady(ctx, d.ns, "telemetry", 1)
	})
	gw := mqtttest.MustDial(t, d.addr, d.gateway, gatewayID)
	dash := mqtttest.MustDial(t, d.addr, d.dashboard, dashboardID)
	dash.Subscribe(t, "telemetry/#")
	gw.Publish(t, "telemetry/sensor-gateway/temp", "after-restart")
	if got := dash.Next(t); got != "after-restart" {
		t.Errorf("got %q", got)
	}
}

// An invalid ACL is refused by the API server and never reaches a pod: the
// revision the pods enforce does not move.
func TestInvalidACLNeverReachesAPod(t *testing.T) {
	d := deploySamples(t)
	before := authStatus(t, d.ns)
	bad := &unstructured.Unstructured{}
	if err := json.Unmarshal([]byte(`{"apiVersion":"broker.mqtt-operator.io/v1alpha1","kind":"TopicACL",
		"metadata":{"name":"bad"},"spec":{"brokerRef":{"name":"telemetry"},"subjects":{"allAuthenticated":true},
		"rules":[{"topic":"telemetry/#/all","access":"Subscribe"}]}}`), &bad.Object); err != nil {
		t.Fatal(err)
	}
	bad.SetNamespace(d.ns)
	err := k8s.Create(context.Background(), bad)
	if err == nil || !strings.Contains(err.Error(), "'#' must be the last level") {
		t.Fatalf("invalid ACL: %v", err)
	}
	if after := authStatus(t, d.ns); after.Revision != before.Revision || after.PodsInSync != 1 {
		t.Errorf("auth status moved: %+v -> %+v", before, after)
	}
}

func authStatus(t *testing.T, ns string) v1alpha1.AuthStatus {
	t.Helper()
	var b v1alpha1.MQTTBroker
	if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "telemetry"}, &b); err != nil {
		t.Fatal(err)
	}
	if b.Status.Auth == nil {
		t.Fatal("no auth status")
	}
	return *b.Status.Auth
}
