package localpods

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	pahov3 "github.com/eclipse/paho.mqtt.golang"
	uberzap "go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/yaml"

	"github.com/mqtt-operator/mqtt-operator/controllers"
	"github.com/mqtt-operator/mqtt-operator/internal/resources"
	"github.com/mqtt-operator/mqtt-operator/internal/testenv"
)

// The control plane (envtest with the operator running in it) and the broker
// binary are shared by this package's tests and started on first use, so
// the unit tests run without KUBEBUILDER_ASSETS. Each test starts its own
// harness, limited to its own namespace.
var shared struct {
	once   sync.Once
	env    *testenv.Env
	broker string
	err    error
	stop   func()
}

func TestMain(m *testing.M) {
	code := m.Run()
	if shared.stop != nil {
		shared.stop()
	}
	os.Exit(code)
}

func controlPlane(t *testing.T) (*testenv.Env, string) {
	t.Helper()
	shared.once.Do(func() { shared.env, shared.broker, shared.stop, shared.err = startControlPlane() })
	if shared.err != nil {
		t.Fatal(shared.err)
	}
	return shared.env, shared.broker
}

// startControlPlane runs envtest, the operator (as an administrator: the
// controllers suite proves its RBAC role) and builds the broker.
func startControlPlane() (_ *testenv.Env, broker string, stop func(), err error) {
	var stops []func()
	stopAll := func() {
		for i := len(stops) - 1; i >= 0; i-- {
			stops[i]()
		}
	}
	defer func() {
		if err != nil {
			stopAll()
		}
	}()
	dir, err := os.MkdirTemp("", "localpods-broker-")
	if err != nil {
		return nil, "", nil, err
	}
	stops = append(stops, func() { _ = os.RemoveAll(dir) })
	if broker, err = BuildBroker(dir); err != nil {
		return nil, "", nil, err
	}
	env, err := testenv.Start()
	if err != nil {
		return nil, "", nil, err
	}
	stops = append(stops, func() { _ = env.Stop() })
	// Errors only, and none from the teardown, where cancelled requests are
	// expected.
	level := uberzap.NewAtomicLevelAt(zapcore.ErrorLevel)
	ctrl.SetLogger(zap.New(zap.Level(level)))
	mgr, err := ctrl.NewManager(env.Config, ctrl.Options{
		Scheme: env.Scheme, Metrics: metricsserver.Options{BindAddress: "0"}, Cache: controllers.CacheOptions(nil),
	})
	if err != nil {
		return nil, "", nil, err
	}
	if err := controllers.Setup(mgr, controllers.Config{
		Options:     resources.Options{BrokerImage: "mqtt-operator/broker:localpods", OperatorNamespace: "mqtt-operator-system"},
		Concurrency: 2,
	}); err != nil {
		return nil, "", nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	stops = append(stops, func() {
		level.SetLevel(zapcore.FatalLevel)
		cancel()
		if err := <-done; err != nil {
			fmt.Fprintln(os.Stderr, "operator:", err)
		}
	})
	return env, broker, stopAll, nil
}

// syncBuffer is a Log for tests: written by many goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startHarness runs a harness for namespace ns until the test ends, and
// shows the pods' output when the test fails.
func startHarness(t *testing.T, env *testenv.Env, broker, ns string, delay time.Duration, log io.Writer) (*Harness, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	workDir := t.TempDir()
	h, err := Start(ctx, env.Config, Options{BrokerBinary: broker, WorkDir: workDir, VolumeSyncDelay: delay, Namespaces: []string{ns}, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		h.Stop()
		if t.Failed() {
			h.mu.Lock()
			defer h.mu.Unlock()
			for pod, out := range h.outputs {
				t.Logf("output of %s:\n%s", pod, out)
			}
		}
	})
	return h, workDir
}

func newNamespace(t *testing.T, c client.Client) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "localpods-"}}
	if err := c.Create(context.Background(), ns); err != nil {
		t.Fatal(err)
	}
	return ns.Name
}

// apply creates the objects of a YAML document stream in namespace ns.
func apply(t *testing.T, c client.Client, ns, manifests string) {
	t.Helper()
	for _, doc := range strings.Split(manifests, "\n---\n") {
		u := &unstructured.Unstructured{}
		if err := yaml.Unmarshal([]byte(doc), &u.Object); err != nil {
			t.Fatalf("parsing %q: %v", doc, err)
		}
		u.SetNamespace(ns)
		if err := c.Create(context.Background(), u); err != nil {
			t.Fatalf("creating %s %s: %v", u.GetKind(), u.GetName(), err)
		}
	}
}

func randomHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// eventually polls check until it returns nil or timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, check func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still not true after %v: %v", what, timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func connect(addr, user, password string) (pahov3.Client, error) {
	o := pahov3.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(fmt.Sprintf("%s-%d", user, time.Now().UnixNano())).
		SetUsername(user).SetPassword(password).SetCleanSession(true).SetAutoReconnect(false).SetConnectRetry(false).
		SetConnectTimeout(3 * time.Second).SetProtocolVersion(4)
	c := pahov3.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(5 * time.Second) {
		return nil, fmt.Errorf("connecting to %s as %s timed out", addr, user)
	}
	if err := tok.Error(); err != nil {
		return nil, fmt.Errorf("connecting to %s as %s: %w", addr, user, err)
	}
	return c, nil
}

func mustConnect(t *testing.T, addr, user, password string) pahov3.Client {
	t.Helper()
	cl, err := connect(addr, user, password)
	if err != nil {
		t.Fatal(err)
	}
	return cl
}

// canConnect is nil once user gets in.
func canConnect(addr, user, password string) error {
	cl, err := connect(addr, user, password)
	if err == nil {
		cl.Disconnect(0)
	}
	return err
}

// subscribeAndPublish subscribes to topic and returns the first message it
// receives: the one it publishes itself, or (publish "") one retained earlier.
func subscribeAndPublish(c pahov3.Client, topic, publish string) (string, error) {
	got := make(chan string, 4)
	sub := c.Subscribe(topic, 1, func(_ pahov3.Client, m pahov3.Message) { got <- string(m.Payload()) })
	if !sub.WaitTimeout(5*time.Second) || sub.Error() != nil {
		return "", fmt.Errorf("subscribing to %s: %v", topic, sub.Error())
	}
	if publish != "" {
		pub := c.Publish(topic, 1, false, publish)
		if !pub.WaitTimeout(5*time.Second) || pub.Error() != nil {
			return "", fmt.Errorf("publishing to %s: %v", topic, pub.Error())
		}
	}
	select {
	case m := <-got:
		return m, nil
	case <-time.After(5 * time.Second):
		return "", fmt.Errorf("no message on %s within 5s", topic)
	}
}

// publishRetained leaves a retained message on topic.
func publishRetained(c pahov3.Client, topic, payload string) error {
	pub := c.Publish(topic, 1, true, payload)
	if !pub.WaitTimeout(5*time.Second) || pub.Error() != nil {
		return fmt.Errorf("publishing retained to %s: %v", topic, pub.Error())
	}
	return nil
}
