// Command dev is `make dev`: a throwaway local control plane (the envtest
// kube-apiserver and etcd), the operator running against it, broker pods run
// as local processes on loopback addresses (test/localpods), and the samples
// applied and proven with a real MQTT publish/subscribe. It needs no cluster
// and no Docker, leaves a kubeconfig for kubectl, and runs until interrupted.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"syscall"
	"text/tabwriter"
	"time"

	"go.uber.org/zap/zapcore"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	v1alpha1 "github.com/mqtt-operator/mqtt-operator/api/v1alpha1"
	"github.com/mqtt-operator/mqtt-operator/controllers"
	"github.com/mqtt-operator/mqtt-operator/internal/resources"
	"github.com/mqtt-operator/mqtt-operator/internal/testenv"
	"github.com/mqtt-operator/mqtt-operator/internal/version"
	"github.com/mqtt-operator/mqtt-operator/test/localpods"
)

func main() {
	exit := flag.Bool("exit", false, "exit after printing what was created instead of running until interrupted")
	kubeconfig := flag.String("kubeconfig-out", filepath.Join(testenv.RepoRoot(), "bin", "dev", "kubeconfig"), "where to write the kubeconfig")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Stdout, *kubeconfig, *exit); err != nil {
		fmt.Fprintln(os.Stderr, "dev:", err)
		os.Exit(1)
	}
}

const namespace = "demo"

func run(ctx context.Context, out io.Writer, kubeconfigPath string, exitWhenShown bool) error {
	fmt.Fprintln(out, "Starting a local control plane (kube-apiserver + etcd, ~5 s)...")
	env, err := testenv.Start()
	if err != nil {
		return err
	}
	defer func() { _ = env.Stop() }()
	kubeconfig, err := env.KubeConfig()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(kubeconfigPath), 0o700); err != nil {
		return err
	}
	if err := os.WriteFile(kubeconfigPath, kubeconfig, 0o600); err != nil {
		return fmt.Errorf("writing kubeconfig: %w", err)
	}

	ctrl.SetLogger(zap.New(zap.Level(zapcore.ErrorLevel)))
	mgr, err := ctrl.NewManager(env.Config, ctrl.Options{
		Scheme: env.Scheme, Metrics: metricsserver.Options{BindAddress: "0"}, Cache: controllers.CacheOptions(nil),
	})
	if err != nil {
		return err
	}
	if err := controllers.Setup(mgr, controllers.Config{
		Options:     resources.Options{BrokerImage: version.DefaultBrokerImage(), OperatorNamespace: "mqtt-operator-system"},
		Concurrency: 4,
	}); err != nil {
		return err
	}
	mgrCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	mgrErr := make(chan error, 1)
	go func() { mgrErr <- mgr.Start(mgrCtx) }()
	fmt.Fprintln(out, "Operator started.")

	pods, err := startPods(mgrCtx, env, out)
	if err != nil {
		return err
	}
	defer pods.Stop()
	if err := applySamples(ctx, env.Client, out); err != nil {
		return err
	}
	fmt.Fprintln(out, "Waiting for the broker pod and for every user and ACL to be enforced...")
	wctx, wcancel := context.WithTimeout(ctx, 90*time.Second)
	defer wcancel()
	if err := pods.WaitReady(wctx, namespace, "telemetry", 1); err != nil {
		return err
	}
	if err := waitEnforced(ctx, env.Client); err != nil {
		return err
	}
	if err := printCreated(ctx, env.Client, out); err != nil {
		return err
	}
	addr := pods.PodAddr(namespace, "telemetry-0")
	fmt.Fprintf(out, "\nPublish/subscribe through pod telemetry-0 (%s:1883) with the credentials from the connection Secrets:\n", addr)
	if err := publishSubscribe(ctx, env.Client, addr+":1883", out); err != nil {
		return err
	}
	fmt.Fprintf(out, `
Try it yourself:
  export KUBECONFIG=%[1]s
  kubectl get mqtt -n %[2]s                      # brokers, users, ACLs and their status
  kubectl get mqttuser dashboard -n %[2]s -o jsonpath='{.status.permissions}'
  PASS=$(kubectl get secret dashboard-mqtt -n %[2]s -o jsonpath='{.data.password}' | base64 -d)
  mosquitto_sub -h %[3]s -p 1883 -u dashboard -P "$PASS" -t 'telemetry/#' -v
  kubectl edit topicacl dashboard -n %[2]s         # narrow it: live sessions follow at once

The broker pods are local processes on %[3]s and up (logs: %[4]s); there are no
Services or DNS here, so connect to the pod address. The kind demo runs the
same operator and broker in a real cluster.
`, kubeconfigPath, namespace, addr, filepath.Join(devDir, "brokers.log"))
	if exitWhenShown {
		return nil
	}
	fmt.Fprintln(out, "Running until Ctrl-C...")
	select {
	case <-ctx.Done():
	case err := <-mgrErr:
		return err
	}
	fmt.Fprintln(out, "Stopping.")
	return nil
}

// devDir holds what make dev leaves behind: kubeconfig, broker binary, pod
// directories and logs.
var devDir = filepath.Join(testenv.RepoRoot(), "bin", "dev")

// startPods builds the broker and starts the local pods harness.
func startPods(ctx context.Context, env *testenv.Env, out io.Writer) (*localpods.Harness, error) {
	fmt.Fprintln(out, "Building the broker (go build ./broker-image; ~30 s the first time)...")
	bin, err := localpods.BuildBroker(devDir)
	if err != nil {
		return nil, err
	}
	podsDir := filepath.Join(devDir, "pods")
	if err := os.RemoveAll(podsDir); err != nil { // a fresh start: no state from an earlier run
		return nil, err
	}
	logFile, err := os.Create(filepath.Join(devDir, "brokers.log"))
	if err != nil {
		return nil, err
	}
	return localpods.Start(ctx, env.Config, localpods.Options{BrokerBinary: bin, WorkDir: podsDir, Log: logFile})
}

func applySamples(ctx context.Context, c client.Client, out io.Writer) error {
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}); err != nil {
		return fmt.Errorf("creating namespace %s: %w", namespace, err)
	}
	objs, err := testenv.Samples(namespace)
	if err != nil {
		return err
	}
	for _, u := range objs {
		if err := c.Create(ctx, u); err != nil {
			return fmt.Errorf("applying %s %s: %w", u.GetKind(), u.GetName(), err)
		}
		fmt.Fprintf(out, "Applied %s %s/%s\n", u.GetKind(), namespace, u.GetName())
	}
	return nil
}

func printCreated(ctx context.Context, c client.Client, out io.Writer) error {
	fmt.Fprintf(out, "\nWhat the operator created in namespace %s:\n", namespace)
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "  KIND\tNAME\tOWNER")
	var rows []string
	lists := []struct {
		kind string
		list client.ObjectList
	}{
		{"ConfigMap", &corev1.ConfigMapList{}}, {"Service", &corev1.ServiceList{}}, {"ServiceAccount", &corev1.ServiceAccountList{}},
		{"StatefulSet", &appsv1.StatefulSetList{}}, {"PodDisruptionBudget", &policyv1.PodDisruptionBudgetList{}},
		{"NetworkPolicy", &networkingv1.NetworkPolicyList{}}, {"Secret", &corev1.SecretList{}}, {"Pod", &corev1.PodList{}},
	}
	for _, l := range lists {
		if err := c.List(ctx, l.list, client.InNamespace(namespace), client.MatchingLabels{resources.LabelManagedBy: resources.OperatorName}); err != nil {
			return err
		}
		items, err := meta.ExtractList(l.list)
		if err != nil {
			return err
		}
		for _, item := range items {
			obj := item.(client.Object)
			owner := ""
			if refs := obj.GetOwnerReferences(); len(refs) > 0 {
				owner = refs[0].Kind + "/" + refs[0].Name
			}
			rows = append(rows, fmt.Sprintf("  %s\t%s\t%s", l.kind, obj.GetName(), owner))
		}
	}
	sort.Strings(rows)
	for _, r := range rows {
		fmt.Fprintln(w, r)
	}
	_ = w.Flush()

	var b v1alpha1.MQTTBroker
	if err := c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: "telemetry"}, &b); err != nil {
		return err
	}
	fmt.Fprintf(out, "\nMQTTBroker %s/%s status:\n", namespace, b.Name)
	for _, cond := range b.Status.Conditions {
		fmt.Fprintf(out, "  %-12s %-5s %-12s %s\n", cond.Type, cond.Status, cond.Reason, cond.Message)
	}
	for _, e := range b.Status.Endpoints {
		fmt.Fprintf(out, "  endpoint %s: %s\n", e.Name, e.URL)
	}
	return nil
}
