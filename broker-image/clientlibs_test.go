package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mqtt-operator/mqtt-operator/internal/brokerconfig"
)

// The broker against client libraries other than Go's paho: MQTT.js 5 (npm)
// and Python's paho-mqtt 1.6 (Debian's python3-paho-mqtt), over TCP and
// WebSocket, MQTT 3.1.1 and 5. Each scenario is a script in test/clients
// that prints "ok: ..." or "FAIL: ..."; docs/conformance.md names them.
// hack/ensure-client-libs.sh installs both; make test requires them
// (MQTT_CLIENT_LIBS_REQUIRED=1), a plain go test skips without them.

type clientLib struct {
	name string
	cmd  func(ctx context.Context, scenario string) *exec.Cmd
}

func clientLibs(t *testing.T) []clientLib {
	t.Helper()
	root, err := filepath.Abs("../test/clients")
	if err != nil {
		t.Fatal(err)
	}
	var libs []clientLib
	var missing []string
	node, errNode := exec.LookPath("node")
	if _, err := os.Stat(filepath.Join(root, "js", "node_modules", "mqtt", "package.json")); errNode != nil || err != nil {
		missing = append(missing, "MQTT.js (node and test/clients/js/node_modules)")
	} else {
		libs = append(libs, clientLib{name: "mqttjs", cmd: func(ctx context.Context, s string) *exec.Cmd {
			return exec.CommandContext(ctx, node, filepath.Join(root, "js", "scenario.mjs"), s)
		}})
	}
	// Debian's python3 is the one its python3-paho-mqtt package installs into.
	if err := exec.Command("/usr/bin/python3", "-c", "import paho.mqtt.client").Run(); err != nil {
		missing = append(missing, "paho-mqtt (/usr/bin/python3 with python3-paho-mqtt)")
	} else {
		libs = append(libs, clientLib{name: "paho-python", cmd: func(ctx context.Context, s string) *exec.Cmd {
			return exec.CommandContext(ctx, "/usr/bin/python3", filepath.Join(root, "python", "scenario.py"), s)
		}})
	}
	if len(missing) > 0 {
		msg := fmt.Sprintf("missing %s: run hack/ensure-client-libs.sh", strings.Join(missing, ", "))
		if os.Getenv("MQTT_CLIENT_LIBS_REQUIRED") == "1" {
			t.Fatal(msg)
		}
		if len(libs) == 0 {
			t.Skip(msg)
		}
		t.Log(msg)
	}
	return libs
}

func TestClientLibraries(t *testing.T) {
	libs := clientLibs(t)
	f := newBrokerFiles(t)
	ws := freeAddr(t)
	f.cfg.Listeners = append(f.cfg.Listeners, brokerconfig.Listener{Name: "ws", Protocol: brokerconfig.ProtocolWebSocket, Address: ws, Path: "/mqtt"})
	f.writeConfig(t)
	f.writeBundle(t, f.authBundle()) // alice may publish and subscribe under devices/#, nothing else
	f.start(t)

	type run struct {
		scenario string
		version  int
		ws       bool
		want     string // a part of the "ok:" line, when the scenario reports a value
	}
	runs := []run{
		{scenario: "pubsub", version: 4}, {scenario: "pubsub", version: 5},
		{scenario: "pubsub", version: 4, ws: true}, {scenario: "pubsub", version: 5, ws: true},
		{scenario: "shared", version: 4}, {scenario: "shared", version: 5, ws: true}, // item 1
		{scenario: "pubackProps", version: 5},                                                                          // item 2
		{scenario: "receiveMaximum", version: 5},                                                                       // item 3
		{scenario: "topicAlias", version: 5},                                                                           // item 4
		{scenario: "serverLimits", version: 5},                                                                         // item 5
		{scenario: "deniedPublish", version: 4},                                                                        // item 6
		{scenario: "willDelay", version: 5},                                                                            // item 7
		{scenario: "badPassword", version: 4, want: "code=5"}, {scenario: "badPassword", version: 5, want: "code=134"}, // item 14
	}
	for _, lib := range libs {
		for _, r := range runs {
			transport := "tcp"
			url := "mqtt://" + f.mqtt
			if r.ws {
				transport, url = "ws", "ws://"+ws+"/mqtt"
			}
			t.Run(fmt.Sprintf("%s/%s/v%d/%s", lib.name, r.scenario, r.version, transport), func(t *testing.T) {
				ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
				defer cancel()
				cmd := lib.cmd(ctx, r.scenario)
				cmd.Env = append(os.Environ(),
					"MQTT_URL="+url, fmt.Sprintf("MQTT_VERSION=%d", r.version),
					"MQTT_USER=alice", "MQTT_PASSWORD="+alicePass,
					"MQTT_PREFIX=devices/"+lib.name+"/"+r.scenario, "MQTT_DENIED=forbidden/"+lib.name,
					fmt.Sprintf("MQTT_MAX_PACKET=%d", f.cfg.Limits.MaxPacketSize))
				out, err := cmd.CombinedOutput()
				text := strings.TrimSpace(string(out))
				if err != nil || !strings.Contains(text, "ok: ") {
					t.Fatalf("%s %s failed (%v):\n%s", lib.name, r.scenario, err, text)
				}
				if r.want != "" && !strings.Contains(text, r.want) {
					t.Fatalf("%s %s: got %q, want %q", lib.name, r.scenario, text, r.want)
				}
				t.Log(text)
			})
		}
	}
}
