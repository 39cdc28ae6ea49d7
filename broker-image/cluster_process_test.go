package main

import (
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	pahov3 "github.com/eclipse/paho.mqtt.golang"

	"github.com/mqtt-operator/mqtt-operator/internal/brokerconfig"
)

// Three broker processes, one loopback address each (127.0.0.1-3), form one
// cluster as the pods of a StatefulSet do: one config but for the node name,
// which each takes from MQTT_CLUSTER_NODE_NAME. One is killed with SIGKILL
// mid-traffic; the others keep serving, and it rejoins when restarted.
func TestClusterProcessesSurviveAKilledPod(t *testing.T) {
	var peers []string
	for i := 1; i <= 3; i++ {
		l, err := net.Listen("tcp", "127.0.0."+strconv.Itoa(i)+":0")
		if err != nil {
			t.Skipf("no loopback address 127.0.0.%d: %v", i, err)
		}
		peers = append(peers, l.Addr().String())
		_ = l.Close()
	}
	password := filepath.Join(t.TempDir(), "cluster-password")
	if err := os.WriteFile(password, []byte("a-cluster-secret-0123456789\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	files := make([]*brokerFiles, 3)
	procs := make([]*brokerProcess, 3)
	start := func(i int) {
		f := files[i]
		procs[i] = startProcessEnv(t, []string{brokerconfig.NodeNameEnv + "=pod-" + strconv.Itoa(i)},
			"--config", f.config, "--auth-bundle", f.bundle, "--admin-token-file", f.token, "--drain-period", "1s")
	}
	for i := range 3 {
		f := newBrokerFiles(t)
		f.cfg.Cluster = &brokerconfig.Cluster{Name: "proc-cluster", Address: peers[i], Peers: peers, PasswordFile: password}
		f.writeConfig(t)
		f.writeBundle(t, f.authBundle())
		files[i] = f
		start(i)
	}
	for i, f := range files {
		waitFor(t, "pod-"+strconv.Itoa(i)+" ready", func() bool { return httpStatus(f.health, "/readyz") == http.StatusOK })
	}
	got := make(chan string, 100)
	sub := mustConnect(t, files[1].mqtt, "alice", alicePass, "sub", true)
	if tok := sub.Subscribe("devices/#", 1, func(_ pahov3.Client, m pahov3.Message) { got <- string(m.Payload()) }); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal("subscribe failed")
	}
	pub := mustConnect(t, files[0].mqtt, "bob", bobPass, "pub", true)
	send := func(payload string) {
		t.Helper()
		if tok := pub.Publish("devices/x", 1, false, payload); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatalf("publish %s failed", payload)
		}
		select {
		case m := <-got:
			if m != payload {
				t.Fatalf("got %q, want %q", m, payload)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s not delivered across processes", payload)
		}
	}
	send("before")

	kill(t, procs[2])
	send("after the kill")
	waitFor(t, "pod-0 to see pod-2 gone", func() bool {
		code, st := adminRequest(t, files[0], http.MethodGet, "/v1/cluster", adminToken, nil)
		return code == http.StatusOK && st["joined"] == false
	})
	if httpStatus(files[0].health, "/readyz") != http.StatusOK {
		t.Fatal("a survivor left the Service when one pod died")
	}

	start(2)
	waitFor(t, "pod-2 ready again", func() bool { return httpStatus(files[2].health, "/readyz") == http.StatusOK })
	waitFor(t, "pod-0 joined again", func() bool {
		_, st := adminRequest(t, files[0], http.MethodGet, "/v1/cluster", adminToken, nil)
		return st["joined"] == true
	})
	sub2 := mustConnect(t, files[2].mqtt, "alice", alicePass, "sub2", true)
	got2 := make(chan string, 10)
	if tok := sub2.Subscribe("devices/#", 1, func(_ pahov3.Client, m pahov3.Message) { got2 <- string(m.Payload()) }); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal("subscribe on the restarted pod failed")
	}
	send("after the restart")
	select {
	case m := <-got2:
		if m != "after the restart" {
			t.Fatalf("restarted pod got %q", m)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the restarted pod gets nothing")
	}
}
