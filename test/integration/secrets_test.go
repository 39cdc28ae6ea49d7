package integration

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/mqtt-operator/mqtt-operator/api/v1alpha1"
	"github.com/mqtt-operator/mqtt-operator/internal/brokerconfig"
	"github.com/mqtt-operator/mqtt-operator/test/mqtttest"
	"github.com/mqtt-operator/mqtt-operator/test/secretscan"
)

// A password may live only in its own Secret and the user's connection
// Secret. It must not appear in any log line (operator or broker), event,
// status, ConfigMap, pod, or in the auth bundle the pods mount.
func TestPasswordsAppearNowhereElse(t *testing.T) {
	d := deploySamples(t)
	// Exercise the paths that log: logins, a refused login, a rotation.
	mqtttest.MustDial(t, d.addr, d.gateway, gatewayID)
	_, _ = mqtttest.Dial(t, d.addr, credentials{Username: "dashboard", Password: d.gateway.Password}, "wrong")
	passwords := map[string]string{"the gateway's password": d.gateway.Password, "the dashboard's password": d.dashboard.Password}

	ctx := context.Background()
	lists := map[string]client.ObjectList{
		"events": &eventsv1.EventList{}, "configmaps": &corev1.ConfigMapList{}, "pods": &corev1.PodList{},
		"statefulsets": &appsv1.StatefulSetList{}, "brokers": &v1alpha1.MQTTBrokerList{},
		"users": &v1alpha1.MQTTUserList{}, "acls": &v1alpha1.TopicACLList{},
	}
	places := map[string]string{
		"operator log": oplog.String(),
		"broker log":   pods.Output(d.ns, "telemetry-0"),
	}
	for name, list := range lists {
		if err := k8s.List(ctx, list, client.InNamespace(d.ns)); err != nil {
			t.Fatal(err)
		}
		data, _ := json.Marshal(list)
		places[name] = string(data)
	}
	var secrets corev1.SecretList
	if err := k8s.List(ctx, &secrets, client.InNamespace(d.ns)); err != nil {
		t.Fatal(err)
	}
	for _, s := range secrets.Items {
		switch s.Name {
		case "sensor-gateway-mqtt", "dashboard-mqtt", "dashboard-password":
			continue // where passwords belong
		}
		data := string(s.Data[brokerconfig.BundleFileName])
		if bundle, err := brokerconfig.ParseBundle(s.Data[brokerconfig.BundleFileName]); err == nil {
			raw, _ := json.Marshal(bundle)
			data = string(raw)
		}
		for k, v := range s.Data {
			data += k + string(v)
		}
		places["Secret "+s.Name] = data
	}
	if len(places["broker log"]) == 0 || !strings.Contains(places["operator log"], "telemetry") {
		t.Fatal("the logs to scan are empty: the test would prove nothing")
	}
	for where, text := range places {
		secretscan.Absent(t, where, text, passwords)
	}
}
