// Package integration runs the whole path a user's YAML takes: the CRDs in a
// real kube-apiserver, the operator (with exactly its generated RBAC), and
// real broker processes standing in for the pods (test/localpods), reached by
// real MQTT clients. Volume syncs are slowed to ten minutes, so every change
// a test sees in a broker arrived through the operator's push.
package integration

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
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/mqtt-operator/mqtt-operator/controllers"
	"github.com/mqtt-operator/mqtt-operator/internal/resources"
	"github.com/mqtt-operator/mqtt-operator/internal/testenv"
	"github.com/mqtt-operator/mqtt-operator/test/localpods"
)

var (
	k8s   client.Client
	pods  *localpods.Harness
	oplog testenv.LogBuffer
)

func TestMain(m *testing.M) {
	code, err := run(m)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		code = 1
	}
	os.Exit(code)
}

func run(m *testing.M) (int, error) {
	work, err := os.MkdirTemp("", "mqtt-integration-")
	if err != nil {
		return 1, err
	}
	defer os.RemoveAll(work)
	broker, err := localpods.BuildBroker(work)
	if err != nil {
		return 1, err
	}
	env, err := testenv.Start()
	if err != nil {
		return 1, err
	}
	defer func() { _ = env.Stop() }()
	k8s = env.Client

	var out io.Writer = &oplog
	if os.Getenv("TEST_VERBOSE_LOGS") != "" {
		out = io.MultiWriter(&oplog, os.Stderr)
	}
	ctrl.SetLogger(zap.New(zap.WriteTo(out), zap.Level(zapcore.DebugLevel)))
	operatorConfig, err := env.OperatorConfig()
	if err != nil {
		return 1, err
	}
	mgr, err := ctrl.NewManager(operatorConfig, ctrl.Options{
		Scheme: env.Scheme, Metrics: metricsserver.Options{BindAddress: "0"}, Cache: controllers.CacheOptions(nil),
	})
	if err != nil {
		return 1, err
	}
	if err := controllers.Setup(mgr, controllers.Config{
		Options:     resources.Options{BrokerImage: "mqtt-operator/broker:test", OperatorNamespace: "mqtt-operator-system"},
		Concurrency: 4,
	}); err != nil {
		return 1, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	mgrDone := make(chan error, 1)
	go func() { mgrDone <- mgr.Start(ctx) }()

	var brokerLog io.Writer
	if os.Getenv("TEST_VERBOSE_LOGS") != "" {
		brokerLog = os.Stderr
	}
	pods, err = localpods.Start(ctx, env.Config, localpods.Options{
		BrokerBinary: broker, WorkDir: work, VolumeSyncDelay: 10 * time.Minute, Log: brokerLog,
		// Certificates reach a broker only through its files.
		VolumeSyncDelayOf: map[string]time.Duration{"tls": time.Second},
	})
	if err != nil {
		return 1, err
	}
	code := m.Run()
	pods.Stop()
	cancel()
	if err := <-mgrDone; err != nil {
		return 1, fmt.Errorf("operator: %w", err)
	}
	return code, nil
}

func newNamespace(t *testing.T) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "it-"}}
	if err := k8s.Create(context.Background(), ns); err != nil {
		t.Fatal(err)
	}
	return ns.Name
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
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s: still not true after %v: %v", what, timeout, err)
}
