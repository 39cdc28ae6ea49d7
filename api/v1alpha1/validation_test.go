package v1alpha1_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"

	autoscalingv1 "k8s.io/api/autoscaling/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	v1alpha1 "github.com/mqtt-operator/mqtt-operator/api/v1alpha1"
	"github.com/mqtt-operator/mqtt-operator/internal/testenv"
)

// These tests run the generated CRDs in a real kube-apiserver: what they accept
// and refuse, and with which message, is exactly what a user sees on apply.

var env *testenv.Env

func TestMain(m *testing.M) {
	var err error
	env, err = testenv.Start()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	_ = env.Stop()
	os.Exit(code)
}

var nsCount int

func namespace(t *testing.T) string {
	t.Helper()
	nsCount++
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("validation-%d", nsCount)}}
	if err := env.Client.Create(context.Background(), ns); err != nil {
		t.Fatal(err)
	}
	return ns.Name
}

func object(t *testing.T, ns, manifest string) *unstructured.Unstructured {
	t.Helper()
	u := &unstructured.Unstructured{}
	if err := yaml.Unmarshal([]byte(manifest), &u.Object); err != nil {
		t.Fatalf("bad test manifest: %v\n%s", err, manifest)
	}
	u.SetNamespace(ns)
	return u
}

const brokerHead = "apiVersion: broker.mqtt-operator.io/v1alpha1\nkind: MQTTBroker\nmetadata: {name: b}\n"
const userHead = "apiVersion: broker.mqtt-operator.io/v1alpha1\nkind: MQTTUser\nmetadata: {name: u}\n"
const aclHead = "apiVersion: broker.mqtt-operator.io/v1alpha1\nkind: TopicACL\nmetadata: {name: a}\n"

func acl(topic string) string {
	return aclHead + fmt.Sprintf("spec: {brokerRef: {name: b}, subjects: {users: [dev]}, rules: [{topic: %q, access: Publish}]}", topic)
}

func TestSamplesAreAccepted(t *testing.T) {
	ns := namespace(t)
	objs, err := testenv.Samples(ns)
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]bool{}
	for _, o := range objs {
		kinds[o.GetKind()] = true
		if err := env.Client.Create(context.Background(), o); err != nil {
			t.Errorf("sample %s %s refused: %v", o.GetKind(), o.GetName(), err)
		}
	}
	if !kinds["MQTTBroker"] || !kinds["MQTTUser"] || !kinds["TopicACL"] {
		t.Errorf("expected a sample of every kind, found %v", kinds)
	}
}

func TestDefaults(t *testing.T) {
	ns := namespace(t)
	ctx := context.Background()
	if err := env.Client.Create(ctx, object(t, ns, brokerHead)); err != nil {
		t.Fatal(err)
	}
	var b v1alpha1.MQTTBroker
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "b"}, &b); err != nil {
		t.Fatal(err)
	}
	s := b.Spec
	got := fmt.Sprintf("replicas=%d tcp=%v:%d ws=%v:%d storage=%s maxConn=%d packet=%d qos=%d retain=%v expiry=%s anon=%v svc=%s",
		*s.Replicas, *s.Listeners.TCP.Enabled, s.Listeners.TCP.Port, s.Listeners.WebSocket.Enabled, s.Listeners.WebSocket.Port,
		s.Storage.Type, s.Limits.MaxConnections, s.Limits.MaxPacketSize, *s.Limits.MaxQoS, *s.Limits.RetainAvailable,
		s.Limits.SessionExpiry, s.AllowAnonymous, s.Service.Type)
	want := "replicas=1 tcp=true:1883 ws=false:8083 storage=Ephemeral maxConn=10000 packet=1048576 qos=2 retain=true expiry=2h anon=false svc=ClusterIP"
	if got != want {
		t.Errorf("defaults:\n got %s\nwant %s", got, want)
	}
}

func TestInvalidObjectsAreRefusedWithAClearMessage(t *testing.T) {
	ns := namespace(t)
	long := strings.Repeat("a", 53)
	cases := []struct {
		name, manifest, message string
	}{
		{"replicas above sixteen", brokerHead + "spec: {replicas: 17}", "replicas must be between 0 and 16: 0 stops the broker and keeps its storage, 1 runs one pod, 2 to 16 run one clustered broker"},
		{"negative replicas", brokerHead + "spec: {replicas: -1}", "replicas must be between 0 and 16"},
		{"no listener", brokerHead + "spec: {listeners: {tcp: {enabled: false}}}", "at least one listener must be enabled"},
		{"tls without a tls listener", brokerHead + "spec: {tls: {mode: OperatorManaged}}", "spec.tls is set but neither the tls nor the secureWebsocket listener is enabled"},
		{"existing secret without a name", brokerHead + "spec: {listeners: {tls: {enabled: true}}, tls: {mode: ExistingSecret}}", "mode ExistingSecret needs secretName"},
		{"secret name in another mode", brokerHead + "spec: {listeners: {tls: {enabled: true}}, tls: {secretName: x}}", "secretName only applies to mode ExistingSecret"},
		{"cert-manager without issuer", brokerHead + "spec: {listeners: {tls: {enabled: true}}, tls: {mode: CertManager}}", "mode CertManager needs issuerRef"},
		{"issuer in another mode", brokerHead + "spec: {listeners: {tls: {enabled: true}}, tls: {issuerRef: {name: ca}}}", "issuerRef only applies to mode CertManager"},
		{"renew after expiry", brokerHead + "spec: {listeners: {tls: {enabled: true}}, tls: {certificateDuration: 24h, renewBefore: 48h}}", "renewBefore must be shorter than certificateDuration"},
		{"ca renew after expiry", brokerHead + "spec: {listeners: {tls: {enabled: true}}, tls: {caDuration: 24h, caRenewBefore: 48h, certificateDuration: 12h, renewBefore: 1h}}", "caRenewBefore must be shorter than caDuration"},
		{"certificate outlives ca", brokerHead + "spec: {listeners: {tls: {enabled: true}}, tls: {caDuration: 100h, caRenewBefore: 10h, certificateDuration: 200h, renewBefore: 1h}}", "certificateDuration must not be longer than caDuration"},
		{"tiny certificate duration", brokerHead + "spec: {listeners: {tls: {enabled: true}}, tls: {certificateDuration: 10m, renewBefore: 5m}}", "certificateDuration must be at least 1h"},
		{"duration in days", brokerHead + "spec: {listeners: {tls: {enabled: true}}, tls: {certificateDuration: 90d}}", "certificateDuration"},
		{"bad extra dns name", brokerHead + "spec: {listeners: {tls: {enabled: true}}, tls: {dnsNames: ['Bad_Name']}}", "dnsNames"},
		{"duplicate ports", brokerHead + "spec: {listeners: {websocket: {enabled: true, port: 1883}}}", "enabled listeners must use different ports"},
		{"privileged port", brokerHead + "spec: {listeners: {tcp: {port: 80}}}", "port must be between 1024 and 65535"},
		{"reserved port", brokerHead + "spec: {listeners: {websocket: {enabled: true, port: 9091}}}", "are reserved for the broker itself"},
		{"autoscaling without a target", brokerHead + "spec: {autoscaling: {maxReplicas: 3}}", "autoscaling needs at least one target: targetCPUUtilizationPercentage, targetConnectionsPerPod or targetMessagesPerSecondPerPod"},
		{"autoscaling without a maximum", brokerHead + "spec: {autoscaling: {targetCPUUtilizationPercentage: 70}}", "maxReplicas: Required value"},
		{"autoscaling bounds crossed", brokerHead + "spec: {autoscaling: {minReplicas: 4, maxReplicas: 3, targetCPUUtilizationPercentage: 70}}", "autoscaling.minReplicas must not exceed autoscaling.maxReplicas"},
		{"autoscaling above sixteen", brokerHead + "spec: {autoscaling: {maxReplicas: 17, targetCPUUtilizationPercentage: 70}}", "should be less than or equal to 16"},
		{"autoscaling on no connections", brokerHead + "spec: {autoscaling: {maxReplicas: 3, targetConnectionsPerPod: 0}}", "should be greater than or equal to 1"},
		{"autoscaling on a negative message rate", brokerHead + "spec: {autoscaling: {maxReplicas: 3, targetMessagesPerSecondPerPod: -5}}", "should be greater than or equal to 1"},
		{"autoscaling without a cpu request", brokerHead + "spec: {autoscaling: {maxReplicas: 3, targetCPUUtilizationPercentage: 70}, resources: {requests: {memory: 256Mi}}}", "add resources.requests.cpu"},
		{"autoscaling stabilization over an hour", brokerHead + "spec: {autoscaling: {maxReplicas: 3, targetCPUUtilizationPercentage: 70, scaleDownStabilizationSeconds: 7200}}", "should be less than or equal to 3600"},
		{"size on ephemeral storage", brokerHead + "spec: {storage: {size: 1Gi}}", "storage.size and storage.storageClassName only apply to type Persistent"},
		{"fsync on ephemeral storage", brokerHead + "spec: {storage: {durability: Fsync}}", "storage.durability Fsync needs type Persistent"},
		{"unknown durability", brokerHead + "spec: {storage: {type: Persistent, durability: Always}}", `supported values: "Buffered", "Fsync"`},
		{"tiny packet size", brokerHead + "spec: {limits: {maxPacketSize: 100}}", "maxPacketSize must be between 1024 bytes and 268435455 bytes"},
		{"tiny queue byte budget", brokerHead + "spec: {limits: {maxQueuedBytesPerClient: 1000}}", "maxQueuedBytesPerClient must be between 65536 bytes"},
		{"tiny broker queue budget", brokerHead + "spec: {limits: {maxQueuedBytesTotal: 1000}}", "maxQueuedBytesTotal must be between 1048576 bytes"},
		{"qos 3", brokerHead + "spec: {limits: {maxQoS: 3}}", "maxQoS must be 0, 1 or 2"},
		{"retained bytes not a quantity", brokerHead + "spec: {limits: {maxRetainedBytes: lots}}", "maxRetainedBytes must be a quantity such as 64Mi"},
		{"retained bytes too large", brokerHead + "spec: {limits: {maxRetainedBytes: 1Ti}}", "at most 64Gi"},
		{"tiny topic length", brokerHead + "spec: {limits: {maxTopicLength: 4}}", "should be greater than or equal to 16"},
		{"too many topic aliases", brokerHead + "spec: {limits: {topicAliasMaximum: 1001}}", "topicAliasMaximum must be between 0 (no topic aliases) and 1000"},
		{"negative topic aliases", brokerHead + "spec: {limits: {topicAliasMaximum: -1}}", "topicAliasMaximum must be between 0 (no topic aliases) and 1000"},
		{"tiny connect cap", brokerHead + "spec: {limits: {maxConnectPacketSize: 10}}", "should be greater than or equal to 256"},
		{"session expiry in days", brokerHead + "spec: {limits: {sessionExpiry: 1d}}", "sessionExpiry must be a duration of hours, minutes and seconds"},
		{"session expiry too long", brokerHead + "spec: {limits: {sessionExpiry: 1000h}}", "no longer than 720h"},
		{"keepalive too short", brokerHead + "spec: {limits: {maxKeepalive: 5}}", "maxKeepalive must be between 10 and 65535 seconds"},
		{"reserved pod label", brokerHead + "spec: {pod: {labels: {app.kubernetes.io/instance: x}}}", "pod.labels must not set app.kubernetes.io/name, instance, component or managed-by"},
		{"broker name too long", strings.Replace(brokerHead, "name: b", "name: "+long, 1), "MQTTBroker names are limited to 52 characters"},
		{"user without broker", userHead + "spec: {}", "spec.brokerRef: Required value"},
		{"user broker name", userHead + "spec: {brokerRef: {name: Telemetry}}", "brokerRef.name must be a lowercase RFC 1123 label"},
		{"username with slash", userHead + "spec: {brokerRef: {name: b}, username: a/b}", "a username must not contain '/', '+', '#', '%', spaces or control characters"},
		{"username with wildcard", userHead + "spec: {brokerRef: {name: b}, username: 'dev+1'}", "a username must not contain"},
		{"password secret for a certificate user", userHead + "spec: {brokerRef: {name: b}, authentication: ClientCertificate, passwordSecretRef: {name: s}}", "passwordSecretRef only applies to authentication Password"},
		{"connection secret name", userHead + "spec: {brokerRef: {name: b}, connectionSecretName: My_Secret}", "connectionSecretName must be a valid Secret name"},
		{"user limit of no connections", userHead + "spec: {brokerRef: {name: b}, limits: {maxConnections: 0}}", "spec.limits.maxConnections in body should be greater than or equal to 1"},
		{"user bandwidth below 1 KiB/s", userHead + "spec: {brokerRef: {name: b}, limits: {publishBytesPerSecond: 100}}", "spec.limits.publishBytesPerSecond in body should be greater than or equal to 1024"},
		{"user inflight above 65535", userHead + "spec: {brokerRef: {name: b}, limits: {maxInflight: 70000}}", "spec.limits.maxInflight in body should be less than or equal to 65535"},
		{"rebalance tolerance below 5%", brokerHead + "spec: {rebalance: {tolerancePercent: 1}}", "spec.rebalance.tolerancePercent in body should be greater than or equal to 5"},
		{"rebalance rate above 1000/s", brokerHead + "spec: {rebalance: {clientsPerSecond: 5000}}", "spec.rebalance.clientsPerSecond in body should be less than or equal to 1000"},
		{"hash not last", acl("sensors/#/temperature"), "'#' must be the last level of a topic filter"},
		{"hash inside a level", acl("sensors/room#"), "'#' must be the last level of a topic filter"},
		{"plus inside a level", acl("sensors/room+/temperature"), "'+' must be a whole topic level"},
		{"empty topic", acl(""), "topic must not be empty"},
		{"stray percent", acl("devices/%x/state"), "'%' may only appear as a whole level %u (username) or %c (client ID)"},
		{"substitution inside a level", acl("devices/id-%u/state"), "'%' may only appear as a whole level"},
		{"topic too long", acl(strings.Repeat("t", 1025)), "Too long: may not be more than 1024 bytes"},
		{"no subjects", aclHead + "spec: {brokerRef: {name: b}, subjects: {}, rules: [{topic: a, access: Publish}]}", "subjects must name at least one user, or set allAuthenticated or anonymous"},
		{"no rules", aclHead + "spec: {brokerRef: {name: b}, subjects: {anonymous: true}, rules: []}", "should have at least 1 items"},
		{"unknown access", aclHead + "spec: {brokerRef: {name: b}, subjects: {anonymous: true}, rules: [{topic: a, access: Read}]}", `supported values: "Publish", "Subscribe", "PublishSubscribe"`},
		{"bad subject username", aclHead + "spec: {brokerRef: {name: b}, subjects: {users: ['a#']}, rules: [{topic: a, access: Publish}]}", "a username must not contain"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := env.Client.Create(context.Background(), object(t, ns, tc.manifest))
			if err == nil {
				t.Fatalf("accepted, want refusal with %q", tc.message)
			}
			if !strings.Contains(err.Error(), tc.message) {
				t.Errorf("refused with\n  %v\nwant a message containing\n  %q", err, tc.message)
			}
		})
	}
}

// Per-user limits and rebalancing settings within their bounds.
func TestLimitsAndRebalanceAreAccepted(t *testing.T) {
	ns := namespace(t)
	user := object(t, ns, userHead+"spec: {brokerRef: {name: b}, limits: {maxConnections: 100, maxSubscriptions: 10, publishRate: 5, publishBytesPerSecond: 65536, maxInflight: 16}}")
	if err := env.Client.Create(context.Background(), user); err != nil {
		t.Errorf("user limits refused: %v", err)
	}
	broker := object(t, ns, brokerHead+"spec: {rebalance: {enabled: false, tolerancePercent: 10, clientsPerSecond: 100}}")
	if err := env.Client.Create(context.Background(), broker); err != nil {
		t.Errorf("rebalance settings refused: %v", err)
	}
}

func TestAutoscalingIsAccepted(t *testing.T) {
	ns := namespace(t)
	for i, spec := range []string{
		"{autoscaling: {maxReplicas: 5, targetCPUUtilizationPercentage: 70}}",
		"{autoscaling: {minReplicas: 2, maxReplicas: 16, targetCPUUtilizationPercentage: 50, scaleDownStabilizationSeconds: 0}}",
		"{autoscaling: {maxReplicas: 3, targetCPUUtilizationPercentage: 70}, resources: {requests: {cpu: 250m, memory: 256Mi}}}",
		"{autoscaling: {maxReplicas: 3, targetCPUUtilizationPercentage: 70}, resources: {limits: {cpu: '1'}}}",
		// per-pod figures need no CPU request
		"{autoscaling: {maxReplicas: 3, targetConnectionsPerPod: 5000}, resources: {requests: {memory: 256Mi}}}",
		"{autoscaling: {maxReplicas: 8, targetCPUUtilizationPercentage: 70, targetConnectionsPerPod: 5000, targetMessagesPerSecondPerPod: 20000}}",
	} {
		m := object(t, ns, brokerHead+"spec: "+spec)
		m.SetName(fmt.Sprintf("auto%d", i))
		if err := env.Client.Create(context.Background(), m); err != nil {
			t.Errorf("%s refused: %v", spec, err)
		}
	}
}

func TestValidTopicFiltersAreAccepted(t *testing.T) {
	ns := namespace(t)
	for i, topic := range []string{"#", "+", "sensors/+/temperature/#", "devices/%u/#", "clients/%c/+", "$SYS/broker/#", "a//b", "/leading"} {
		m := object(t, ns, acl(topic))
		m.SetName(fmt.Sprintf("a%d", i))
		if err := env.Client.Create(context.Background(), m); err != nil {
			t.Errorf("topic %q refused: %v", topic, err)
		}
	}
}

func TestImmutableFieldsStayPut(t *testing.T) {
	ns := namespace(t)
	ctx := context.Background()
	cases := []struct {
		name, manifest, path, value, message string
	}{
		{"user brokerRef", userHead + "spec: {brokerRef: {name: b}}", "spec.brokerRef.name", "other", "brokerRef is immutable: delete this MQTTUser"},
		{"acl brokerRef", aclHead + "spec: {brokerRef: {name: b}, subjects: {anonymous: true}, rules: [{topic: a, access: Publish}]}", "spec.brokerRef.name", "other", "brokerRef is immutable: delete this TopicACL"},
		{"broker storage type", brokerHead + "spec: {storage: {type: Ephemeral}}", "spec.storage.type", "Persistent", "storage type, size and storageClassName cannot be changed"},
		{"broker storage size", brokerHead + "spec: {storage: {type: Persistent, size: 1Gi}}", "spec.storage.size", "2Gi", "storage type, size and storageClassName cannot be changed"},
		{"broker storage class", brokerHead + "spec: {storage: {type: Persistent}}", "spec.storage.storageClassName", "fast", "storage type, size and storageClassName cannot be changed"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			obj := object(t, ns, tc.manifest)
			if err := env.Client.Create(ctx, obj); err != nil {
				t.Fatal(err)
			}
			if err := unstructured.SetNestedField(obj.Object, tc.value, strings.Split(tc.path, ".")...); err != nil {
				t.Fatal(err)
			}
			err := env.Client.Update(ctx, obj)
			if err == nil || !strings.Contains(err.Error(), tc.message) {
				t.Errorf("update of %s: got %v, want %q", tc.path, err, tc.message)
			}
			_ = env.Client.Delete(ctx, obj)
		})
	}
}

// durability is the one storage field that may change: it only rolls the
// pods, the volume claims stay.
func TestStorageDurabilityCanChange(t *testing.T) {
	ns := namespace(t)
	ctx := context.Background()
	obj := object(t, ns, brokerHead+"spec: {storage: {type: Persistent, size: 1Gi}}")
	if err := env.Client.Create(ctx, obj); err != nil {
		t.Fatal(err)
	}
	if err := unstructured.SetNestedField(obj.Object, "Fsync", "spec", "storage", "durability"); err != nil {
		t.Fatal(err)
	}
	if err := env.Client.Update(ctx, obj); err != nil {
		t.Errorf("changing storage.durability refused: %v", err)
	}
}

// kubectl scale and HorizontalPodAutoscalers go through the scale subresource;
// the replicas rule must hold there too.
func TestScaleSubresourceKeepsTheReplicaLimit(t *testing.T) {
	ns := namespace(t)
	ctx := context.Background()
	if err := env.Client.Create(ctx, object(t, ns, brokerHead)); err != nil {
		t.Fatal(err)
	}
	broker := &v1alpha1.MQTTBroker{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "b"}}
	scale := &autoscalingv1.Scale{}
	if err := env.Client.SubResource("scale").Get(ctx, broker, scale); err != nil {
		t.Fatal(err)
	}
	scale.Spec.Replicas = 0
	if err := env.Client.SubResource("scale").Update(ctx, broker, client.WithSubResourceBody(scale)); err != nil {
		t.Fatalf("scale to 0 refused: %v", err)
	}
	for _, n := range []int32{3, 16, 1} {
		scale.Spec.Replicas = n
		if err := env.Client.SubResource("scale").Update(ctx, broker, client.WithSubResourceBody(scale)); err != nil {
			t.Fatalf("scale to %d refused: %v", n, err)
		}
	}
	scale.Spec.Replicas = 17
	err := env.Client.SubResource("scale").Update(ctx, broker, client.WithSubResourceBody(scale))
	if err == nil || !strings.Contains(err.Error(), "replicas must be between 0 and 16") {
		t.Errorf("scale to 17: got %v, want the replicas message", err)
	}
}

// Every name the API admits gives children the API server accepts (the
// builders' side is TestLongestNamesGiveValidChildren): an MQTTBroker's
// name is its Services' and pods' (DNS labels, with room for the pod
// ordinal and revision hash), an MQTTUser's is a label value on its
// connection Secret. A TopicACL's name goes into no child, so any name
// Kubernetes allows will do.
func TestObjectNamesAreLimitedToWhatTheirChildrenAllow(t *testing.T) {
	ns := namespace(t)
	withName := func(head, name, spec string) *unstructured.Unstructured {
		o := object(t, ns, head+spec)
		o.SetName(name)
		return o
	}
	const (
		brokerSpec = "spec: {}"
		userSpec   = "spec: {brokerRef: {name: b}}"
		aclSpec    = "spec: {brokerRef: {name: b}, subjects: {anonymous: true}, rules: [{topic: a, access: Publish}]}"
	)
	refused := []struct {
		name string
		obj  *unstructured.Unstructured
		want string
	}{
		{"broker of 53 characters", withName(brokerHead, strings.Repeat("b", 53), brokerSpec), "MQTTBroker names are limited to 52 characters so that the names of its pods and Services stay valid"},
		{"broker with a dot", withName(brokerHead, "tenant.telemetry", brokerSpec), "an MQTTBroker name must start with a lowercase letter and hold only lowercase letters, digits and '-' (no '.')"},
		{"broker starting with a digit", withName(brokerHead, "1telemetry", brokerSpec), "an MQTTBroker name must start with a lowercase letter"},
		{"user of 64 characters", withName(userHead, strings.Repeat("u", 64), userSpec), "MQTTUser names are limited to 63 characters so that they fit the label that marks the user's connection Secret"},
		{"user of 253 characters", withName(userHead, strings.Repeat("u", 253), userSpec), "MQTTUser names are limited to 63 characters"},
		{"acl of 254 characters", withName(aclHead, strings.Repeat("a", 254), aclSpec), "must be no more than 253 characters"},
	}
	for _, tc := range refused {
		t.Run("refuses "+tc.name, func(t *testing.T) {
			err := env.Client.Create(context.Background(), tc.obj)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want a refusal containing %q", err, tc.want)
			}
		})
	}
	accepted := []struct {
		name string
		obj  *unstructured.Unstructured
	}{
		{"broker of 52 characters", withName(brokerHead, "b"+strings.Repeat("-0", 25)+"z", brokerSpec)},
		{"user of 63 characters", withName(userHead, strings.Repeat("u.", 31)+"u", userSpec)},
		{"acl of 253 characters", withName(aclHead, strings.Repeat("a", 253), aclSpec)},
	}
	for _, tc := range accepted {
		t.Run("accepts "+tc.name, func(t *testing.T) {
			if err := env.Client.Create(context.Background(), tc.obj); err != nil {
				t.Errorf("refused: %v", err)
			}
		})
	}
}

// kubectl get shows why an object is not Ready, and a TopicACL whose users
// do not exist yet (Ready, as GitOps may apply it before them) says so.
func TestPrinterColumnsShowTheReason(t *testing.T) {
	want := map[string][]string{
		"mqttbrokers.broker.mqtt-operator.io": {"Ready", "Reason"},
		"mqttusers.broker.mqtt-operator.io":   {"Ready", "Reason"},
		"topicacls.broker.mqtt-operator.io":   {"Ready", "Reason", "Subjects", "Unknown-Users"},
	}
	for name, cols := range want {
		crd := &unstructured.Unstructured{}
		crd.SetAPIVersion("apiextensions.k8s.io/v1")
		crd.SetKind("CustomResourceDefinition")
		if err := env.Client.Get(context.Background(), client.ObjectKey{Name: name}, crd); err != nil {
			t.Fatal(err)
		}
		versions, _, _ := unstructured.NestedSlice(crd.Object, "spec", "versions")
		got := map[string]bool{}
		for _, v := range versions {
			printed, _, _ := unstructured.NestedSlice(v.(map[string]any), "additionalPrinterColumns")
			for _, c := range printed {
				got[c.(map[string]any)["name"].(string)] = true
			}
		}
		for _, c := range cols {
			if !got[c] {
				t.Errorf("%s: no printer column %s (has %v)", name, c, got)
			}
		}
	}
}
