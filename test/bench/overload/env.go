package main

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"github.com/mqtt-operator/mqtt-operator/internal/brokerconfig"
	"github.com/mqtt-operator/mqtt-operator/internal/passwordhash"
	"github.com/mqtt-operator/mqtt-operator/test/bench/benchproc"
	"github.com/mqtt-operator/mqtt-operator/test/bench/broker/mqttc"
	"github.com/mqtt-operator/mqtt-operator/test/bench/measure"
)

// env is what every scenario shares: the broker binary, a working
// directory, and the users: "bench", whom the clients log in as, with an
// operator-generated password (salted SHA-256), and two users with chosen
// passwords (bcrypt): "person", whose name the login_flood scenario's
// attackers know, and "other".
type env struct {
	bin, dir           string
	username, password string
	hash               string
	chosen             map[string]chosenUser
	started            int
}

// chosenUser is a user whose password was chosen by a person, so the broker
// keeps a bcrypt hash of it.
type chosenUser struct{ password, hash string }

func newEnv(bin, dir string) (*env, error) {
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
	e := &env{bin: bin, dir: dir, username: "bench", password: password, hash: hash, chosen: map[string]chosenUser{}}
	for _, name := range []string{"person", "other"} {
		password := name + "-chose-a-long-passphrase-" + hex.EncodeToString(salt[:4])
		h, err := passwordhash.HashChosen(password)
		if err != nil {
			return nil, err
		}
		e.chosen[name] = chosenUser{password: password, hash: h}
	}
	return e, nil
}

// broker is one running broker process.
type broker struct {
	*benchproc.Process
	addr, healthAddr string
	password         string // of the bench user
}

// benchTopic is where the scenarios publish; benchFilter takes it all.
const (
	benchTopic  = "bench/overload/feed"
	benchFilter = "bench/#"
)

// start runs our broker as a pod would (config and bundle rendered by
// brokerconfig, admin token, MQTT_BROKER_MEMORY_LIMIT from the container
// limit) with the MQTTBroker defaults but for maxConnections, and waits until
// it takes clients.
func (e *env) start(name string, memoryLimit int64) (*broker, error) {
	e.started++
	name = fmt.Sprintf("%s-%d", name, e.started)
	var p [3]int
	for i := range p {
		port, err := benchproc.FreePort()
		if err != nil {
			return nil, err
		}
		p[i] = port
	}
	cfg := &brokerconfig.Config{
		Version:       brokerconfig.Version,
		Listeners:     []brokerconfig.Listener{{Name: "mqtt", Protocol: brokerconfig.ProtocolTCP, Address: benchproc.Loopback(p[0])}},
		HealthAddress: benchproc.Loopback(p[1]),
		AdminAddress:  benchproc.Loopback(p[2]),
		Limits: brokerconfig.Limits{
			MaxConnections: 1000, MaxPacketSize: 1 << 20, MaxInflight: 64, MaxQoS: 2,
			RetainAvailable: true, SessionExpirySeconds: 7200, MaxKeepaliveSeconds: 300, MaxSubscriptionsPerClient: 100,
		},
		Storage: brokerconfig.Storage{Path: e.dir},
	}
	bundle := &brokerconfig.AuthBundle{
		Generation: 1,
		Users: []brokerconfig.User{{Username: e.username, PasswordHash: e.hash},
			{Username: "person", PasswordHash: e.chosen["person"].hash}, {Username: "other", PasswordHash: e.chosen["other"].hash}},
		ACLs: []brokerconfig.ACL{{Name: "bench/overload", Subjects: brokerconfig.Subjects{AllAuthenticated: true}, Rules: []brokerconfig.Rule{
			{Topic: "bench/#", Access: brokerconfig.AccessPublishSubscribe, Effect: brokerconfig.EffectAllow},
		}}},
	}
	cfgData, err := brokerconfig.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	bundleData, err := brokerconfig.MarshalBundle(bundle)
	if err != nil {
		return nil, err
	}
	token := make([]byte, 16)
	if _, err := rand.Read(token); err != nil {
		return nil, err
	}
	files := map[string][]byte{".broker.yaml": cfgData, ".auth.json": bundleData, ".token": []byte(hex.EncodeToString(token) + "\n")}
	for suffix, data := range files {
		if err := os.WriteFile(filepath.Join(e.dir, name+suffix), data, 0o600); err != nil {
			return nil, err
		}
	}
	cmd := exec.Command(e.bin, "--config", filepath.Join(e.dir, name+".broker.yaml"), "--auth-bundle", filepath.Join(e.dir, name+".auth.json"),
		"--admin-token-file", filepath.Join(e.dir, name+".token"), "--drain-period", "1s")
	cmd.Env = append(os.Environ(), "MQTT_BROKER_MEMORY_LIMIT="+strconv.FormatInt(memoryLimit, 10), "GOMEMLIMIT=")
	proc, err := benchproc.Start(name, filepath.Join(e.dir, name+".log"), cmd)
	if err != nil {
		return nil, err
	}
	b := &broker{Process: proc, addr: cfg.Listeners[0].Address, healthAddr: cfg.HealthAddress, password: e.password}
	if err := measure.WaitFor(20*time.Second, func() error {
		if err := proc.Alive(); err != nil {
			return err
		}
		c, err := b.dial("ready-probe", 512, 0)
		if err != nil {
			return err
		}
		return c.Disconnect()
	}); err != nil {
		proc.Stop()
		return nil, fmt.Errorf("%s never accepted a client: %w (log: %s)", name, err, benchproc.Tail(proc.LogPath, 5))
	}
	return b, nil
}

// dial logs a client in as the bench user; rcvbuf, when set, is its
// socket's receive buffer.
func (b *broker) dial(clientID string, buffer, rcvbuf int) (*mqttc.Conn, error) {
	return mqttc.Dial(b.addr, mqttc.Options{ClientID: clientID, Username: "bench", Password: b.password, KeepaliveSeconds: 300, BufferSize: buffer, ReceiveBuffer: rcvbuf})
}

// metric reads the sum of every series of a metric from /metrics.
func (b *broker) metric(name string) (float64, error) {
	m, err := benchproc.ScrapeMetrics(b.healthAddr)
	if err != nil {
		return 0, err
	}
	total, _ := m.Sum(name)
	return total, nil
}
