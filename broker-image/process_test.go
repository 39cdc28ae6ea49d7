package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	pahov3 "github.com/eclipse/paho.mqtt.golang"

	"github.com/mqtt-operator/mqtt-operator/internal/brokerconfig"
	"github.com/mqtt-operator/mqtt-operator/internal/passwordhash"
	"github.com/mqtt-operator/mqtt-operator/test/secretscan"
)

// These tests run the broker as the pod does: a separate process started
// from files, stopped by signals. The test binary re-executes itself as the
// broker, so no separate build is needed.

const (
	adminToken   = "test-admin-token-0123456789"
	alicePass    = "alice-generated-password-0123456789abcdef"
	bobPass      = "bob-generated-password-0123456789abcdefgh"
	runAsBroker  = "MQTT_BROKER_TEST_RUN_AS_BROKER"
	processLimit = 20 * time.Second
)

func TestMain(m *testing.M) {
	if os.Getenv(runAsBroker) == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// brokerFiles are a pod's mounted files and what goes into them.
type brokerFiles struct {
	config, bundle, token              string
	mqtt, health, admin                string
	cfg                                *brokerconfig.Config
	bundleGeneration                   int64
	aliceHashForTests, bobHashForTests string
	extraUsers                         []brokerconfig.User
	storageDir                         string
	durable                            bool
	dataLinks                          int
}

func newBrokerFiles(t *testing.T) *brokerFiles {
	t.Helper()
	dir := t.TempDir()
	salt := []byte("0123456789abcdef")
	ah, _ := passwordhash.HashGenerated(alicePass, salt)
	bh, _ := passwordhash.HashGenerated(bobPass, salt)
	f := &brokerFiles{
		config: filepath.Join(dir, "config", brokerconfig.FileName), bundle: filepath.Join(dir, "auth", brokerconfig.BundleFileName),
		token: filepath.Join(dir, "admin", "token"), mqtt: freeAddr(t), health: freeAddr(t), admin: freeAddr(t),
		aliceHashForTests: ah, bobHashForTests: bh, storageDir: filepath.Join(dir, "data"), bundleGeneration: 1,
	}
	for _, d := range []string{filepath.Dir(f.config), filepath.Dir(f.bundle), filepath.Dir(f.token), f.storageDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(f.token, []byte(adminToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	f.cfg = &brokerconfig.Config{
		Version:       brokerconfig.Version,
		Listeners:     []brokerconfig.Listener{{Name: "mqtt", Protocol: brokerconfig.ProtocolTCP, Address: f.mqtt}},
		HealthAddress: f.health, AdminAddress: f.admin,
		Limits: brokerconfig.Limits{
			MaxConnections: 1000, MaxPacketSize: 65536, MaxInflight: 1000, MaxQoS: 2, RetainAvailable: true,
			SessionExpirySeconds: 3600, MaxKeepaliveSeconds: 120, MaxSubscriptionsPerClient: 100,
		},
		Storage: brokerconfig.Storage{Path: f.storageDir},
	}
	return f
}

func (f *brokerFiles) authBundle() *brokerconfig.AuthBundle {
	return &brokerconfig.AuthBundle{
		Generation: f.bundleGeneration,
		Users: append([]brokerconfig.User{
			{Username: "alice", PasswordHash: f.aliceHashForTests}, {Username: "bob", PasswordHash: f.bobHashForTests},
		}, f.extraUsers...),
		ACLs: []brokerconfig.ACL{{Name: "test/all", Subjects: brokerconfig.Subjects{AllAuthenticated: true}, Rules: []brokerconfig.Rule{
			{Topic: "devices/#", Access: brokerconfig.AccessPublishSubscribe, Effect: brokerconfig.EffectAllow},
		}}},
	}
}

// swapIn writes data the way the kubelet updates a ConfigMap or Secret
// volume: a new timestamped directory, then an atomic rename of the ..data
// symlink that the visible file points through.
func (f *brokerFiles) swapIn(t *testing.T, path string, data []byte) {
	t.Helper()
	dir := filepath.Dir(path)
	f.dataLinks++
	ts := fmt.Sprintf("..%d", f.dataLinks)
	if err := os.MkdirAll(filepath.Join(dir, ts), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, ts, filepath.Base(path)), data, 0o600); err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(dir, "..data_tmp")
	_ = os.Remove(tmp)
	if err := os.Symlink(ts, tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(path); err != nil {
		if err := os.Symlink(filepath.Join("..data", filepath.Base(path)), path); err != nil {
			t.Fatal(err)
		}
	}
}

func (f *brokerFiles) writeConfig(t *testing.T) {
	t.Helper()
	f.cfg.Storage.Persistent = f.durable || f.cfg.Storage.Persistent
	f.cfg.Storage.Durable = f.durable
	data, err := brokerconfig.Marshal(f.cfg)
	if err != nil {
		t.Fatal(err)
	}
	f.swapIn(t, f.config, data)
}

func (f *brokerFiles) writeBundle(t *testing.T, b *brokerconfig.AuthBundle) {
	t.Helper()
	data, err := brokerconfig.MarshalBundle(b)
	if err != nil {
		t.Fatal(err)
	}
	f.swapIn(t, f.bundle, data)
}

// brokerProcess is a running broker and its combined output.
type brokerProcess struct {
	cmd  *exec.Cmd
	mu   sync.Mutex
	out  bytes.Buffer
	done chan error
}

func (p *brokerProcess) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.Write(b)
}

func (p *brokerProcess) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

func startProcess(t *testing.T, args ...string) *brokerProcess {
	t.Helper()
	return startProcessEnv(t, nil, args...)
}

func startProcessEnv(t *testing.T, env []string, args ...string) *brokerProcess {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	p := &brokerProcess{done: make(chan error, 1)}
	p.cmd = exec.Command(exe, args...)
	p.cmd.Env = append(append(os.Environ(), runAsBroker+"=1"), env...)
	p.cmd.Stdout, p.cmd.Stderr = p, p
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.done
		secretscan.Absent(t, "broker's output", p.output(), map[string]string{
			"alice's password": alicePass, "bob's password": bobPass, "the admin token": adminToken,
		})
		if t.Failed() {
			t.Logf("broker output:\n%s", p.output())
		}
	})
	return p
}

func (f *brokerFiles) start(t *testing.T, extraArgs ...string) *brokerProcess {
	t.Helper()
	p := startProcess(t, append([]string{"--config", f.config, "--auth-bundle", f.bundle, "--admin-token-file", f.token, "--drain-period", "1s"}, extraArgs...)...)
	waitFor(t, "broker ready", func() bool { return httpStatus(f.health, "/readyz") == http.StatusOK })
	return p
}

func httpStatus(addr, path string) int {
	c := http.Client{Timeout: time.Second}
	resp, err := c.Get("http://" + addr + path)
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode
}

// waitFor polls cond until it holds or processLimit passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(processLimit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func connect(addr, user, password, clientID string, clean bool) (pahov3.Client, error) {
	o := pahov3.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(clientID).SetUsername(user).SetPassword(password).
		SetCleanSession(clean).SetAutoReconnect(false).SetConnectRetry(false).SetConnectTimeout(3 * time.Second).
		SetProtocolVersion(4).SetMaxResumePubInFlight(1000)
	c := pahov3.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(5 * time.Second) {
		return nil, fmt.Errorf("connect timed out")
	}
	return c, tok.Error()
}

func mustConnect(t *testing.T, addr, user, password, clientID string, clean bool) pahov3.Client {
	t.Helper()
	c, err := connect(addr, user, password, clientID, clean)
	if err != nil {
		t.Fatalf("%s: %v", user, err)
	}
	t.Cleanup(func() { c.Disconnect(0) })
	return c
}

// logLines returns the JSON log lines containing s.
func logLines(out, s string) []string {
	var lines []string
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		if strings.Contains(sc.Text(), s) {
			lines = append(lines, sc.Text())
		}
	}
	return lines
}

func kill(t *testing.T, p *brokerProcess) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-p.done
	p.done <- nil // for the cleanup's receive
}
