package controllers

import (
	"context"
	"fmt"
	"io"
	"os"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/mqtt-operator/mqtt-operator/internal/brokerpolicy"
	"github.com/mqtt-operator/mqtt-operator/internal/resources"
	"github.com/mqtt-operator/mqtt-operator/internal/testenv"
)

// The envtest suite runs the real MQTTBroker controller in a manager against a
// real kube-apiserver. There is no kubelet and no StatefulSet controller, so
// tests play their part by writing StatefulSet status themselves.

const operatorNamespace = "mqtt-operator-system"

var k8s client.Client

// watcher watches objects for tests that check a sequence of changes.
var watcher client.WithWatch

// operatorCache is the running operator's cache, and operatorSecrets its
// Secret reader, for tests that check what the operator holds in memory.
var (
	operatorCache   cache.Cache
	operatorSecrets secretReader
)

// operatorLogs holds the operator's log output for the whole suite.
var operatorLogs testenv.LogBuffer

func TestMain(m *testing.M) {
	code, err := runSuite(m)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		code = 1
	}
	os.Exit(code)
}

func runSuite(m *testing.M) (int, error) {
	env, err := testenv.Start()
	if err != nil {
		return 1, err
	}
	defer func() { _ = env.Stop() }()
	k8s = env.Client
	if watcher, err = client.NewWithWatch(env.Config, client.Options{Scheme: env.Scheme}); err != nil {
		return 1, err
	}
	// Everything the operator logs, at info level, goes to operatorLogs so
	// tests can check that no secret ever appears in it; TEST_VERBOSE_LOGS
	// also prints it.
	var out io.Writer = &operatorLogs
	if os.Getenv("TEST_VERBOSE_LOGS") != "" {
		out = io.MultiWriter(&operatorLogs, os.Stderr)
	}
	ctrl.SetLogger(zap.New(zap.WriteTo(out), zap.Level(zapcore.Level(-1))))

	// The operator runs with exactly the generated ClusterRole, so a missing
	// RBAC marker fails these tests instead of a user's installation.
	operatorConfig, err := env.OperatorConfig()
	if err != nil {
		return 1, err
	}
	mgr, err := ctrl.NewManager(operatorConfig, ctrl.Options{
		Scheme:  env.Scheme,
		Metrics: metricsserver.Options{BindAddress: "0"},
		Cache:   CacheOptions(nil),
	})
	if err != nil {
		return 1, err
	}
	operatorCache = mgr.GetCache()
	if operatorSecrets, err = setup(mgr, Config{
		Options: resources.Options{BrokerImage: "mqtt-operator/broker:test", OperatorNamespace: operatorNamespace,
			PodMonitorLabels: map[string]string{"release": "prometheus-test"}, PodMonitorInterval: "15s"},
		Concurrency: 4,
		Clock:       testClock.Now,
		// TestSpecTheAPIRefusesStallsWithAClearCondition needs a
		// toleration past the policy, to reach the API server's check.
		BrokerPolicy: brokerpolicy.Policy{TolerationKeys: []string{"dedicated"}},
	}); err != nil {
		return 1, err
	}
	// Moved clients of the fake pods "reconnect" at once.
	rebalanceSettle = 300 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errs := make(chan error, 1)
	go func() { errs <- mgr.Start(ctx) }()
	code := m.Run()
	cancel()
	if err := <-errs; err != nil {
		return 1, fmt.Errorf("manager: %w", err)
	}
	return code, nil
}

// reconcileCount is the number of MQTTBroker reconciles so far, read from the
// controller-runtime metric the operator exports.
func reconcileCount(t *testing.T) float64 {
	t.Helper()
	families, err := metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	total := 0.0
	for _, f := range families {
		if f.GetName() != "controller_runtime_reconcile_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "controller" && l.GetValue() == "mqttbroker" {
					total += m.GetCounter().GetValue()
				}
			}
		}
	}
	return total
}

// eventually polls check until it returns nil or the deadline passes.
func eventually(t *testing.T, timeout time.Duration, what string, check func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for time.Now().Before(deadline) {
		if err = check(); err == nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s: still not true after %v: %v", what, timeout, err)
}

func newNamespace(t *testing.T) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "broker-test-"}}
	if err := k8s.Create(context.Background(), ns); err != nil {
		t.Fatal(err)
	}
	return ns.Name
}
