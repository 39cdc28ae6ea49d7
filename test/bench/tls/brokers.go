package main

import (
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/mqtt-operator/mqtt-operator/internal/brokerconfig"
	"github.com/mqtt-operator/mqtt-operator/internal/passwordhash"
	"github.com/mqtt-operator/mqtt-operator/test/bench/benchproc"
	"github.com/mqtt-operator/mqtt-operator/test/bench/measure"
)

// Broker names as they appear in the output.
const (
	ours      = "ours"
	mosquitto = "mosquitto"
)

// user is a benchmark identity with an operator-style generated password:
// 32 random bytes, and for ours its salted SHA-256 hash
// (passwordhash.HashGenerated), as the operator renders it into the bundle.
type user struct {
	name, password, hash string
}

// benchUsers are one identity per client.
func benchUsers(n int) ([]user, error) {
	users := make([]user, n)
	for i := range users {
		secret, salt := make([]byte, 32), make([]byte, 16)
		if _, err := rand.Read(secret); err != nil {
			return nil, err
		}
		if _, err := rand.Read(salt); err != nil {
			return nil, err
		}
		password := base64.RawURLEncoding.EncodeToString(secret)
		hash, err := passwordhash.HashGenerated(password, salt)
		if err != nil {
			return nil, err
		}
		users[i] = user{name: fmt.Sprintf("bench-%03d", i), password: password, hash: hash}
	}
	return users, nil
}

type setup struct {
	dir    string
	f      *flags
	pki    *benchPKI
	users  []user
	curves []tls.CurveID
}

func (s *setup) file(name string, data []byte) (string, error) {
	path := filepath.Join(s.dir, name)
	return path, os.WriteFile(path, data, 0o600)
}

// clientConfig is a fresh client configuration: the benchmark's CA as the
// only root, no session cache (so no resumption: every connection is a full
// handshake), the key exchanges of --curves.
func (s *setup) clientConfig() *tls.Config {
	return &tls.Config{RootCAs: s.pki.pool, ServerName: "localhost", CurvePreferences: s.curves}
}

// target is a running broker as the load generator sees it.
type target struct {
	name, addr string
	proc       *benchproc.Process
	// creds returns the login of the i-th client; empty for an anonymous
	// mosquitto.
	creds func(i int) (username, password string)
	// negotiated describes the TLS parameters of the readiness probe.
	negotiated string
}

func (t *target) stop() { t.proc.Stop() }

func (s *setup) userCreds(i int) (string, string) {
	u := s.users[i%len(s.users)]
	return u.name, u.password
}

// waitReady retries a real TLS connection with CONNECT until the broker
// accepts it, and notes what was negotiated.
func (s *setup) waitReady(t *target) error {
	err := measure.WaitFor(20*time.Second, func() error {
		if err := t.proc.Alive(); err != nil {
			return err
		}
		u, p := t.creds(0)
		st, err := connectOnce(t.addr, s.clientConfig(), "bench-tls-ready-probe", u, p)
		if err != nil {
			return err
		}
		t.negotiated = fmt.Sprintf("%s %s %s", tls.VersionName(st.Version), tls.CipherSuiteName(st.CipherSuite), st.CurveID)
		return nil
	})
	if err != nil {
		t.stop()
		return fmt.Errorf("%s never accepted a client: %w", t.name, err)
	}
	return nil
}

// startOurs runs bin/broker as a pod runs it, from a configuration rendered
// with brokerconfig.Marshal (one TLS listener, the MQTTBroker default
// limits), an auth bundle of the benchmark's users and an admin token.
func (s *setup) startOurs(round int) (*target, error) {
	var p [3]int
	for i := range p {
		var err error
		if p[i], err = benchproc.FreePort(); err != nil {
			return nil, err
		}
	}
	cfg := &brokerconfig.Config{
		Version:       brokerconfig.Version,
		Listeners:     []brokerconfig.Listener{{Name: "mqtts", Protocol: brokerconfig.ProtocolTLS, Address: benchproc.Loopback(p[0])}},
		HealthAddress: benchproc.Loopback(p[1]),
		AdminAddress:  benchproc.Loopback(p[2]),
		Limits: brokerconfig.Limits{
			MaxConnections: 10000, MaxPacketSize: 1 << 20, MaxInflight: 64, MaxQoS: 2, RetainAvailable: true,
			SessionExpirySeconds: 7200, MaxKeepaliveSeconds: 300, MaxSubscriptionsPerClient: 100,
		},
		Storage: brokerconfig.Storage{Path: s.dir},
		TLS:     &brokerconfig.TLS{CertFile: s.pki.certFile, KeyFile: s.pki.keyFile},
	}
	cfgData, err := brokerconfig.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	bundle := &brokerconfig.AuthBundle{Generation: 1}
	for _, u := range s.users {
		bundle.Users = append(bundle.Users, brokerconfig.User{Username: u.name, PasswordHash: u.hash})
	}
	bundleData, err := brokerconfig.MarshalBundle(bundle)
	if err != nil {
		return nil, err
	}
	token := make([]byte, 16)
	if _, err := rand.Read(token); err != nil {
		return nil, err
	}
	cfgPath, err := s.file("ours.broker.yaml", cfgData)
	if err != nil {
		return nil, err
	}
	bundlePath, err := s.file("ours.auth.json", bundleData)
	if err != nil {
		return nil, err
	}
	tokenPath, err := s.file("ours.token", []byte(hex.EncodeToString(token)+"\n"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(s.f.oursBin, "--config", cfgPath, "--auth-bundle", bundlePath, "--admin-token-file", tokenPath,
		"--drain-period", "0s", "--log-level", s.f.oursLogLevel)
	cmd.Env = os.Environ()
	if s.f.oursCPUProfile != "" {
		prof, err := filepath.Abs(s.f.oursCPUProfile)
		if err != nil {
			return nil, err
		}
		if round > 0 {
			prof += fmt.Sprintf(".%d", round+1)
		}
		cmd.Env = append(cmd.Env, "MQTT_BROKER_CPUPROFILE="+prof)
		logf("ours writes its CPU profile to %s (go tool pprof %s %s)", prof, s.f.oursBin, prof)
	}
	proc, err := benchproc.Start(ours, filepath.Join(s.dir, "ours.log"), cmd)
	if err != nil {
		return nil, err
	}
	t := &target{name: ours, addr: cfg.Listeners[0].Address, proc: proc, creds: s.userCreds}
	if err := s.waitReady(t); err != nil {
		return nil, err
	}
	if err := measure.WaitFor(10*time.Second, func() error { return httpOK("http://" + cfg.HealthAddress + "/readyz") }); err != nil {
		t.stop()
		return nil, fmt.Errorf("ours never became ready: %w", err)
	}
	return t, nil
}

func httpOK(url string) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return nil
}

// startMosquitto runs mosquitto with one TLS listener on the same
// certificate and key files and the TLS 1.3 suite ours negotiates, TCP_NODELAY
// (--mosquitto-nodelay), no persistence, logging at warning level, and
// either a password file of the same users (hashed by mosquitto_passwd:
// PBKDF2-SHA512, verified on every CONNECT) or, with
// --mosquitto-anonymous, anonymous clients.
func (s *setup) startMosquitto() (*target, error) {
	port, err := benchproc.FreePort()
	if err != nil {
		return nil, err
	}
	var conf strings.Builder
	fmt.Fprintf(&conf, "per_listener_settings false\nlistener %d 127.0.0.1\n", port)
	fmt.Fprintf(&conf, "certfile %s\nkeyfile %s\n", s.pki.certFile, s.pki.keyFile)
	// The suite a Go server picks for a Go client on AES hardware; OpenSSL
	// would pick TLS_AES_256_GCM_SHA384, a little dearer, by its own order.
	conf.WriteString("ciphers_tls1.3 TLS_AES_128_GCM_SHA256\n")
	conf.WriteString("persistence false\nlog_dest stderr\nlog_type error\nlog_type warning\nconnection_messages false\n")
	if s.f.mosquittoNoDelay {
		conf.WriteString("set_tcp_nodelay true\n")
	}
	if os.Geteuid() == 0 {
		// Stay root rather than switch to the "mosquitto" account, so the
		// generated files in our private directory stay readable.
		conf.WriteString("user root\n")
	}
	creds := s.userCreds
	if s.f.mosquittoAnonymous {
		conf.WriteString("allow_anonymous true\n")
		creds = func(int) (string, string) { return "", "" }
	} else {
		pw, err := s.mosquittoPasswordFile()
		if err != nil {
			return nil, err
		}
		fmt.Fprintf(&conf, "allow_anonymous false\npassword_file %s\n", pw)
	}
	confPath, err := s.file("mosquitto.conf", []byte(conf.String()))
	if err != nil {
		return nil, err
	}
	proc, err := benchproc.Start(mosquitto, filepath.Join(s.dir, "mosquitto.log"), exec.Command(s.f.mosquittoBin, "-c", confPath))
	if err != nil {
		return nil, err
	}
	t := &target{name: mosquitto, addr: benchproc.Loopback(port), proc: proc, creds: creds}
	return t, s.waitReady(t)
}

// mosquittoPasswordFile hashes the benchmark users with mosquitto_passwd.
func (s *setup) mosquittoPasswordFile() (string, error) {
	passwd := benchproc.LookPath("mosquitto_passwd", "/usr/bin/mosquitto_passwd")
	if passwd == "" {
		return "", errors.New("mosquitto_passwd not found (hack/ensure-mosquitto.sh installs it), or pass --mosquitto-anonymous")
	}
	var plain strings.Builder
	for _, u := range s.users {
		fmt.Fprintf(&plain, "%s:%s\n", u.name, u.password)
	}
	path, err := s.file("mosquitto.passwd", []byte(plain.String()))
	if err != nil {
		return "", err
	}
	if out, err := exec.Command(passwd, "-U", path).CombinedOutput(); err != nil {
		return "", fmt.Errorf("mosquitto_passwd -U: %w: %s", err, out)
	}
	return path, nil
}
