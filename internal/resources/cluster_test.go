package resources

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/utils/ptr"

	v1alpha1 "github.com/mqtt-operator/mqtt-operator/api/v1alpha1"
	"github.com/mqtt-operator/mqtt-operator/internal/brokerconfig"
)

// A clustered broker's config names its cluster after the broker's UID,
// lists every pod under the headless Service as a peer and points at the
// mounted cluster Secret; the broker accepts it (Validate runs in
// BrokerConfig).
func TestClusterSectionIsRendered(t *testing.T) {
	b := loadBroker(t, "clustered")
	cfg, err := BrokerConfig(b, &Clustering{Peers: 3}, testOptions)
	if err != nil {
		t.Fatal(err)
	}
	want := &brokerconfig.Cluster{
		Name:    "mqtt-11111111-2222-3333-4444-555555555555",
		Address: ":6222",
		Peers: []string{
			"telemetry-0.telemetry-headless.tenant-a.svc.cluster.local:6222",
			"telemetry-1.telemetry-headless.tenant-a.svc.cluster.local:6222",
			"telemetry-2.telemetry-headless.tenant-a.svc.cluster.local:6222",
		},
		PasswordFile: "/etc/mqtt/cluster/password",
		TLS:          &brokerconfig.ClusterTLS{CertFile: "/etc/mqtt/cluster/tls.crt", KeyFile: "/etc/mqtt/cluster/tls.key", CAFile: "/etc/mqtt/cluster/ca.crt"},
	}
	if diff := cmp.Diff(want, cfg.Cluster); diff != "" {
		t.Errorf("cluster section (-want +got):\n%s", diff)
	}
	if single, _ := BrokerConfig(b, nil, testOptions); single.Cluster != nil {
		t.Error("a broker that is not clustered got a cluster section")
	}
}

// Scaling a clustered broker changes its peer list, which the broker
// reloads, and nothing in the pod template: no running pod restarts.
func TestScalingAClusteredBrokerLeavesThePodTemplateAlone(t *testing.T) {
	b := loadBroker(t, "clustered")
	var base *brokerconfig.Config
	var template corev1.PodTemplateSpec
	for _, n := range []int32{3, 1, 5, 16, 2} {
		b.Spec.Replicas = ptr.To(n)
		cfg, err := BrokerConfig(b, &Clustering{Peers: n}, testOptions)
		if err != nil {
			t.Fatalf("%d peers: %v", n, err)
		}
		sts := StatefulSet(b, cfg, testOptions)
		if len(cfg.Cluster.Peers) != int(n) {
			t.Errorf("%d replicas: %d peers", n, len(cfg.Cluster.Peers))
		}
		if base == nil {
			base, template = cfg, sts.Spec.Template
			continue
		}
		if diff := cmp.Diff(template, sts.Spec.Template); diff != "" {
			t.Errorf("scaling to %d changed the pod template, which restarts the running pods:\n%s", n, diff)
		}
		withoutPeers := func(c *brokerconfig.Config) brokerconfig.Config {
			cp := *c
			cl := *c.Cluster
			cl.Peers = nil
			cp.Cluster = &cl
			return cp
		}
		if diff := cmp.Diff(withoutPeers(base), withoutPeers(cfg)); diff != "" {
			t.Errorf("scaling to %d changed more of the config than the peers:\n%s", n, diff)
		}
	}
}

// The container of a clustered broker has the cluster port, its pod name as
// its node name and the cluster Secret; one that is not clustered has none
// of them.
func TestClusteredPodsGetPortNodeNameAndSecret(t *testing.T) {
	b := loadBroker(t, "clustered")
	cfg, _ := BrokerConfig(b, &Clustering{Peers: 3}, testOptions)
	pod := StatefulSet(b, cfg, testOptions).Spec.Template.Spec
	c := pod.Containers[0]
	if !hasPort(c.Ports, "cluster", ClusterPort) {
		t.Errorf("container ports %+v lack cluster:6222", c.Ports)
	}
	var nodeName *corev1.EnvVar
	for i := range c.Env {
		if c.Env[i].Name == brokerconfig.NodeNameEnv {
			nodeName = &c.Env[i]
		}
	}
	if nodeName == nil || nodeName.ValueFrom == nil || nodeName.ValueFrom.FieldRef == nil || nodeName.ValueFrom.FieldRef.FieldPath != "metadata.name" {
		t.Errorf("%s should come from the pod name, got %+v", brokerconfig.NodeNameEnv, nodeName)
	}
	mounted := false
	for _, m := range c.VolumeMounts {
		mounted = mounted || (m.Name == "cluster" && m.MountPath == "/etc/mqtt/cluster" && m.ReadOnly)
	}
	secret := false
	for _, v := range pod.Volumes {
		secret = secret || (v.Name == "cluster" && v.Secret != nil && v.Secret.SecretName == "telemetry-cluster" && *v.Secret.DefaultMode == 0o440)
	}
	if !mounted || !secret {
		t.Errorf("cluster Secret mounted %v, volume %v", mounted, secret)
	}
	headless := HeadlessService(b, cfg)
	if !headless.Spec.PublishNotReadyAddresses || !hasServicePort(headless.Spec.Ports, "cluster", ClusterPort) {
		t.Errorf("headless Service must publish starting pods and the cluster port: %+v", headless.Spec)
	}

	single, _ := BrokerConfig(b, nil, testOptions)
	c = StatefulSet(b, single, testOptions).Spec.Template.Spec.Containers[0]
	if hasPort(c.Ports, "cluster", ClusterPort) || len(c.Env) != 1 {
		t.Errorf("a broker that is not clustered got cluster ports %+v or env %+v", c.Ports, c.Env)
	}
	if hasServicePort(HeadlessService(b, single).Spec.Ports, "cluster", ClusterPort) {
		t.Error("a broker that is not clustered exposes the cluster port")
	}
}

func hasPort(ports []corev1.ContainerPort, name string, port int32) bool {
	for _, p := range ports {
		if p.Name == name && p.ContainerPort == port {
			return true
		}
	}
	return false
}

func hasServicePort(ports []corev1.ServicePort, name string, port int32) bool {
	for _, p := range ports {
		if p.Name == name && p.Port == port && p.TargetPort.StrVal == name {
			return true
		}
	}
	return false
}

// The cluster port admits exactly the pods of the same broker: a pod
// selector with its instance label, no namespace selector (so only this
// namespace), and nothing else may reach it.
func TestClusterPortIsOpenOnlyBetweenTheBrokersPods(t *testing.T) {
	b := loadBroker(t, "clustered")
	other := loadBroker(t, "clustered")
	other.Name = "telemetry-b"
	cfg, _ := BrokerConfig(b, &Clustering{Peers: 3}, testOptions)
	np := NetworkPolicy(b, cfg, testOptions)
	var rules int
	for _, rule := range np.Spec.Ingress {
		for _, p := range rule.Ports {
			if p.Port.IntValue() != ClusterPort {
				continue
			}
			rules++
			if len(rule.From) != 1 || rule.From[0].NamespaceSelector != nil || rule.From[0].IPBlock != nil || rule.From[0].PodSelector == nil {
				t.Fatalf("cluster port rule admits %+v, want only this broker's pods", rule.From)
			}
			sel := rule.From[0].PodSelector
			if diff := cmp.Diff(SelectorLabels(b), sel.MatchLabels); diff != "" || len(sel.MatchExpressions) != 0 {
				t.Errorf("cluster port selector (-want +got):\n%s", diff)
			}
			if matches(sel.MatchLabels, commonLabels(other)) {
				t.Error("the cluster port admits the pods of another broker in the namespace")
			}
			if !matches(sel.MatchLabels, commonLabels(b)) {
				t.Error("the cluster port does not admit the broker's own pods")
			}
		}
	}
	if rules != 1 {
		t.Errorf("%d ingress rules name the cluster port, want 1", rules)
	}
	single, _ := BrokerConfig(b, nil, testOptions)
	for _, rule := range NetworkPolicy(b, single, testOptions).Spec.Ingress {
		for _, p := range rule.Ports {
			if p.Port.IntValue() == ClusterPort {
				t.Error("a broker that is not clustered opens the cluster port")
			}
		}
	}
}

func matches(selector, labels map[string]string) bool {
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// Two brokers, even of one name (deleted and created again), never share a
// cluster name.
func TestClusterNameIsTheBrokersUID(t *testing.T) {
	a := loadBroker(t, "clustered")
	b := loadBroker(t, "clustered")
	b.UID = types.UID("99999999-2222-3333-4444-555555555555")
	if ClusterName(a) == ClusterName(b) {
		t.Errorf("brokers with different UIDs share the cluster name %q", ClusterName(a))
	}
}

// The longest names give a cluster name, peer addresses, certificate names
// and Secrets the broker and the API server accept.
func TestLongestNamesGiveAValidCluster(t *testing.T) {
	b := loadBroker(t, "clustered")
	b.Name = "b" + strings.Repeat("x", 50) + "z"
	b.Namespace = strings.Repeat("n", 63)
	if _, err := BrokerConfig(b, &Clustering{Peers: brokerconfig.MaxClusterPeers}, testOptions); err != nil {
		t.Fatalf("the broker would refuse the cluster section: %v", err)
	}
	for _, name := range ClusterDNSNames(b, testOptions) {
		errs := validation.IsDNS1123Subdomain(name)
		if strings.HasPrefix(name, "*.") {
			errs = validation.IsWildcardDNS1123Subdomain(name)
		}
		if len(errs) > 0 {
			t.Errorf("cluster DNS name %s: %v", name, errs)
		}
	}
	for _, s := range []*corev1.Secret{ClusterSecret(b, nil, nil, nil, nil), ClusterAuthoritySecret(b, nil)} {
		if errs := validation.IsDNS1123Subdomain(s.Name); len(errs) > 0 {
			t.Errorf("Secret %s: %v", s.Name, errs)
		}
	}
	for _, cn := range []string{ClusterCommonName(b), ClusterCACommonName(b)} {
		if len(cn) > 64 || !strings.HasPrefix(cn, b.Name) {
			t.Errorf("common name %q: want at most 64 characters, starting with the broker's name", cn)
		}
	}
}

// No Secret of one broker is another broker's: a broker named
// "<name>-cluster" has no Secret named like a cluster Secret of "<name>".
func TestClusterSecretNamesCollideWithNoOtherBrokersSecrets(t *testing.T) {
	secrets := func(b *v1alpha1.MQTTBroker) []string {
		return []string{AuthSecretName(b), AuthStateSecretName(b), AdminSecretName(b), TLSSecretName(b), CASecretName(b),
			CertManagerSecretName(b), ClusterSecretName(b), ClusterAuthoritySecretName(b)}
	}
	a := loadBroker(t, "clustered")
	mine := map[string]bool{}
	for _, n := range secrets(a) {
		mine[n] = true
	}
	other := loadBroker(t, "clustered")
	for _, x := range []string{"-auth", "-admin", "-tls", "-ca", "-cluster"} {
		other.Name = a.Name + x
		for _, n := range secrets(other) {
			if mine[n] {
				t.Errorf("Secret %s belongs to broker %s and to broker %s", n, a.Name, other.Name)
			}
		}
	}
}
