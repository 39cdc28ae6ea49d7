package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/client-go/tools/clientcmd"
)

// make dev is the README's first command until the kind demo exists: it must
// keep working. This runs it end to end (control plane, operator, broker pods
// as local processes, samples, a real publish/subscribe) and checks what it
// tells the user and the kubeconfig it leaves.
func TestDevCommand(t *testing.T) {
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	var out bytes.Buffer
	if err := run(context.Background(), &out, kubeconfig, true); err != nil {
		t.Fatalf("make dev failed: %v\n%s", err, out.String())
	}
	for _, want := range []string{
		"Applied MQTTBroker demo/telemetry",
		"Applied MQTTUser demo/sensor-gateway",
		"Applied TopicACL demo/sensor-gateway",
		"Applied MQTTUser demo/dashboard",
		"StatefulSet          telemetry",
		"ConfigMap            telemetry-config",
		"NetworkPolicy        telemetry",
		"Secret               sensor-gateway-mqtt",
		"Pod                  telemetry-0",
		"endpoint tcp: mqtt://telemetry.demo.svc:1883",
		"AuthSynced   True",
		"sensor-gateway PUBLISH   telemetry/other-gateway/temperature  refused",
		"dashboard      received  telemetry/sensor-gateway/temperature = 21.5",
		"export KUBECONFIG=" + kubeconfig,
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	data, err := os.ReadFile(kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := clientcmd.Load(data); err != nil {
		t.Errorf("kubeconfig does not load: %v", err)
	}
}
