package localpods

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
	apiregistrationv1 "k8s.io/kube-aggregator/pkg/apis/apiregistration/v1"
	customclient "k8s.io/metrics/pkg/client/custom_metrics"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/mqtt-operator/mqtt-operator/api/v1alpha1"
	"github.com/mqtt-operator/mqtt-operator/internal/metricsadapter"
	"github.com/mqtt-operator/mqtt-operator/internal/pki"
	"github.com/mqtt-operator/mqtt-operator/internal/testenv"
)

// The metrics adapter answers the custom metrics API through
// kube-apiserver's aggregation, as a HorizontalPodAutoscaler asks it: the
// metrics the operator's HPA names, for the broker's pods, with the live
// figures of the real broker processes. The adapter runs with the chart's
// RBAC rules and nothing more.
func TestMetricsAdapterServesBrokerFiguresThroughTheAPI(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	env, bin := controlPlane(t)
	c := env.Client
	ns := newNamespace(t, c)
	h, _ := startHarness(t, env, bin, ns, time.Hour, nil)
	broker := sampleBroker(t, ns)
	broker.Spec.Autoscaling = &v1alpha1.AutoscalingSpec{MinReplicas: 1, MaxReplicas: 3, TargetConnectionsPerPod: 5, TargetMessagesPerSecondPerPod: 100}
	if err := c.Create(ctx, broker); err != nil {
		t.Fatal(err)
	}
	apply(t, c, ns, usersAndACL)
	waitReady(ctx, t, h, ns, 1)
	patchBroker(ctx, t, c, broker, func(b *v1alpha1.MQTTBroker) { b.Spec.Replicas = ptr.To[int32](2) })
	waitReady(ctx, t, h, ns, 2)
	pw := password(ctx, t, c, ns, "alice")
	addr := func(pod string) string { return net.JoinHostPort(h.PodAddr(ns, pod), "1883") }

	// Three clients on pod 0, one on pod 1, which also gets a publisher.
	for _, pod := range []string{"telemetry-0", "telemetry-0", "telemetry-0", "telemetry-1"} {
		cl := mustConnect(t, addr(pod), "alice", pw)
		defer cl.Disconnect(0)
	}
	pub := mustConnect(t, addr("telemetry-1"), "alice", pw)
	defer pub.Disconnect(0)
	pctx, stopPub := context.WithCancel(ctx)
	defer stopPub()
	go func() {
		for tick := time.NewTicker(25 * time.Millisecond); ; {
			select {
			case <-pctx.Done():
				tick.Stop()
				return
			case <-tick.C:
				pub.Publish("devices/d1/telemetry", 0, false, "21.5")
			}
		}
	}()

	startMetricsAdapter(ctx, t, env, "metrics-"+ns)
	metrics, err := customclient.NewForVersionForConfig(env.Config, c.RESTMapper(), schema.GroupVersion{Group: "custom.metrics.k8s.io", Version: "v1beta2"})
	if err != nil {
		t.Fatal(err)
	}
	var b v1alpha1.MQTTBroker
	if err := c.Get(ctx, client.ObjectKeyFromObject(broker), &b); err != nil {
		t.Fatal(err)
	}
	selector, err := labels.Parse(b.Status.Selector)
	if err != nil || b.Status.Selector == "" {
		t.Fatalf("status.selector %q: %v", b.Status.Selector, err)
	}
	// What the autoscaler asks for: the metrics its spec names.
	var hpa autoscalingv2.HorizontalPodAutoscaler
	if err := c.Get(ctx, client.ObjectKeyFromObject(broker), &hpa); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, m := range hpa.Spec.Metrics {
		if m.Pods != nil {
			names = append(names, m.Pods.Metric.Name)
		}
	}
	if len(names) != 2 || names[0] != metricsadapter.ClientsMetric || names[1] != metricsadapter.MessagesMetric {
		t.Fatalf("the HorizontalPodAutoscaler asks for %v, want %s and %s", names, metricsadapter.ClientsMetric, metricsadapter.MessagesMetric)
	}
	perPod := func(metric string) (map[string]float64, error) {
		list, err := metrics.NamespacedMetrics(ns).GetForObjects(schema.GroupKind{Kind: "Pod"}, selector, metric, labels.Everything())
		if err != nil {
			return nil, err
		}
		out := map[string]float64{}
		for _, item := range list.Items {
			if item.Metric.Name != metric || item.DescribedObject.Kind != "Pod" {
				return nil, fmt.Errorf("an item for %+v, %s", item.DescribedObject, item.Metric.Name)
			}
			out[item.DescribedObject.Name] = item.Value.AsApproximateFloat64()
		}
		return out, nil
	}
	eventually(t, time.Minute, "the clients of each pod through the API", func() error {
		got, err := perPod(metricsadapter.ClientsMetric)
		if err != nil {
			return err
		}
		if len(got) != 2 || got["telemetry-0"] != 3 || got["telemetry-1"] != 2 {
			return fmt.Errorf("clients per pod %v, want telemetry-0 3 and telemetry-1 2", got)
		}
		return nil
	})
	eventually(t, 30*time.Second, "the message rate of each pod through the API", func() error {
		got, err := perPod(metricsadapter.MessagesMetric)
		if err != nil {
			return err
		}
		// ~40 PUBLISH/s (under the default per-client limit of 50) into telemetry-1; nobody subscribes, so none go out.
		if len(got) != 2 || got["telemetry-1"] < 20 || got["telemetry-1"] > 60 || got["telemetry-0"] > 5 {
			return fmt.Errorf("messages per second per pod %v, want about 40 on telemetry-1 and none on telemetry-0", got)
		}
		t.Logf("messages per second per pod: %v", got)
		return nil
	})
	one, err := metrics.NamespacedMetrics(ns).GetForObject(schema.GroupKind{Kind: "Pod"}, "telemetry-0", metricsadapter.ClientsMetric, labels.Everything())
	if err != nil || one.Value.Value() != 3 {
		t.Fatalf("telemetry-0 alone: %+v, %v", one, err)
	}
	// A metric it does not serve, or pods that are not brokers: not found.
	if _, err := perPod("mqtt_nonsense"); !apierrors.IsNotFound(err) {
		t.Errorf("an unknown metric: %v, want NotFound", err)
	}
	if _, err := metrics.NamespacedMetrics(ns).GetForObject(schema.GroupKind{Kind: "Pod"}, "not-a-broker", metricsadapter.ClientsMetric, labels.Everything()); !apierrors.IsNotFound(err) {
		t.Errorf("a pod that is not a broker's: %v, want NotFound", err)
	}
	// A client leaves: the figure follows.
	stopPub()
	pub.Disconnect(0)
	eventually(t, 30*time.Second, "telemetry-1's clients after one left", func() error {
		got, err := perPod(metricsadapter.ClientsMetric)
		if err != nil || got["telemetry-1"] != 1 {
			return fmt.Errorf("clients per pod %v (%v), want telemetry-1 1", got, err)
		}
		return nil
	})
}

// startMetricsAdapter runs the adapter in this process as the chart does:
// its own identity with the chart's rules, auth-delegator, a serving
// certificate the APIService trusts by its CA, and a Service whose endpoint
// is this host.
func startMetricsAdapter(ctx context.Context, t *testing.T, env *testenv.Env, ns string) {
	t.Helper()
	c := env.Client
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	user := "system:serviceaccount:" + ns + ":mqtt-operator-metrics-adapter"
	rules, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "charts", "mqtt-operator", "files", "metrics-adapter-rules.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	role := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: ns}}
	if err := yaml.UnmarshalStrict(rules, &role.Rules); err != nil {
		t.Fatalf("the chart's adapter rules: %v", err)
	}
	subject := []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: user}}
	for _, o := range []client.Object{
		role,
		&rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: ns}, Subjects: subject,
			RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: ns}},
		&rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: ns + "-auth-delegator"}, Subjects: subject,
			RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "system:auth-delegator"}},
		&rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Namespace: "kube-system", Name: ns + "-auth-reader"}, Subjects: subject,
			RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "extension-apiserver-authentication-reader"}},
	} {
		if err := c.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	kubeconfig, err := env.KubeConfigFor(user)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	now := time.Now()
	ca, err := pki.NewCA("metrics adapter CA", now, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	serving, err := ca.Issue(pki.Request{CommonName: "mqtt-operator-metrics-adapter", DNSNames: []string{"mqtt-operator-metrics-adapter." + ns + ".svc"}, Validity: 24 * time.Hour}, now)
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{"kubeconfig": kubeconfig, "tls.crt": serving.CertPEM, "tls.key": serving.KeyPEM} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// Endpoints may not be loopback addresses: the adapter listens on this
	// host's own.
	hostIP, port := hostAddress(t)
	actx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- metricsadapter.Run(actx, []string{
			"--bind-address=" + hostIP, "--secure-port=" + strconv.Itoa(port),
			"--tls-cert-file=" + filepath.Join(dir, "tls.crt"), "--tls-private-key-file=" + filepath.Join(dir, "tls.key"),
			"--lister-kubeconfig=" + filepath.Join(dir, "kubeconfig"),
			"--authentication-kubeconfig=" + filepath.Join(dir, "kubeconfig"),
			"--authorization-kubeconfig=" + filepath.Join(dir, "kubeconfig"),
		})
	}()
	t.Cleanup(func() {
		stop()
		select {
		case err := <-done:
			if err != nil && !errors.Is(err, context.Canceled) {
				t.Logf("metrics adapter: %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Error("the metrics adapter did not stop")
		}
	})

	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "mqtt-operator-metrics-adapter"},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "https", Port: 443, TargetPort: intstr.FromInt32(int32(port))}}},
	}
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "mqtt-operator-metrics-adapter",
			Labels: map[string]string{discoveryv1.LabelServiceName: svc.Name}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{hostIP}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}}},
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("https"), Port: ptr.To(int32(port))}},
	}
	apiService := &apiregistrationv1.APIService{
		ObjectMeta: metav1.ObjectMeta{Name: "v1beta2.custom.metrics.k8s.io"},
		Spec: apiregistrationv1.APIServiceSpec{
			Service: &apiregistrationv1.ServiceReference{Namespace: ns, Name: svc.Name, Port: ptr.To[int32](443)},
			Group:   "custom.metrics.k8s.io", Version: "v1beta2", CABundle: ca.CertPEM,
			GroupPriorityMinimum: 100, VersionPriority: 200,
		},
	}
	for _, o := range []client.Object{svc, slice} {
		if err := c.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	reg, err := client.New(env.Config, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := apiregistrationv1.AddToScheme(reg.Scheme()); err != nil {
		t.Fatal(err)
	}
	if err := reg.Create(ctx, apiService); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = reg.Delete(context.Background(), apiService) })
	eventually(t, time.Minute, "the APIService Available", func() error {
		if err := reg.Get(ctx, client.ObjectKeyFromObject(apiService), apiService); err != nil {
			return err
		}
		for _, cond := range apiService.Status.Conditions {
			if cond.Type == apiregistrationv1.Available && cond.Status == apiregistrationv1.ConditionTrue {
				return nil
			}
		}
		return fmt.Errorf("conditions %+v", apiService.Status.Conditions)
	})
}

// hostAddress is a non-loopback IPv4 address of this host and a free port
// on it.
func hostAddress(t *testing.T) (string, int) {
	t.Helper()
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		ipnet, ok := a.(*net.IPNet)
		if !ok || ipnet.IP.IsLoopback() || ipnet.IP.To4() == nil || ipnet.IP.IsLinkLocalUnicast() {
			continue
		}
		l, err := net.Listen("tcp", net.JoinHostPort(ipnet.IP.String(), "0"))
		if err != nil {
			continue
		}
		port := l.Addr().(*net.TCPAddr).Port
		_ = l.Close()
		return ipnet.IP.String(), port
	}
	t.Fatal("this host has no IPv4 address but loopback, and an aggregated API's endpoint may not be a loopback address")
	return "", 0
}
