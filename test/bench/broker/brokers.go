package main

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/mqtt-operator/mqtt-operator/internal/brokerconfig"
	"github.com/mqtt-operator/mqtt-operator/test/bench/benchproc"
	"github.com/mqtt-operator/mqtt-operator/test/bench/broker/mqttc"
	"github.com/mqtt-operator/mqtt-operator/test/bench/measure"
)

// Broker names as they appear in the output.
const (
	ours      = "ours"
	mochi     = "mochi"
	mosquitto = "mosquitto"
)

// target is a running broker as the load generator sees it.
type target struct {
	*process
	// creds returns the login of the i-th client; empty for the baselines,
	// which allow anonymous clients.
	creds func(i int) (username, password string)
	// ours only
	healthAddr, adminAddr, token string
	generation                   int64
}

func anonymous(int) (string, string) { return "", "" }

// options of a client of t.
func (t *target) options(i int, clientID string, keepalive uint16, buffer int) mqttc.Options {
	u, p := t.creds(i)
	return mqttc.Options{ClientID: clientID, Username: u, Password: p, KeepaliveSeconds: keepalive, LocalIP: sourceIP(), BufferSize: buffer}
}

// waitReady polls with a real CONNECT until the broker accepts clients.
func (t *target) waitReady() error {
	return measure.WaitFor(20*time.Second, func() error {
		if err := t.Alive(); err != nil {
			return err
		}
		c, err := mqttc.Dial(t.addr, t.options(0, "bench-ready-probe-"+t.Name, 30, 512))
		if err != nil {
			return err
		}
		return c.Disconnect()
	})
}

type setup struct {
	dir                  string
	oursBin, mochiBin    string
	mosquittoBin, passwd string
	users                []user
	oursMaxQueued        int32
	oursLogLevel         string
	profileDir           string        // CPU profiles of ours, when set
	clusterDrain         time.Duration // --drain-period of clustered pods (1 s for the others)
	mosquittoNoDelay     bool
	maxConnections       int32
}

func (s *setup) file(name string, data []byte) (string, error) {
	path := filepath.Join(s.dir, name)
	return path, os.WriteFile(path, data, 0o644)
}

func ports(n int) ([]int, error) {
	out := make([]int, n)
	for i := range out {
		p, err := benchproc.FreePort()
		if err != nil {
			return nil, err
		}
		out[i] = p
	}
	return out, nil
}

func loopback(port int) string { return "127.0.0.1:" + strconv.Itoa(port) }

// startOurs runs the broker built from ./broker-image as a pod would: a
// configuration rendered with brokerconfig.Marshal, an auth bundle from
// brokerconfig.MarshalBundle, and an admin token; auth, ACLs and metrics on.
func (s *setup) startOurs(name string, bundle *brokerconfig.AuthBundle) (*target, error) {
	return s.startOursWithStorage(name, bundle, brokerconfig.Storage{Path: s.dir})
}

// startOursWithStorage starts ours with the given storage settings.
func (s *setup) startOursWithStorage(name string, bundle *brokerconfig.AuthBundle, storage brokerconfig.Storage) (*target, error) {
	t, err := s.launchOurs(name, bundle, func(cfg *brokerconfig.Config) { cfg.Storage = storage })
	if err != nil {
		return nil, err
	}
	if err := t.waitUp(); err != nil {
		t.Stop()
		return nil, err
	}
	return t, nil
}

// launchOurs writes the files of ours and starts it, without waiting for
// it; mutate, if set, adjusts the configuration first (storage, cluster).
func (s *setup) launchOurs(name string, bundle *brokerconfig.AuthBundle, mutate func(*brokerconfig.Config)) (*target, error) {
	p, err := ports(3)
	if err != nil {
		return nil, err
	}
	cfg := &brokerconfig.Config{
		Version:       brokerconfig.Version,
		Listeners:     []brokerconfig.Listener{{Name: "mqtt", Protocol: brokerconfig.ProtocolTCP, Address: loopback(p[0])}},
		HealthAddress: loopback(p[1]),
		AdminAddress:  loopback(p[2]),
		// The MQTTBroker defaults, except maxConnections (room for the idle
		// test) and maxQueuedMessages (see --ours-max-queued).
		Limits: brokerconfig.Limits{
			MaxConnections: s.maxConnections, MaxPacketSize: 1 << 20, MaxInflight: 64, MaxQueuedMessages: s.oursMaxQueued, MaxQoS: 2,
			RetainAvailable: true, SessionExpirySeconds: 7200, MaxKeepaliveSeconds: 300, MaxSubscriptionsPerClient: 100,
		},
		Storage: brokerconfig.Storage{Path: s.dir},
	}
	if mutate != nil {
		mutate(cfg)
	}
	cfgData, err := brokerconfig.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	bundleData, err := brokerconfig.MarshalBundle(bundle)
	if err != nil {
		return nil, err
	}
	tokenBytes := make([]byte, 16)
	if _, err := rand.Read(tokenBytes); err != nil {
		return nil, err
	}
	token := hex.EncodeToString(tokenBytes)
	cfgPath, err := s.file(name+".broker.yaml", cfgData)
	if err != nil {
		return nil, err
	}
	bundlePath, err := s.file(name+".auth.json", bundleData)
	if err != nil {
		return nil, err
	}
	tokenPath, err := s.file(name+".token", []byte(token+"\n"))
	if err != nil {
		return nil, err
	}
	drain := "1s"
	if cfg.Cluster != nil && s.clusterDrain > 0 {
		drain = s.clusterDrain.String()
	}
	cmd := exec.Command(s.oursBin, "--config", cfgPath, "--auth-bundle", bundlePath, "--admin-token-file", tokenPath,
		"--log-level", s.oursLogLevel, "--drain-period", drain)
	if s.profileDir != "" {
		cmd.Env = append(os.Environ(), "MQTT_BROKER_CPUPROFILE="+filepath.Join(s.profileDir, name+".pprof"))
	}
	p0, err := benchproc.Start(name, filepath.Join(s.dir, name+".log"), cmd)
	if err != nil {
		return nil, err
	}
	proc := &process{Process: p0, addr: cfg.Listeners[0].Address}
	users := s.users
	return &target{process: proc, healthAddr: cfg.HealthAddress, adminAddr: cfg.AdminAddress, token: token, generation: bundle.Generation,
		creds: func(i int) (string, string) { u := users[i%len(users)]; return u.name, u.password }}, nil
}

// waitUp waits until ours takes MQTT clients and reports ready (for a pod
// of a cluster: it has joined the others).
func (t *target) waitUp() error {
	if err := t.waitReady(); err != nil {
		return fmt.Errorf("%s never accepted a client: %w", t.Name, err)
	}
	if err := measure.WaitFor(20*time.Second, func() error { _, err := httpGet("http://" + t.healthAddr + "/readyz"); return err }); err != nil {
		return fmt.Errorf("%s never became ready: %w", t.Name, err)
	}
	return nil
}

// pushBundle replaces the auth bundle of our broker through its admin API,
// as the operator does, and returns once the broker reports the new revision.
func (t *target) pushBundle(b *brokerconfig.AuthBundle) error {
	t.generation++
	b.Generation = t.generation
	data, err := brokerconfig.MarshalBundle(b)
	if err != nil {
		return err
	}
	req, err := http.NewRequest(http.MethodPut, "http://"+t.adminAddr+"/v1/auth-bundle", bytes.NewReader(data))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+t.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("pushing auth bundle: %w", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("pushing auth bundle: %s: %s", resp.Status, body)
	}
	return measure.WaitFor(10*time.Second, func() error {
		data, err := httpGetAuth("http://"+t.adminAddr+"/v1/auth-bundle/revision", t.token)
		if err != nil {
			return err
		}
		var got struct{ Revision string }
		if err := json.Unmarshal(data, &got); err != nil {
			return err
		}
		if got.Revision != b.Revision {
			return fmt.Errorf("revision %q in force, want %q", got.Revision, b.Revision)
		}
		return nil
	})
}

func httpGet(url string) ([]byte, error) { return httpGetAuth(url, "") }

func httpGetAuth(url, token string) ([]byte, error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return body, nil
}

// startMochi runs plain mochi (./mochiplain): default options, allow-all.
func (s *setup) startMochi(name string) (*target, error) {
	p, err := benchproc.FreePort()
	if err != nil {
		return nil, err
	}
	proc, err := startProcess(name, loopback(p), filepath.Join(s.dir, name+".log"), s.mochiBin, "--listen", loopback(p))
	if err != nil {
		return nil, err
	}
	t := &target{process: proc, creds: anonymous}
	if err := t.waitReady(); err != nil {
		proc.Stop()
		return nil, fmt.Errorf("%s never accepted a client: %w", name, err)
	}
	return t, nil
}

// startMosquitto runs mosquitto tuned so it never drops what a flood queues:
// unlimited queued and in-flight messages, no persistence, logging at
// warning level, and TCP_NODELAY as its default (off) unless
// --mosquitto-nodelay: with Nagle it batches small packets into fewer
// segments and is faster in these floods. withPasswords switches from
// anonymous clients to a password file of the benchmark users.
func (s *setup) startMosquitto(name string, withPasswords bool) (*target, error) {
	p, err := benchproc.FreePort()
	if err != nil {
		return nil, err
	}
	var conf strings.Builder
	fmt.Fprintf(&conf, "per_listener_settings false\nlistener %d 127.0.0.1\n", p)
	conf.WriteString("persistence false\nmax_queued_messages 0\nmax_queued_bytes 0\nmax_inflight_messages 0\n")
	conf.WriteString("log_dest stderr\nlog_type error\nlog_type warning\nconnection_messages false\n")
	if s.mosquittoNoDelay {
		conf.WriteString("set_tcp_nodelay true\n")
	}
	if os.Geteuid() == 0 {
		// Stay root rather than switch to the "mosquitto" account, so the
		// generated files in our private directory stay readable.
		conf.WriteString("user root\n")
	}
	creds := anonymous
	if withPasswords {
		pwPath, err := s.mosquittoPasswordFile(name)
		if err != nil {
			return nil, err
		}
		fmt.Fprintf(&conf, "allow_anonymous false\npassword_file %s\n", pwPath)
		users := s.users
		creds = func(i int) (string, string) { u := users[i%len(users)]; return u.name, u.password }
	} else {
		conf.WriteString("allow_anonymous true\n")
	}
	confPath, err := s.file(name+".conf", []byte(conf.String()))
	if err != nil {
		return nil, err
	}
	proc, err := startProcess(name, loopback(p), filepath.Join(s.dir, name+".log"), s.mosquittoBin, "-c", confPath)
	if err != nil {
		return nil, err
	}
	t := &target{process: proc, creds: creds}
	if err := t.waitReady(); err != nil {
		proc.Stop()
		return nil, fmt.Errorf("%s never accepted a client: %w", name, err)
	}
	return t, nil
}

// mosquittoPasswordFile hashes the benchmark users with mosquitto_passwd
// (mosquitto 2.0: PBKDF2-SHA512, 101 iterations, salted).
func (s *setup) mosquittoPasswordFile(name string) (string, error) {
	if s.passwd == "" {
		return "", errors.New("mosquitto_passwd not found")
	}
	var plain strings.Builder
	for _, u := range s.users {
		fmt.Fprintf(&plain, "%s:%s\n", u.name, u.password)
	}
	path, err := s.file(name+".passwd", []byte(plain.String()))
	if err != nil {
		return "", err
	}
	if out, err := exec.Command(s.passwd, "-U", path).CombinedOutput(); err != nil {
		return "", fmt.Errorf("mosquitto_passwd -U: %w: %s", err, out)
	}
	return path, nil
}
