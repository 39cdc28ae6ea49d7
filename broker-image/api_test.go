package main

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/mqtt-operator/mqtt-operator/internal/brokerconfig"
)

func adminRequest(t *testing.T, f *brokerFiles, method, path, token string, body []byte) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+f.admin+path, strings.NewReader(string(body)))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	var out map[string]any
	_ = json.Unmarshal(data, &out)
	return resp.StatusCode, out
}

func TestHealthReadinessAndMetrics(t *testing.T) {
	f := newBrokerFiles(t)
	f.writeConfig(t)
	// No auth bundle yet: alive, but not ready, and nobody gets in.
	startProcessEnv(t, []string{"GOGC="}, "--config", f.config, "--auth-bundle", f.bundle, "--admin-token-file", f.token)
	waitFor(t, "healthz", func() bool { return httpStatus(f.health, "/healthz") == http.StatusOK })
	if s := httpStatus(f.health, "/readyz"); s != http.StatusServiceUnavailable {
		t.Errorf("/readyz = %d without an auth bundle, want 503", s)
	}
	if _, err := connect(f.mqtt, "alice", alicePass, "early", true); err == nil {
		t.Error("a client got in before any auth bundle was loaded")
	}
	f.writeBundle(t, f.authBundle())
	waitFor(t, "ready once the bundle file appears", func() bool { return httpStatus(f.health, "/readyz") == http.StatusOK })

	alice := mustConnect(t, f.mqtt, "alice", alicePass, "alice-metrics", true)
	alice.Publish("devices/alice/temp", 1, false, "21").Wait()
	_, _ = connect(f.mqtt, "alice", "wrong-password", "alice-wrong", true)
	resp, err := http.Get("http://" + f.health + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`mqtt_clients_connected 1`, `mqtt_messages_received_total{qos="1"} 1`, `mqtt_auth_total{result="failure"} 2`,
		`mqtt_auth_bundle_info{revision="`, `mqtt_reloads_total{result="success"}`, `mqtt_connections_accepted_total`,
		`go_goroutines`, `process_resident_memory_bytes`, `mqtt_flow_waits_total 0`, `mqtt_flow_slow_subscribers_total 0`,
		"go_gc_gogc_percent 200", // the broker's own default (main.go)
		"mqtt_ready 1", "mqtt_max_connections ",
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

func TestAdminAPI(t *testing.T) {
	f := newBrokerFiles(t)
	f.writeConfig(t)
	f.writeBundle(t, f.authBundle())
	f.start(t)

	for _, token := range []string{"", "wrong", adminToken + "x"} {
		if code, _ := adminRequest(t, f, http.MethodGet, "/v1/auth-bundle/revision", token, nil); code != http.StatusUnauthorized {
			t.Errorf("token %q: status %d, want 401", token, code)
		}
	}
	code, rev := adminRequest(t, f, http.MethodGet, "/v1/auth-bundle/revision", adminToken, nil)
	if code != http.StatusOK || rev["revision"] == "" {
		t.Fatalf("revision: %d %v", code, rev)
	}

	// A push with a new user takes effect at once; the revision follows.
	f.bundleGeneration = 2
	f.extraUsers = []brokerconfig.User{{Username: "carol", PasswordHash: f.bobHashForTests}}
	data, _ := brokerconfig.MarshalBundle(f.authBundle())
	code, out := adminRequest(t, f, http.MethodPut, "/v1/auth-bundle", adminToken, data)
	if code != http.StatusOK {
		t.Fatalf("push: %d %v", code, out)
	}
	if _, err := connect(f.mqtt, "carol", bobPass, "carol", true); err != nil {
		t.Errorf("carol not admitted right after the push: %v", err)
	}
	if _, got := adminRequest(t, f, http.MethodGet, "/v1/auth-bundle/revision", adminToken, nil); got["revision"] != out["revision"] {
		t.Errorf("revision %v after pushing %v", got["revision"], out["revision"])
	}

	// Invalid and stale bundles are refused with distinct statuses, and the
	// pushed one stays in force.
	if code, _ := adminRequest(t, f, http.MethodPut, "/v1/auth-bundle", adminToken, []byte(`{"version":"nope"}`)); code != http.StatusUnprocessableEntity {
		t.Errorf("invalid bundle: %d, want 422", code)
	}
	f.bundleGeneration = 1
	f.extraUsers = nil
	old, _ := brokerconfig.MarshalBundle(f.authBundle())
	if code, out := adminRequest(t, f, http.MethodPut, "/v1/auth-bundle", adminToken, old); code != http.StatusConflict || out["generation"] != float64(2) {
		t.Errorf("stale bundle: %d %v, want 409 with the generation in force (2)", code, out)
	}
	if _, err := connect(f.mqtt, "carol", bobPass, "carol-2", true); err != nil {
		t.Errorf("a refused push undid the bundle in force: %v", err)
	}
}

func TestFilesReloadInPlace(t *testing.T) {
	f := newBrokerFiles(t)
	f.writeConfig(t)
	f.writeBundle(t, f.authBundle())
	p := f.start(t)

	// A new user arrives through the mounted file (the operator's push
	// missed, say): admitted within the watch's reaction time.
	f.bundleGeneration = 2
	f.extraUsers = []brokerconfig.User{{Username: "dave", PasswordHash: f.bobHashForTests}}
	f.writeBundle(t, f.authBundle())
	waitFor(t, "dave admitted from the file", func() bool {
		c, err := connect(f.mqtt, "dave", bobPass, "dave", true)
		if err == nil {
			c.Disconnect(0)
		}
		return err == nil
	})

	// A broken file is refused; the bundle in force stays.
	f.swapIn(t, f.bundle, []byte(`{"version":`))
	waitFor(t, "the refusal to be logged", func() bool { return len(logLines(p.output(), "refused auth bundle")) > 0 })
	if _, err := connect(f.mqtt, "dave", bobPass, "dave-2", true); err != nil {
		t.Errorf("a broken bundle file undid the bundle in force: %v", err)
	}

	// A limit changes in place: the same process now refuses what it took.
	alice := mustConnect(t, f.mqtt, "alice", alicePass, "alice-live", true)
	f.cfg.Limits.MaxConnections = 1
	f.writeConfig(t)
	waitFor(t, "the new limit", func() bool {
		c, err := connect(f.mqtt, "bob", bobPass, "bob-over-limit", true)
		if err == nil {
			c.Disconnect(0)
		}
		return err != nil
	})
	if !alice.IsConnectionOpen() {
		t.Error("lowering maxConnections dropped a connected client")
	}
	// The limit applies before the line is logged, and the broker's output
	// reaches the test through a pipe: the line may come a moment later.
	waitFor(t, "the reload to be logged", func() bool { return len(logLines(p.output(), "configuration reloaded in place")) > 0 })
}

func TestSIGTERMDrainsAndExitsCleanly(t *testing.T) {
	f := newBrokerFiles(t)
	f.writeConfig(t)
	f.writeBundle(t, f.authBundle())
	p := f.start(t)
	conn, err := dialV5(f.mqtt, "alice", alicePass)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case d := <-conn.disconnect:
		if d.ReasonCode != 0x9C {
			t.Errorf("DISCONNECT reason 0x%02x, want 0x9C (use another server)", d.ReasonCode)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the MQTT 5 client was not told to go elsewhere")
	}
	select {
	case err := <-p.done:
		if err != nil {
			t.Errorf("broker exited with %v after SIGTERM, want status 0", err)
		}
		p.done <- nil
	case <-time.After(10 * time.Second):
		t.Fatal("broker did not exit within its drain period")
	}
}

func TestStandaloneAllowAnonymous(t *testing.T) {
	addr := freeAddr(t)
	p := startProcess(t, "--allow-anonymous", "--listen", addr)
	var c interface{ Disconnect(uint) }
	waitFor(t, "standalone broker", func() bool {
		cl, err := connect(addr, "", "", "anon", true)
		if err == nil {
			c = cl
		}
		return err == nil
	})
	c.Disconnect(0)
	if len(logLines(p.output(), "STANDALONE DEVELOPMENT MODE")) == 0 {
		t.Error("no loud warning about --allow-anonymous")
	}
}

// v5conn is a minimal MQTT 5 client that reports server DISCONNECTs.
type v5conn struct {
	*paho.Client
	disconnect chan *paho.Disconnect
}

func dialV5(addr, user, password string) (*v5conn, error) {
	conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return nil, err
	}
	c := &v5conn{disconnect: make(chan *paho.Disconnect, 1)}
	c.Client = paho.NewClient(paho.ClientConfig{Conn: conn, OnServerDisconnect: func(d *paho.Disconnect) { c.disconnect <- d }})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = c.Connect(ctx, &paho.Connect{ClientID: user + "-v5", KeepAlive: 30, CleanStart: true,
		Username: user, UsernameFlag: true, Password: []byte(password), PasswordFlag: true})
	if err != nil {
		_ = conn.Close()
		return nil, err
	}
	return c, nil
}

// The pod passes its container memory limit; the broker keeps the Go heap
// under 90% of it rather than running into the OOM killer.
func TestMemoryLimitFromTheContainer(t *testing.T) {
	addr := freeAddr(t)
	p := startProcessEnv(t, []string{"MQTT_BROKER_MEMORY_LIMIT=1073741824", "GOMEMLIMIT="}, "--allow-anonymous", "--listen", addr)
	waitFor(t, "the memory limit to be logged", func() bool {
		return len(logLines(p.output(), `"goMemLimitBytes":966367638`)) == 1
	})
}

// A container restart starts from the bundle last pushed, not from the older
// file the kubelet has not refreshed yet: a user added by the push can log
// in at once, and a user removed by it cannot.
func TestRestartStartsFromThePushedBundle(t *testing.T) {
	f := newBrokerFiles(t)
	f.writeConfig(t)
	f.writeBundle(t, f.authBundle()) // generation 1: alice and bob
	p := f.start(t)
	f.bundleGeneration = 2
	pushed := f.authBundle()
	pushed.Users = []brokerconfig.User{{Username: "alice", PasswordHash: f.aliceHashForTests}, {Username: "carol", PasswordHash: f.bobHashForTests}}
	data, _ := brokerconfig.MarshalBundle(pushed)
	if code, out := adminRequest(t, f, http.MethodPut, "/v1/auth-bundle", adminToken, data); code != http.StatusOK {
		t.Fatalf("push: %d %v", code, out)
	}
	kill(t, p)

	p2 := f.start(t) // the mounted file still says generation 1
	if _, err := connect(f.mqtt, "carol", bobPass, "carol", true); err != nil {
		t.Errorf("the pushed user is unknown after the restart: %v", err)
	}
	if _, err := connect(f.mqtt, "bob", bobPass, "bob", true); err == nil {
		t.Error("a user the push removed logged in after the restart")
	}
	if len(logLines(p2.output(), "applied the auth bundle cached before the restart")) != 1 {
		t.Error("the restart did not start from the cached bundle")
	}
}

// A broker deleted and created again under the same name gets the old
// one's volume, with the bundle the old one cached: a higher generation than
// the new broker's first bundle. The new broker must start from its own
// bundle: the old one's users (a deleted one here) may not log in, and its
// own users may.
func TestRecreatedBrokerIgnoresTheOldBrokersCache(t *testing.T) {
	f := newBrokerFiles(t)
	f.writeConfig(t)
	f.writeBundle(t, f.authBundle()) // generation 1: alice and bob
	p := f.start(t, "--incarnation=uid-old")
	f.bundleGeneration = 7
	pushed := f.authBundle()
	pushed.Users = []brokerconfig.User{{Username: "carol", PasswordHash: f.bobHashForTests}}
	data, _ := brokerconfig.MarshalBundle(pushed)
	if code, out := adminRequest(t, f, http.MethodPut, "/v1/auth-bundle", adminToken, data); code != http.StatusOK {
		t.Fatalf("push: %d %v", code, out)
	}
	kill(t, p)

	f.bundleGeneration = 1
	f.writeBundle(t, f.authBundle()) // the new broker's first bundle: alice and bob
	p2 := f.start(t, "--incarnation=uid-new")
	if _, err := connect(f.mqtt, "carol", bobPass, "carol", true); err == nil {
		t.Error("a user of the deleted broker logged in to its successor")
	}
	if _, err := connect(f.mqtt, "bob", bobPass, "bob", true); err != nil {
		t.Errorf("a user of the new broker was refused: %v", err)
	}
	if len(logLines(p2.output(), "deleted the auth bundle cached by an earlier broker")) != 1 {
		t.Error("the old broker's cache was not reported as deleted")
	}
}

// The admin token rotates without a restart: once the mounted file holds a
// new token, the new one is accepted and the old one refused.
func TestAdminTokenRotatesInPlace(t *testing.T) {
	f := newBrokerFiles(t)
	f.writeConfig(t)
	f.writeBundle(t, f.authBundle())
	f.start(t)
	if code, _ := adminRequest(t, f, http.MethodGet, "/v1/auth-bundle/revision", adminToken, nil); code != http.StatusOK {
		t.Fatalf("first token: %d", code)
	}
	rotated := adminToken + "-rotated"
	if err := os.WriteFile(f.token, []byte(rotated+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, _ := adminRequest(t, f, http.MethodGet, "/v1/auth-bundle/revision", rotated, nil); code != http.StatusOK {
		t.Errorf("rotated token: %d, want 200", code)
	}
	if code, _ := adminRequest(t, f, http.MethodGet, "/v1/auth-bundle/revision", adminToken, nil); code != http.StatusUnauthorized {
		t.Errorf("old token after the rotation: %d, want 401", code)
	}
}
