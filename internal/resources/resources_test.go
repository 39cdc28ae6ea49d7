package resources

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	v1alpha1 "github.com/mqtt-operator/mqtt-operator/api/v1alpha1"
	"github.com/mqtt-operator/mqtt-operator/internal/brokerconfig"
)

var update = flag.Bool("update", false, "rewrite the golden files from the current builders")

var testOptions = Options{BrokerImage: "mqtt-operator/broker:test", OperatorNamespace: "mqtt-operator-system"}

func loadBroker(t *testing.T, name string) *v1alpha1.MQTTBroker {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", name+".broker.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	b := &v1alpha1.MQTTBroker{}
	if err := yaml.UnmarshalStrict(data, b); err != nil {
		t.Fatal(err)
	}
	return b
}

// goldenClustering is how each golden broker is rendered: clustered ones
// with as many peers as replicas.
var goldenClustering = map[string]*Clustering{"minimal": nil, "full": nil, "clustered": {Peers: 3}}

// render returns every child the controller would apply, as one YAML stream.
func render(t *testing.T, b *v1alpha1.MQTTBroker, cl *Clustering) []byte {
	t.Helper()
	cfg, err := BrokerConfig(b, cl, testOptions)
	if err != nil {
		t.Fatal(err)
	}
	cm, err := ConfigMap(b, cfg)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	for _, obj := range []runtime.Object{cm, ServiceAccount(b), HeadlessService(b, cfg), ClientService(b), PodDisruptionBudget(b), NetworkPolicy(b, cfg, testOptions), StatefulSet(b, cfg, testOptions)} {
		data, err := yaml.Marshal(obj)
		if err != nil {
			t.Fatal(err)
		}
		out.WriteString("---\n")
		out.Write(data)
	}
	return out.Bytes()
}

func TestGoldenChildren(t *testing.T) {
	for _, name := range []string{"minimal", "full", "clustered"} {
		t.Run(name, func(t *testing.T) {
			got := render(t, loadBroker(t, name), goldenClustering[name])
			golden := filepath.Join("testdata", name+".golden.yaml")
			if *update {
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test ./internal/resources -update to create it)", err)
			}
			if diff := cmp.Diff(string(want), string(got)); diff != "" {
				t.Errorf("children differ from %s (-want +got); if intended, rerun with -update:\n%s", golden, diff)
			}
		})
	}
}

// What the broker reloads in place must leave the pod template, and with it
// the running pods, alone. What it cannot apply in place (listeners, image,
// the limits fixed at start) must roll the pods.
// The queue byte budgets reach the broker's configuration.
func TestQueueByteBudgetsAreRendered(t *testing.T) {
	b := loadBroker(t, "minimal")
	b.Spec.Limits.MaxQueuedBytesPerClient, b.Spec.Limits.MaxQueuedBytesTotal = 1<<20, 64<<20
	cfg, err := BrokerConfig(b, nil, testOptions)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Limits.MaxQueuedBytesPerClient != 1<<20 || cfg.Limits.MaxQueuedBytesTotal != 64<<20 {
		t.Errorf("rendered %d and %d, want 1 MiB and 64 MiB", cfg.Limits.MaxQueuedBytesPerClient, cfg.Limits.MaxQueuedBytesTotal)
	}
}

func TestOnlyRestartRequiringChangesTouchThePodTemplate(t *testing.T) {
	template := func(mutate func(*v1alpha1.MQTTBroker)) corev1.PodTemplateSpec {
		b := loadBroker(t, "minimal")
		mutate(b)
		cfg, err := BrokerConfig(b, nil, testOptions)
		if err != nil {
			t.Fatal(err)
		}
		return StatefulSet(b, cfg, testOptions).Spec.Template
	}
	base := template(func(*v1alpha1.MQTTBroker) {})
	inPlace := map[string]func(*v1alpha1.MQTTBroker){
		"maxConnections": func(b *v1alpha1.MQTTBroker) { b.Spec.Limits.MaxConnections = 7 },
		"publishRate":    func(b *v1alpha1.MQTTBroker) { b.Spec.Limits.PublishRatePerClient = 10 },
		"maxPacketSize":  func(b *v1alpha1.MQTTBroker) { b.Spec.Limits.MaxPacketSize = 4096 },
		"maxKeepalive":   func(b *v1alpha1.MQTTBroker) { b.Spec.Limits.MaxKeepalive = 30 },
		"maxSubs":        func(b *v1alpha1.MQTTBroker) { b.Spec.Limits.MaxSubscriptionsPerClient = 3 },
		"queueBytes":     func(b *v1alpha1.MQTTBroker) { b.Spec.Limits.MaxQueuedBytesPerClient = 1 << 20 },
		"queueTotal":     func(b *v1alpha1.MQTTBroker) { b.Spec.Limits.MaxQueuedBytesTotal = 64 << 20 },
		"allowAnonymous": func(b *v1alpha1.MQTTBroker) { b.Spec.AllowAnonymous = true },
		"preauthBudget": func(b *v1alpha1.MQTTBroker) {
			b.Spec.Limits.MaxPendingConnections, b.Spec.Limits.MaxPendingConnectionsPerAddress = 100, 10
			b.Spec.Limits.ConnectRatePerAddress, b.Spec.Limits.MaxConnectPacketSize = 5, 4096
		},
		"serviceType": func(b *v1alpha1.MQTTBroker) { b.Spec.Service.Type = corev1.ServiceTypeNodePort },
	}
	for name, mutate := range inPlace {
		if diff := cmp.Diff(base, template(mutate)); diff != "" {
			t.Errorf("%s changed the pod template, which would restart every pod:\n%s", name, diff)
		}
	}
	restart := map[string]func(*v1alpha1.MQTTBroker){
		"tcp port":          func(b *v1alpha1.MQTTBroker) { b.Spec.Listeners.TCP.Port = 11883 },
		"websocket enabled": func(b *v1alpha1.MQTTBroker) { b.Spec.Listeners.WebSocket.Enabled = true },
		"image":             func(b *v1alpha1.MQTTBroker) { b.Spec.Image = "other:1" },
		// mochi fixes these when it starts.
		"sessionExpiry": func(b *v1alpha1.MQTTBroker) { b.Spec.Limits.SessionExpiry = "5m" },
		"maxQoS":        func(b *v1alpha1.MQTTBroker) { b.Spec.Limits.MaxQoS = ptr.To[int32](1) },
		"maxInflight":   func(b *v1alpha1.MQTTBroker) { b.Spec.Limits.MaxInflight = 3 },
		"retain":        func(b *v1alpha1.MQTTBroker) { b.Spec.Limits.RetainAvailable = ptr.To(false) },
		"durability": func(b *v1alpha1.MQTTBroker) {
			b.Spec.Storage.Type, b.Spec.Storage.Durability = v1alpha1.StoragePersistent, v1alpha1.DurabilityFsync
		},
	}
	for name, mutate := range restart {
		if cmp.Equal(base, template(mutate)) {
			t.Errorf("%s left the pod template unchanged, so running pods would never pick it up", name)
		}
	}
}

// The broker pods must pass the restricted Pod Security Standard.
func TestPodsAreRestricted(t *testing.T) {
	for _, name := range []string{"minimal", "full", "clustered"} {
		b := loadBroker(t, name)
		cfg, _ := BrokerConfig(b, goldenClustering[name], testOptions)
		pod := StatefulSet(b, cfg, testOptions).Spec.Template.Spec
		if pod.SecurityContext.RunAsNonRoot == nil || !*pod.SecurityContext.RunAsNonRoot || *pod.SecurityContext.RunAsUser == 0 {
			t.Errorf("%s: pod may run as root", name)
		}
		if pod.SecurityContext.SeccompProfile == nil || pod.SecurityContext.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
			t.Errorf("%s: no RuntimeDefault seccomp profile", name)
		}
		if pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
			t.Errorf("%s: service account token mounted, but the broker never calls the API", name)
		}
		for _, c := range pod.Containers {
			sc := c.SecurityContext
			if sc == nil || !*sc.ReadOnlyRootFilesystem || *sc.AllowPrivilegeEscalation || len(sc.Capabilities.Drop) != 1 || sc.Capabilities.Drop[0] != "ALL" || len(sc.Capabilities.Add) != 0 {
				t.Errorf("%s: container %s security context is not restricted: %+v", name, c.Name, sc)
			}
		}
		for _, v := range pod.Volumes {
			if v.HostPath != nil {
				t.Errorf("%s: hostPath volume %s", name, v.Name)
			}
		}
	}
}

func TestUserPodLabelsCannotStealTheSelector(t *testing.T) {
	b := loadBroker(t, "minimal")
	b.Spec.Pod.Labels = map[string]string{LabelInstance: "someone-else", "team": "iot"}
	cfg, _ := BrokerConfig(b, nil, testOptions)
	labels := StatefulSet(b, cfg, testOptions).Spec.Template.Labels
	if labels[LabelInstance] != "minimal" || labels["team"] != "iot" {
		t.Errorf("pod labels %v: selector label overridden or user label lost", labels)
	}
}

func TestAdminPortClosedWithoutOperatorNamespace(t *testing.T) {
	b := loadBroker(t, "minimal")
	cfg, _ := BrokerConfig(b, nil, testOptions)
	np := NetworkPolicy(b, cfg, Options{})
	for _, rule := range np.Spec.Ingress {
		for _, p := range rule.Ports {
			if p.Port.IntValue() == v1alpha1.AdminPort {
				t.Errorf("admin port open to %v without a known operator namespace", rule.From)
			}
		}
	}
	np = NetworkPolicy(b, cfg, testOptions)
	last := np.Spec.Ingress[len(np.Spec.Ingress)-1]
	if last.Ports[0].Port.IntValue() != v1alpha1.AdminPort || len(last.From) != 1 || last.From[0].NamespaceSelector == nil {
		t.Errorf("admin port rule should admit only the operator's namespace, got %+v", last)
	}
}

func TestEndpoints(t *testing.T) {
	got := Endpoints(loadBroker(t, "full"))
	var urls []string
	for _, e := range got {
		urls = append(urls, e.URL)
	}
	want := "mqtt://telemetry.tenant-b.svc:1883 ws://telemetry.tenant-b.svc:8083/mqtt"
	if strings.Join(urls, " ") != want {
		t.Errorf("endpoints %q, want %q", strings.Join(urls, " "), want)
	}
}

// What the operator renders, the broker accepts: the ConfigMap payload goes
// through the same Parse the broker runs at start and on every reload.
func TestRenderedConfigParsesAsTheBrokerReadsIt(t *testing.T) {
	for _, name := range []string{"minimal", "full"} {
		b := loadBroker(t, name)
		cfg, err := BrokerConfig(b, nil, testOptions)
		if err != nil {
			t.Fatal(err)
		}
		cm, err := ConfigMap(b, cfg)
		if err != nil {
			t.Fatal(err)
		}
		parsed, err := brokerconfig.Parse([]byte(cm.Data[brokerconfig.FileName]))
		if err != nil {
			t.Fatalf("%s: broker would refuse the rendered config: %v", name, err)
		}
		if diff := cmp.Diff(cfg, parsed); diff != "" {
			t.Errorf("%s: config changed on the way through the file (-rendered +parsed):\n%s", name, diff)
		}
	}
}

// A healthy start is silent: the first startup probe comes after the broker
// has opened its health port (well under a second), and the budget before
// the kubelet restarts a slow starter is still at least 30 s.
func TestStartupProbeWaitsForTheBrokersStart(t *testing.T) {
	b := loadBroker(t, "minimal")
	cfg, err := BrokerConfig(b, nil, testOptions)
	if err != nil {
		t.Fatal(err)
	}
	p := StatefulSet(b, cfg, testOptions).Spec.Template.Spec.Containers[0].StartupProbe
	if p.InitialDelaySeconds < 2 {
		t.Errorf("startup probe initialDelaySeconds %d: the first probe can come before the broker listens", p.InitialDelaySeconds)
	}
	if budget := p.InitialDelaySeconds + p.PeriodSeconds*p.FailureThreshold; budget < 30 {
		t.Errorf("startup budget %d s, want at least 30 s", budget)
	}
}
