// Package chart tests the Helm chart the way it is used: rendered by helm
// with the values users set, checked against what the operator needs, and
// installed into a real API server, where the operator then runs with
// exactly the rights the chart gives it.
package chart

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/yaml"

	v1alpha1 "github.com/mqtt-operator/mqtt-operator/api/v1alpha1"
	"github.com/mqtt-operator/mqtt-operator/controllers"
	"github.com/mqtt-operator/mqtt-operator/internal/pki"
	"github.com/mqtt-operator/mqtt-operator/internal/resources"
	"github.com/mqtt-operator/mqtt-operator/internal/testenv"
)

var (
	env  *testenv.Env
	helm string
)

func TestMain(m *testing.M) {
	helm = os.Getenv("HELM")
	if helm == "" {
		fmt.Fprintln(os.Stderr, "HELM is not set: run through `make test` (or export HELM=$(hack/helm.sh))")
		os.Exit(1)
	}
	var err error
	if env, err = testenv.Start(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	_ = env.Stop()
	os.Exit(code)
}

// render runs helm template on the chart and parses what it prints.
func render(t *testing.T, namespace string, args ...string) []*unstructured.Unstructured {
	t.Helper()
	cmd := exec.Command(helm, append([]string{"template", "mqtt-operator", filepath.Join(testenv.RepoRoot(), "charts", "mqtt-operator"), "--namespace", namespace}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("helm template %v: %v\n%s", args, err, stderr.String())
	}
	return parse(t, out)
}

func parse(t *testing.T, data []byte) []*unstructured.Unstructured {
	t.Helper()
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	var objs []*unstructured.Unstructured
	for {
		u := &unstructured.Unstructured{}
		if err := dec.Decode(&u.Object); errors.Is(err, io.EOF) {
			return objs
		} else if err != nil {
			t.Fatalf("rendered YAML does not parse: %v", err)
		}
		if len(u.Object) > 0 {
			objs = append(objs, u)
		}
	}
}

func find(objs []*unstructured.Unstructured, kind string) []*unstructured.Unstructured {
	var out []*unstructured.Unstructured
	for _, o := range objs {
		if o.GetKind() == kind {
			out = append(out, o)
		}
	}
	return out
}

func typed[T any](t *testing.T, u *unstructured.Unstructured, into *T) *T {
	t.Helper()
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, into); err != nil {
		t.Fatalf("%s %s: %v", u.GetKind(), u.GetName(), err)
	}
	return into
}

// deployment is the operator's Deployment (the metrics adapter has its own).
func deployment(t *testing.T, objs []*unstructured.Unstructured) *appsv1.Deployment {
	t.Helper()
	var d []*unstructured.Unstructured
	for _, o := range find(objs, "Deployment") {
		if !strings.HasSuffix(o.GetName(), "-metrics-adapter") {
			d = append(d, o)
		}
	}
	if len(d) != 1 {
		t.Fatalf("%d operator Deployments rendered", len(d))
	}
	return typed(t, d[0], &appsv1.Deployment{})
}

// named is the object of kind with name, or nil.
func named(objs []*unstructured.Unstructured, kind, name string) *unstructured.Unstructured {
	for _, o := range find(objs, kind) {
		if o.GetName() == name {
			return o
		}
	}
	return nil
}

func generatedRules(t *testing.T) []rbacv1.PolicyRule {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "config", "rbac", "role.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	role := &rbacv1.ClusterRole{}
	if err := yaml.Unmarshal(data, role); err != nil {
		t.Fatal(err)
	}
	return role.Rules
}

func TestDefaultRender(t *testing.T) {
	objs := render(t, "ops")
	kinds := map[string]int{}
	for _, o := range objs {
		kinds[o.GetKind()]++
	}
	// The operator's, and the metrics adapter's (its ServiceAccount, rules,
	// auth-delegator and authentication-reader bindings, certificate,
	// Service, Deployment and APIService).
	want := map[string]int{"ServiceAccount": 2, "ClusterRole": 2, "ClusterRoleBinding": 3, "Role": 1, "RoleBinding": 2, "Service": 2, "Deployment": 2, "Secret": 1, "APIService": 1}
	if fmt.Sprint(kinds) != fmt.Sprint(want) {
		t.Errorf("rendered %v, want %v", kinds, want)
	}

	d := deployment(t, objs)
	pod := d.Spec.Template.Spec
	c := pod.Containers[0]
	// Restricted Pod Security Standard.
	if psc := pod.SecurityContext; psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("pod security context %+v", pod.SecurityContext)
	}
	if sc := c.SecurityContext; sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
		sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation || sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
		t.Errorf("container security context %+v", c.SecurityContext)
	}
	if c.LivenessProbe == nil || c.ReadinessProbe == nil || c.Resources.Limits.Memory().IsZero() {
		t.Error("the operator needs probes and a memory limit")
	}
	for _, arg := range []string{"--leader-elect", "--metrics-bind-address=:8080", "--broker-image=mqtt-operator/broker:0.1.0-dev", "--zap-log-level=info", "--cluster-domain=cluster.local"} {
		if !slices.Contains(c.Args, arg) {
			t.Errorf("args %v lack %s", c.Args, arg)
		}
	}
	if c.Image != "mqtt-operator/operator:0.1.0-dev" {
		t.Errorf("image %s", c.Image)
	}
	// Broker NetworkPolicies admit the admin port only from pods with this label.
	if d.Spec.Template.Labels[resources.LabelName] != resources.OperatorName {
		t.Errorf("operator pods are labelled %v; broker NetworkPolicies admit %s=%s", d.Spec.Template.Labels, resources.LabelName, resources.OperatorName)
	}
	if find(objs, "ServiceMonitor") != nil {
		t.Error("a ServiceMonitor without metrics.serviceMonitor.enabled")
	}

	// The rules are the ones generated from the code, which the envtest
	// suites run the operator with.
	role := typed(t, named(objs, "ClusterRole", "mqtt-operator"), &rbacv1.ClusterRole{})
	if fmt.Sprint(role.Rules) != fmt.Sprint(generatedRules(t)) {
		t.Errorf("the chart's ClusterRole differs from config/rbac/role.yaml:\n%v\n%v", role.Rules, generatedRules(t))
	}
}

// TestMemoryLimit: the operator's container limit fits the documented scale
// (10,000 users peaked at 294 MiB) and reaches the operator, which sets its
// Go memory limit from it (cmd/main.go, MQTT_OPERATOR_MEMORY_LIMIT).
func TestMemoryLimit(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{nil, "512Mi"},
		{[]string{"--set", "resources.limits.memory=1Gi"}, "1Gi"},
	} {
		c0 := deployment(t, render(t, "ops", c.args...)).Spec.Template.Spec.Containers[0]
		if got := c0.Resources.Limits.Memory(); got.Cmp(resource.MustParse(c.want)) != 0 {
			t.Errorf("%v: memory limit %s, want %s", c.args, got, c.want)
		}
		if req := c0.Resources.Requests.Memory(); req.Cmp(resource.MustParse("256Mi")) < 0 {
			t.Errorf("%v: memory request %s is below what 10,000 users hold (231 MiB)", c.args, req)
		}
		var env *corev1.EnvVar
		for i := range c0.Env {
			if c0.Env[i].Name == "MQTT_OPERATOR_MEMORY_LIMIT" {
				env = &c0.Env[i]
			}
		}
		if env == nil || env.ValueFrom == nil || env.ValueFrom.ResourceFieldRef == nil || env.ValueFrom.ResourceFieldRef.Resource != "limits.memory" ||
			(env.ValueFrom.ResourceFieldRef.Divisor != resource.Quantity{} && env.ValueFrom.ResourceFieldRef.Divisor.Value() != 1) {
			t.Errorf("%v: the container limit does not reach the operator in bytes: %+v", c.args, env)
		}
	}
}

func TestValues(t *testing.T) {
	objs := render(t, "ops", "--set", "watchNamespaces={tenant-a,tenant-b}", "--set", "metrics.enabled=false",
		"--set", "image.repository=registry.example.com/mqtt-operator", "--set", "image.tag=1.2.3", "--set", "logLevel=debug")
	// Cluster-wide only what every aggregated API server needs: the
	// metrics adapter's right to ask who a caller is.
	if len(find(objs, "ClusterRole")) != 0 || len(find(objs, "ClusterRoleBinding")) != 1 ||
		typed(t, find(objs, "ClusterRoleBinding")[0], &rbacv1.ClusterRoleBinding{}).RoleRef.Name != "system:auth-delegator" {
		t.Error("watching listed namespaces must not need cluster-wide rights")
	}
	var ns []string
	for _, r := range find(objs, "Role") {
		ns = append(ns, r.GetNamespace()+"/"+r.GetName())
	}
	slices.Sort(ns)
	if want := []string{"ops/mqtt-operator-leader-election", "tenant-a/mqtt-operator", "tenant-a/mqtt-operator-metrics-adapter",
		"tenant-b/mqtt-operator", "tenant-b/mqtt-operator-metrics-adapter"}; !slices.Equal(ns, want) {
		t.Errorf("Roles %v, want %v", ns, want)
	}
	if len(find(objs, "RoleBinding")) != 6 || named(objs, "Service", "mqtt-operator-metrics") != nil {
		t.Errorf("%d RoleBindings (want 3 and the adapter's 3), a metrics Service without metrics: %v", len(find(objs, "RoleBinding")), named(objs, "Service", "mqtt-operator-metrics") != nil)
	}
	adapter := typed(t, named(objs, "Deployment", "mqtt-operator-metrics-adapter"), &appsv1.Deployment{}).Spec.Template.Spec.Containers[0]
	if !slices.Contains(adapter.Args, "--watch-namespaces=tenant-a,tenant-b") {
		t.Errorf("the metrics adapter's args %v lack the watched namespaces", adapter.Args)
	}
	c := deployment(t, objs).Spec.Template.Spec.Containers[0]
	for _, arg := range []string{"--watch-namespaces=tenant-a,tenant-b", "--metrics-bind-address=0", "--zap-log-level=debug"} {
		if !slices.Contains(c.Args, arg) {
			t.Errorf("args %v lack %s", c.Args, arg)
		}
	}
	if c.Image != "registry.example.com/mqtt-operator:1.2.3" {
		t.Errorf("image %s", c.Image)
	}
	for _, arg := range c.Args {
		if strings.HasPrefix(arg, "--allowed-") {
			t.Errorf("%s without brokerPolicy values: the operator's deny-by-default defaults must apply", arg)
		}
	}

	c = deployment(t, render(t, "ops", "--set", "brokerPolicy.allowedImages={registry.example.com/mqtt/*,mqtt-operator/broker}",
		"--set", "brokerPolicy.allowedPriorityClasses={mqtt-high}", "--set", "brokerPolicy.allowedTolerationKeys={dedicated,spot}")).Spec.Template.Spec.Containers[0]
	for _, arg := range []string{"--allowed-broker-images=registry.example.com/mqtt/*,mqtt-operator/broker", "--allowed-priority-classes=mqtt-high", "--allowed-toleration-keys=dedicated,spot"} {
		if !slices.Contains(c.Args, arg) {
			t.Errorf("args %v lack %s", c.Args, arg)
		}
	}

	objs = render(t, "ops", "--set", "metrics.serviceMonitor.enabled=true", "--set", "metrics.serviceMonitor.labels.release=prom")
	sm := find(objs, "ServiceMonitor")
	if len(sm) != 1 || sm[0].GetLabels()["release"] != "prom" {
		t.Fatalf("ServiceMonitor %v", sm)
	}
	svc := typed(t, named(objs, "Service", "mqtt-operator-metrics"), &corev1.Service{})
	if svc.Spec.Ports[0].Name != "metrics" || !strings.Contains(fmt.Sprint(sm[0].Object["spec"]), "port:metrics") {
		t.Errorf("the ServiceMonitor does not scrape the metrics port: %v", sm[0].Object["spec"])
	}
}

// TestAlerts: alerts.enabled ships files/alerts.yaml, the rules promtool
// checks and unit-tests (make check-alerts), unchanged in a PrometheusRule.
func TestAlerts(t *testing.T) {
	if find(render(t, "ops"), "PrometheusRule") != nil {
		t.Error("a PrometheusRule without alerts.enabled")
	}
	rules := find(render(t, "ops", "--set", "alerts.enabled=true", "--set", "alerts.labels.release=prom"), "PrometheusRule")
	if len(rules) != 1 || rules[0].GetLabels()["release"] != "prom" {
		t.Fatalf("PrometheusRule %v", rules)
	}
	data, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "charts", "mqtt-operator", "files", "alerts.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var file map[string]any
	if err := yaml.Unmarshal(data, &file); err != nil {
		t.Fatal(err)
	}
	spec := rules[0].Object["spec"]
	if fmt.Sprint(spec) != fmt.Sprint(file) || !strings.Contains(fmt.Sprint(spec), "MQTTBrokerAuthBundleDiverged") {
		t.Errorf("the PrometheusRule's spec is not files/alerts.yaml:\n%v\n%v", spec, file)
	}
}

// TestDashboards: dashboards.enabled ships the generated dashboard, byte for
// byte, in a ConfigMap the Grafana sidecar picks up.
func TestDashboards(t *testing.T) {
	if find(render(t, "ops"), "ConfigMap") != nil {
		t.Error("a dashboard ConfigMap without dashboards.enabled")
	}
	cms := find(render(t, "ops", "--set", "dashboards.enabled=true", "--set", "dashboards.namespace=monitoring"), "ConfigMap")
	if len(cms) != 1 || cms[0].GetLabels()["grafana_dashboard"] != "1" || cms[0].GetNamespace() != "monitoring" {
		t.Fatalf("dashboard ConfigMaps %v", cms)
	}
	want, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "charts", "mqtt-operator", "dashboards", "mqtt-brokers.json"))
	if err != nil {
		t.Fatal(err)
	}
	got := typed(t, cms[0], &corev1.ConfigMap{}).Data["mqtt-brokers.json"]
	if got != strings.TrimSuffix(string(want), "\n") {
		t.Errorf("the ConfigMap does not hold dashboards/mqtt-brokers.json as it is (%d bytes, want %d)", len(got), len(want))
	}
}

// TestBrokerPodMonitorValues: the chart's brokerMonitoring values reach the
// operator, which labels every broker's PodMonitor with them.
func TestBrokerPodMonitorValues(t *testing.T) {
	c := deployment(t, render(t, "ops")).Spec.Template.Spec.Containers[0]
	if !slices.Contains(c.Args, "--pod-monitor-interval=30s") || slices.ContainsFunc(c.Args, func(a string) bool { return strings.HasPrefix(a, "--pod-monitor-labels") }) {
		t.Errorf("default args %v: want --pod-monitor-interval=30s and no labels", c.Args)
	}
	c = deployment(t, render(t, "ops", "--set", "brokerMonitoring.podMonitor.labels.release=prom", "--set", "brokerMonitoring.podMonitor.interval=1m")).Spec.Template.Spec.Containers[0]
	labels, err := resources.ParseLabels(strings.TrimPrefix(c.Args[slices.IndexFunc(c.Args, func(a string) bool { return strings.HasPrefix(a, "--pod-monitor-labels=") })], "--pod-monitor-labels="))
	if err != nil || labels["release"] != "prom" || !slices.Contains(c.Args, "--pod-monitor-interval=1m") {
		t.Errorf("args %v: labels %v (%v)", c.Args, labels, err)
	}
}

// TestCRDsAreTheGeneratedOnes guards what `make verify` also checks: helm
// installs the chart's crds/ directory, which must be config/crd/bases.
func TestCRDsAreTheGeneratedOnes(t *testing.T) {
	root := testenv.RepoRoot()
	generated, _ := filepath.Glob(filepath.Join(root, "config", "crd", "bases", "*.yaml"))
	inChart, _ := filepath.Glob(filepath.Join(root, "charts", "mqtt-operator", "crds", "*.yaml"))
	if len(generated) == 0 || len(generated) != len(inChart) {
		t.Fatalf("%d generated CRDs, %d in the chart", len(generated), len(inChart))
	}
	for _, g := range generated {
		a, _ := os.ReadFile(g)
		b, _ := os.ReadFile(filepath.Join(root, "charts", "mqtt-operator", "crds", filepath.Base(g)))
		if !bytes.Equal(a, b) {
			t.Errorf("the chart's %s differs from config/crd/bases: run make manifests", filepath.Base(g))
		}
	}
}

func create(t *testing.T, c client.Client, objs []*unstructured.Unstructured) {
	t.Helper()
	for _, o := range objs {
		if o.GetKind() == "CustomResourceDefinition" {
			continue // envtest installed them from config/crd/bases, which the chart's equal
		}
		if err := c.Create(context.Background(), o); err != nil {
			t.Fatalf("the API server refused %s %s: %v", o.GetKind(), o.GetName(), err)
		}
	}
}

func createNamespaces(t *testing.T, names ...string) {
	t.Helper()
	for _, n := range names {
		if err := env.Client.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: n}}); err != nil {
			t.Fatal(err)
		}
	}
}

// TestInstalledChartRunsTheOperator installs the chart watching one
// namespace (Roles only, no cluster-wide rights) into a real API server and
// runs the operator as the chart's ServiceAccount: a broker with TLS and a
// user in that namespace get everything they should.
func TestInstalledChartRunsTheOperator(t *testing.T) {
	createNamespaces(t, "ops", "tenant")
	// The metrics adapter's cluster-wide objects are installed by
	// TestInstaller (the API server must accept them all).
	objs := render(t, "ops", "--set", "watchNamespaces={tenant}", "--set", "metricsAdapter.enabled=false")
	create(t, env.Client, objs)

	sa := named(objs, "ServiceAccount", "mqtt-operator")
	cfg, err := env.ConfigFor("system:serviceaccount:ops:" + sa.GetName())
	if err != nil {
		t.Fatal(err)
	}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme: env.Scheme, Metrics: metricsserver.Options{BindAddress: "0"},
		Cache: controllers.CacheOptions([]string{"tenant"}),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := controllers.Setup(mgr, controllers.Config{Options: resources.Options{BrokerImage: "b:1", OperatorNamespace: "ops"}, Concurrency: 2, Namespaces: []string{"tenant"}}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("operator: %v", err)
		}
	})

	b := &v1alpha1.MQTTBroker{ObjectMeta: metav1.ObjectMeta{Name: "telemetry"}}
	b.Namespace = "tenant"
	b.Spec.Listeners.TLS = v1alpha1.TLSListener{Enabled: true, Port: 8883}
	u := &v1alpha1.MQTTUser{ObjectMeta: metav1.ObjectMeta{Name: "gateway"}, Spec: v1alpha1.MQTTUserSpec{BrokerRef: v1alpha1.BrokerReference{Name: "telemetry"}}}
	u.Namespace = "tenant"
	// A password from a tenant's Secret: read with the Role's rights and
	// noticed by the Secret metadata informer, which lists the watched
	// namespace only.
	password := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "dashboard-password", Namespace: "tenant"},
		Data: map[string][]byte{"password": []byte("a passphrase the tenant chose")}}
	chosen := &v1alpha1.MQTTUser{ObjectMeta: metav1.ObjectMeta{Name: "dashboard", Namespace: "tenant"}, Spec: v1alpha1.MQTTUserSpec{
		BrokerRef: v1alpha1.BrokerReference{Name: "telemetry"}, PasswordSecretRef: &v1alpha1.SecretKeyReference{Name: "dashboard-password"}}}
	for _, o := range []client.Object{b, u, password, chosen} {
		if err := env.Client.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(20 * time.Second)
	for _, want := range []struct {
		name string
		obj  client.Object
	}{
		{"telemetry", &appsv1.StatefulSet{}}, {"telemetry-tls", &corev1.Secret{}}, {"telemetry-auth", &corev1.Secret{}}, {"gateway-mqtt", &corev1.Secret{}},
		{"dashboard-mqtt", &corev1.Secret{}},
	} {
		for {
			err := env.Client.Get(ctx, client.ObjectKey{Namespace: "tenant", Name: want.name}, want.obj)
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%T %s not created by the operator running with the chart's rights: %v", want.obj, want.name, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}

// TestInstaller renders dist/install.yaml as `make build-installer` does
// and installs it.
func TestInstaller(t *testing.T) {
	out := filepath.Join(t.TempDir(), "install.yaml")
	cmd := exec.Command(filepath.Join(testenv.RepoRoot(), "hack", "build-installer.sh"), out, "registry.example.com/operator:1.0.0", "registry.example.com/broker:1.0.0")
	if msg, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build-installer: %v\n%s", err, msg)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	objs := parse(t, data)
	if objs[0].GetKind() != "Namespace" || objs[0].GetLabels()["pod-security.kubernetes.io/enforce"] != "restricted" {
		t.Errorf("the installer must start with its namespace, enforcing the restricted standard: %v", objs[0].Object)
	}
	if n := len(find(objs, "CustomResourceDefinition")); n != 3 {
		t.Errorf("%d CRDs in the installer", n)
	}
	if named(objs, "APIService", "v1beta2.custom.metrics.k8s.io") == nil {
		t.Error("the installer has no metrics adapter")
	}
	c := deployment(t, objs).Spec.Template.Spec.Containers[0]
	if c.Image != "registry.example.com/operator:1.0.0" || !slices.Contains(c.Args, "--broker-image=registry.example.com/broker:1.0.0") {
		t.Errorf("image %s args %v", c.Image, c.Args)
	}
	create(t, env.Client, objs)
}

// TestMetricsAdapter: the chart runs the custom metrics adapter from the
// operator image, locked down like the operator, behind an APIService that
// trusts its certificate; its pods do not carry the operator's name label
// (broker NetworkPolicies admit their admin port from that).
func TestMetricsAdapter(t *testing.T) {
	objs := render(t, "ops")
	d := typed(t, named(objs, "Deployment", "mqtt-operator-metrics-adapter"), &appsv1.Deployment{})
	pod := d.Spec.Template.Spec
	c := pod.Containers[0]
	if c.Image != "mqtt-operator/operator:0.1.0-dev" || !slices.Equal(c.Command, []string{"/metrics-adapter"}) {
		t.Errorf("adapter image %s command %v", c.Image, c.Command)
	}
	if d.Spec.Template.Labels[resources.LabelName] == resources.OperatorName {
		t.Error("the adapter's pods carry the operator's name label, which opens every broker's admin port to them")
	}
	if psc := pod.SecurityContext; psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot {
		t.Errorf("pod security context %+v", psc)
	}
	if sc := c.SecurityContext; sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Errorf("container security context %+v", sc)
	}
	if c.ReadinessProbe == nil || c.Resources.Limits.Memory().IsZero() {
		t.Error("the adapter needs a readiness probe and a memory limit")
	}
	role := typed(t, named(objs, "ClusterRole", "mqtt-operator-metrics-adapter"), &rbacv1.ClusterRole{})
	if len(role.Rules) != 1 || fmt.Sprint(role.Rules[0].Resources) != "[pods]" || fmt.Sprint(role.Rules[0].Verbs) != "[get list watch]" {
		t.Errorf("the adapter's rules %+v, want reading pods and nothing else", role.Rules)
	}
	// The APIService trusts the CA that signed the Secret's certificate,
	// for the name kube-apiserver dials.
	api := named(objs, "APIService", "v1beta2.custom.metrics.k8s.io")
	secret := typed(t, named(objs, "Secret", "mqtt-operator-metrics-adapter-tls"), &corev1.Secret{})
	if api == nil || secret == nil {
		t.Fatal("no APIService or no certificate Secret")
	}
	caBundle, _, _ := unstructured.NestedString(api.Object, "spec", "caBundle")
	svc, _, _ := unstructured.NestedString(api.Object, "spec", "service", "name")
	if svc != "mqtt-operator-metrics-adapter" || named(objs, "Service", svc) == nil {
		t.Errorf("the APIService points at Service %q", svc)
	}
	ca, err := pki.ParseCertificate(secret.Data["ca.crt"])
	if err != nil || base64.StdEncoding.EncodeToString(secret.Data["ca.crt"]) != caBundle {
		t.Fatalf("the APIService's caBundle is not the Secret's CA (%v)", err)
	}
	cert, err := pki.ParseCertificate(secret.Data["tls.crt"])
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, DNSName: "mqtt-operator-metrics-adapter.ops.svc"}); err != nil {
		t.Errorf("the adapter's certificate does not verify for its Service: %v", err)
	}

	// Off: nothing of it.
	for _, o := range render(t, "ops", "--set", "metricsAdapter.enabled=false") {
		if strings.Contains(o.GetName(), "metrics-adapter") || o.GetKind() == "APIService" {
			t.Errorf("metricsAdapter.enabled=false rendered %s %s", o.GetKind(), o.GetName())
		}
	}
	// A certificate of the user's: its Secret, and a CA to trust it by.
	objs = render(t, "ops", "--set", "metricsAdapter.tls.secretName=adapter-cert", "--set", "metricsAdapter.apiServiceAnnotations.cert-manager\\.io/inject-ca-from=ops/adapter-cert")
	if find(objs, "Secret") != nil {
		t.Error("a Secret rendered although the user named theirs")
	}
	d = typed(t, named(objs, "Deployment", "mqtt-operator-metrics-adapter"), &appsv1.Deployment{})
	if d.Spec.Template.Spec.Volumes[0].Secret.SecretName != "adapter-cert" {
		t.Errorf("volumes %+v", d.Spec.Template.Spec.Volumes)
	}
	if named(objs, "APIService", "v1beta2.custom.metrics.k8s.io").GetAnnotations()["cert-manager.io/inject-ca-from"] != "ops/adapter-cert" {
		t.Error("the CA injection annotation did not reach the APIService")
	}
	cmd := exec.Command(helm, "template", "mqtt-operator", filepath.Join(testenv.RepoRoot(), "charts", "mqtt-operator"), "--set", "metricsAdapter.tls.secretName=adapter-cert")
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "metricsAdapter.tls.secretName needs metricsAdapter.tls.caBundle") {
		t.Errorf("a Secret of the user's with no CA to trust it by: %v\n%s", err, out)
	}
}
