package controllers

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	v1alpha1 "github.com/mqtt-operator/mqtt-operator/api/v1alpha1"
	"github.com/mqtt-operator/mqtt-operator/internal/brokerconfig"
	"github.com/mqtt-operator/mqtt-operator/internal/pki"
	"github.com/mqtt-operator/mqtt-operator/internal/resources"
)

// renderedConfig is the broker config in the named broker's ConfigMap.
func renderedConfig(t *testing.T, ns, broker string) (*brokerconfig.Config, error) {
	t.Helper()
	cm, err := get(t, ns, broker+"-config", &corev1.ConfigMap{})
	if err != nil {
		return nil, err
	}
	return brokerconfig.Parse([]byte(cm.Data[brokerconfig.FileName]))
}

// waitForPeers waits until the named broker's config lists n peers.
func waitForPeers(t *testing.T, ns, broker string, n int) *brokerconfig.Config {
	t.Helper()
	var cfg *brokerconfig.Config
	eventually(t, wait, fmt.Sprintf("%s's config lists %d peers", broker, n), func() (err error) {
		cfg, err = renderedConfig(t, ns, broker)
		if err != nil {
			return err
		}
		if cfg.Cluster == nil || len(cfg.Cluster.Peers) != n {
			return fmt.Errorf("cluster section %+v", cfg.Cluster)
		}
		return nil
	})
	return cfg
}

// clusterCertificate reads the named broker's cluster Secret and checks its
// certificate: a pair for every pod's name under the headless Service,
// good as server and client (either side dials a route), signed by the CA
// in the same Secret. It returns the certificate and the Secret.
func clusterCertificate(t *testing.T, ns, broker string) (*x509.Certificate, *corev1.Secret) {
	t.Helper()
	secret, err := get(t, ns, broker+"-cluster", &corev1.Secret{})
	if err != nil {
		t.Fatal(err)
	}
	cert, err := pki.ParsePair(secret.Data["tls.crt"], secret.Data["tls.key"], testClock.Now())
	if err != nil {
		t.Fatalf("cluster certificate: %v", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(secret.Data["ca.crt"]) {
		t.Fatal("no CA in the cluster Secret")
	}
	for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		pod := fmt.Sprintf("%s-2.%s-headless.%s.svc.cluster.local", broker, broker, ns)
		if _, err := cert.Verify(x509.VerifyOptions{DNSName: pod, Roots: roots, KeyUsages: []x509.ExtKeyUsage{usage}, CurrentTime: testClock.Now()}); err != nil {
			t.Errorf("cluster certificate for %s, usage %v: %v", pod, usage, err)
		}
	}
	b, err := get(t, ns, broker, &v1alpha1.MQTTBroker{})
	if err != nil {
		t.Fatal(err)
	}
	if err := cert.VerifyHostname(resources.ClusterName(b)); err != nil {
		t.Errorf("cluster certificate does not name the cluster: %v", err)
	}
	if len(secret.Data["password"]) < 32 {
		t.Errorf("route password of %d bytes", len(secret.Data["password"]))
	}
	return cert, secret
}

// A broker created with three replicas is clustered: its config names the
// cluster by the broker's UID and every pod as a peer, its pods get the
// cluster port, their name as node name and a Secret with the route
// password and a certificate from a CA of their own (though the broker has
// no TLS listener), the headless Service publishes starting pods on the
// cluster port, and the NetworkPolicy opens it to the broker's pods only.
func TestClusteredBrokerGetsItsMesh(t *testing.T) {
	ns := newNamespace(t)
	b := createBroker(t, ns, func(b *v1alpha1.MQTTBroker) { b.Spec.Replicas = ptr.To[int32](3) })
	cfg := waitForPeers(t, ns, "telemetry", 3)
	if want := "mqtt-" + string(b.UID); cfg.Cluster.Name != want {
		t.Errorf("cluster name %q, want %q", cfg.Cluster.Name, want)
	}
	wantPeers := []string{
		"telemetry-0.telemetry-headless." + ns + ".svc.cluster.local:6222",
		"telemetry-1.telemetry-headless." + ns + ".svc.cluster.local:6222",
		"telemetry-2.telemetry-headless." + ns + ".svc.cluster.local:6222",
	}
	if diff := cmp.Diff(wantPeers, cfg.Cluster.Peers); diff != "" {
		t.Errorf("peers (-want +got):\n%s", diff)
	}
	if cfg.Cluster.NodeName != "" || cfg.Cluster.TLS == nil || cfg.Cluster.PasswordFile != "/etc/mqtt/cluster/password" {
		t.Errorf("cluster section %+v: want no node name (each pod's comes from its env), TLS and the mounted password", cfg.Cluster)
	}

	cert, _ := clusterCertificate(t, ns, "telemetry")
	if want := []string{"*.telemetry-headless." + ns + ".svc", "*.telemetry-headless." + ns + ".svc.cluster.local", cfg.Cluster.Name}; !slices.Equal(cert.DNSNames, want) {
		t.Errorf("cluster certificate names %v, want %v", cert.DNSNames, want)
	}
	if _, err := get(t, ns, "telemetry-ca", &corev1.Secret{}); !apierrors.IsNotFound(err) {
		t.Errorf("the broker's TLS CA should not exist without a TLS listener: %v", err)
	}

	var sts *appsv1.StatefulSet
	eventually(t, wait, "StatefulSet with 3 replicas", func() (err error) {
		sts, err = get(t, ns, "telemetry", &appsv1.StatefulSet{})
		if err == nil && *sts.Spec.Replicas != 3 {
			err = fmt.Errorf("%d replicas", *sts.Spec.Replicas)
		}
		return err
	})
	if sts.Spec.PodManagementPolicy != appsv1.ParallelPodManagement {
		t.Errorf("pod management %q: pods of a cluster must start together to find each other", sts.Spec.PodManagementPolicy)
	}
	pod := sts.Spec.Template.Spec
	c := pod.Containers[0]
	if !slices.ContainsFunc(c.Ports, func(p corev1.ContainerPort) bool { return p.Name == "cluster" && p.ContainerPort == 6222 }) {
		t.Errorf("container ports %+v", c.Ports)
	}
	if !slices.ContainsFunc(c.Env, func(e corev1.EnvVar) bool {
		return e.Name == brokerconfig.NodeNameEnv && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "metadata.name"
	}) {
		t.Errorf("env %+v lacks %s from the pod name", c.Env, brokerconfig.NodeNameEnv)
	}
	for _, v := range pod.Volumes {
		if v.Secret != nil && v.Secret.SecretName == "telemetry-cluster-authority" {
			t.Error("pods mount the cluster CA's key")
		}
	}
	if !slices.ContainsFunc(pod.Volumes, func(v corev1.Volume) bool { return v.Secret != nil && v.Secret.SecretName == "telemetry-cluster" }) {
		t.Errorf("volumes %+v lack the cluster Secret", pod.Volumes)
	}

	headless, err := get(t, ns, "telemetry-headless", &corev1.Service{})
	if err != nil {
		t.Fatal(err)
	}
	if !headless.Spec.PublishNotReadyAddresses || !slices.ContainsFunc(headless.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == "cluster" && p.Port == 6222 }) {
		t.Errorf("headless Service %+v: want the cluster port, publishing pods before they are ready", headless.Spec)
	}
	var np *networkingv1.NetworkPolicy
	eventually(t, wait, "NetworkPolicy", func() (err error) {
		np, err = get(t, ns, "telemetry", &networkingv1.NetworkPolicy{})
		return err
	})
	if from := clusterPortPeers(np); len(from) != 1 || from[0].NamespaceSelector != nil ||
		!cmp.Equal(from[0].PodSelector.MatchLabels, map[string]string{resources.LabelName: "mqtt-broker", resources.LabelInstance: "telemetry"}) {
		t.Errorf("cluster port open to %+v, want this broker's pods only", from)
	}

	waitForCondition(t, ns, v1alpha1.ConditionClustered, metav1.ConditionFalse, ReasonClusterStarting)
	st := brokerStatus(t, ns)
	if st.Cluster == nil || st.Cluster.Name != cfg.Cluster.Name || len(st.Cluster.Members) != 3 || st.Cluster.Members[2].Pod != "telemetry-2" {
		t.Errorf("status.cluster %+v", st.Cluster)
	}
	c0 := meta.FindStatusCondition(st.Conditions, v1alpha1.ConditionClustered)
	if !strings.Contains(c0.Message, "0 of 3 pods in the full mesh") || !strings.Contains(c0.Message, "telemetry-2 (not running yet)") {
		t.Errorf("Clustered message %q should name the pods that have not joined", c0.Message)
	}
}

// clusterPortPeers are who the policy admits to the cluster port.
func clusterPortPeers(np *networkingv1.NetworkPolicy) []networkingv1.NetworkPolicyPeer {
	for _, rule := range np.Spec.Ingress {
		for _, p := range rule.Ports {
			if p.Port.IntValue() == 6222 {
				return rule.From
			}
		}
	}
	return nil
}

// A broker that has only ever run one pod is not clustered and pays
// nothing for it. Its first scale-up makes it clustered (the one change of
// its pod template that scaling ever causes); from then on, scaling
// 3 -> 1 -> 3 -> 0 changes only the peer list, which the broker reloads:
// the pod template, and with it every running pod, stays as it is, and so
// do the cluster's password and certificate.
func TestScalingAClusteredBrokerNeverRestartsItsPods(t *testing.T) {
	ns := newNamespace(t)
	createBroker(t, ns, nil)
	markStatefulSetReady(t, ns, 1)
	waitForCondition(t, ns, v1alpha1.ConditionReady, metav1.ConditionTrue, ReasonPodsReady)
	single, _ := get(t, ns, "telemetry", &appsv1.StatefulSet{})
	if cfg, err := renderedConfig(t, ns, "telemetry"); err != nil || cfg.Cluster != nil {
		t.Fatalf("a one-pod broker got a cluster section: %+v (%v)", cfg, err)
	}
	if _, err := get(t, ns, "telemetry-cluster", &corev1.Secret{}); !apierrors.IsNotFound(err) {
		t.Errorf("a one-pod broker got a cluster Secret: %v", err)
	}
	if st := brokerStatus(t, ns); st.Cluster != nil || meta.FindStatusCondition(st.Conditions, v1alpha1.ConditionClustered) != nil {
		t.Errorf("a one-pod broker reports a cluster: %+v", st)
	}

	template := func(replicas int32) corev1.PodTemplateSpec {
		t.Helper()
		var sts *appsv1.StatefulSet
		eventually(t, wait, fmt.Sprintf("StatefulSet at %d replicas", replicas), func() (err error) {
			sts, err = get(t, ns, "telemetry", &appsv1.StatefulSet{})
			if err == nil && *sts.Spec.Replicas != replicas {
				err = fmt.Errorf("%d replicas", *sts.Spec.Replicas)
			}
			return err
		})
		return sts.Spec.Template
	}
	patchBrokerSpec(t, ns, func(b *v1alpha1.MQTTBroker) { b.Spec.Replicas = ptr.To[int32](3) })
	waitForPeers(t, ns, "telemetry", 3)
	clustered := template(3)
	if cmp.Equal(single.Spec.Template, clustered) {
		t.Error("the first scale-up left the pod template alone, so pod 0 would never join the cluster")
	}
	_, secret := clusterCertificate(t, ns, "telemetry")

	for _, n := range []int32{1, 3, 0, 2} {
		patchBrokerSpec(t, ns, func(b *v1alpha1.MQTTBroker) { b.Spec.Replicas = ptr.To(n) })
		waitForPeers(t, ns, "telemetry", int(max(n, 1)))
		if diff := cmp.Diff(clustered, template(n)); diff != "" {
			t.Errorf("scaling to %d changed the pod template, which restarts running pods:\n%s", n, diff)
		}
	}
	_, after := clusterCertificate(t, ns, "telemetry")
	if !cmp.Equal(secret.Data, after.Data) {
		t.Error("scaling changed the cluster Secret: running pods would lose their routes")
	}
}

// Two clustered brokers in one namespace share nothing that would let one's
// pods into the other's mesh: not the cluster name, the route password, the
// CA, nor the NetworkPolicy's selector.
func TestBrokersInOneNamespaceHaveSeparateClusters(t *testing.T) {
	ns := newNamespace(t)
	createBroker(t, ns, func(b *v1alpha1.MQTTBroker) { b.Spec.Replicas = ptr.To[int32](2) })
	createBroker(t, ns, func(b *v1alpha1.MQTTBroker) { b.Name, b.Spec.Replicas = "fleet", ptr.To[int32](2) })
	a, b := waitForPeers(t, ns, "telemetry", 2), waitForPeers(t, ns, "fleet", 2)
	if a.Cluster.Name == b.Cluster.Name {
		t.Errorf("both brokers are cluster %q", a.Cluster.Name)
	}
	certA, secretA := clusterCertificate(t, ns, "telemetry")
	certB, secretB := clusterCertificate(t, ns, "fleet")
	if string(secretA.Data["password"]) == string(secretB.Data["password"]) {
		t.Error("both brokers' routes use one password")
	}
	for _, tc := range []struct {
		cert  *x509.Certificate
		roots []byte
		name  string
	}{{certB, secretA.Data["ca.crt"], "fleet's certificate with telemetry's CA"}, {certA, secretB.Data["ca.crt"], "telemetry's certificate with fleet's CA"}} {
		roots := x509.NewCertPool()
		roots.AppendCertsFromPEM(tc.roots)
		if _, err := tc.cert.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}, CurrentTime: testClock.Now()}); err == nil {
			t.Errorf("%s verifies: one broker's pod could pass the other's TLS", tc.name)
		}
	}
	for broker, other := range map[string]string{"telemetry": "fleet", "fleet": "telemetry"} {
		var np *networkingv1.NetworkPolicy
		eventually(t, wait, broker+"'s NetworkPolicy", func() (err error) {
			np, err = get(t, ns, broker, &networkingv1.NetworkPolicy{})
			return err
		})
		from := clusterPortPeers(np)
		if len(from) != 1 || from[0].PodSelector.MatchLabels[resources.LabelInstance] != broker {
			t.Errorf("%s's cluster port is open to %+v, want %s's pods only (not %s's)", broker, from, broker, other)
		}
	}
}

// fakePods play clustered broker pods' admin APIs: each loopback address
// answers GET /v1/cluster, for the admin token only, with what the test
// sets.
type fakePods struct {
	token string
	mu    sync.Mutex
	state map[string]brokerconfig.ClusterStatus // by IP
	// onShed, when set, answers POST /v1/shed (under mu): how many clients
	// the pod at ip moves. Without it the route is not found.
	onShed func(ip string, req brokerconfig.ShedRequest) int
}

func (f *fakePods) set(ip string, st brokerconfig.ClusterStatus) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.state[ip] = st
}

func (f *fakePods) serve(t *testing.T, ip string) {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(v1alpha1.AdminPort)))
	if err != nil {
		t.Fatalf("a fake pod's admin API on %s: %v", ip, err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+f.token {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		if r.Method == http.MethodPost && r.URL.Path == "/v1/shed" && f.onShed != nil {
			var req brokerconfig.ShedRequest
			if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
				w.WriteHeader(http.StatusBadRequest)
				return
			}
			f.mu.Lock()
			moving := f.onShed(ip, req)
			f.mu.Unlock()
			w.WriteHeader(http.StatusAccepted)
			_ = json.NewEncoder(w).Encode(brokerconfig.ShedResponse{Moving: moving})
			return
		}
		if r.Method != http.MethodGet || r.URL.Path != "/v1/cluster" {
			http.NotFound(w, r)
			return
		}
		f.mu.Lock()
		st := f.state[ip]
		f.mu.Unlock()
		_ = json.NewEncoder(w).Encode(st)
	})}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
}

// createPod plays the StatefulSet controller and kubelet: pod i of the
// broker's StatefulSet, running at ip, not ready (so no auth push).
func createPod(t *testing.T, sts *appsv1.StatefulSet, i int, ip string) {
	t.Helper()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: fmt.Sprintf("%s-%d", sts.Name, i), Namespace: sts.Namespace, Labels: sts.Spec.Template.Labels,
			OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(sts, appsv1.SchemeGroupVersion.WithKind("StatefulSet"))},
		},
		Spec: *sts.Spec.Template.Spec.DeepCopy(),
	}
	if err := k8s.Create(context.Background(), pod); err != nil {
		t.Fatal(err)
	}
	pod.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}}}
	if err := k8s.Status().Update(context.Background(), pod); err != nil {
		t.Fatal(err)
	}
}

// The Clustered condition and status.cluster come from each pod's own view
// (GET /v1/cluster on its admin API, with the admin token): Starting and
// the missing pod's name while one is not running, MeshPartial and the
// missing routes while a running pod has not joined, True once every pod
// has (its own address in its peer list is not a missing route). That
// step comes with no pod event: the operator looks again by itself while
// the mesh is partial. A joined pod that loses a route makes it partial
// again.
func TestClusteredConditionComesFromThePods(t *testing.T) {
	ns := newNamespace(t)
	b := createBroker(t, ns, func(b *v1alpha1.MQTTBroker) { b.Spec.Replicas = ptr.To[int32](3) })
	cfg := waitForPeers(t, ns, "telemetry", 3)
	var sts *appsv1.StatefulSet
	var admin *corev1.Secret
	eventually(t, wait, "StatefulSet and admin token", func() (err error) {
		if sts, err = get(t, ns, "telemetry", &appsv1.StatefulSet{}); err != nil {
			return err
		}
		admin, err = get(t, ns, "telemetry-admin", &corev1.Secret{})
		return err
	})
	fake := &fakePods{token: string(admin.Data[resources.AdminTokenKey]), state: map[string]brokerconfig.ClusterStatus{}}
	ips := []string{"127.0.99.1", "127.0.99.2", "127.0.99.3"}
	view := func(i int, joined bool, connected ...int) brokerconfig.ClusterStatus {
		st := brokerconfig.ClusterStatus{Name: "mqtt-" + string(b.UID), Node: fmt.Sprintf("telemetry-%d", i), Joined: joined}
		for j, addr := range cfg.Cluster.Peers {
			if j != i {
				st.Peers = append(st.Peers, brokerconfig.PeerStatus{Address: addr, Connected: slices.Contains(connected, j)})
			}
		}
		// Where peers are addresses (local pods), a pod lists itself too.
		st.Peers = append(st.Peers, brokerconfig.PeerStatus{Address: ips[i] + ":6222"})
		return st
	}
	for i, ip := range ips {
		fake.set(ip, view(i, false))
		fake.serve(t, ip)
	}

	createPod(t, sts, 0, ips[0])
	createPod(t, sts, 1, ips[1])
	fake.set(ips[0], view(0, false, 1))
	fake.set(ips[1], view(1, false, 0))
	waitForConditionMessage(t, ns, ReasonClusterStarting, "telemetry-2 (not running yet)")

	createPod(t, sts, 2, ips[2])
	waitForConditionMessage(t, ns, ReasonMeshPartial, "telemetry-2 (no route to "+cfg.Cluster.Peers[0]+", "+cfg.Cluster.Peers[1]+")")
	st := brokerStatus(t, ns)
	if m := st.Cluster.Members[0]; m.Pod != "telemetry-0" || m.Joined || m.ConnectedPeers != 1 || !slices.Equal(m.MissingPeers, cfg.Cluster.Peers[2:]) {
		t.Errorf("member 0: %+v", m)
	}

	for i, ip := range ips {
		fake.set(ip, view(i, true, 0, 1, 2))
	}
	waitForConditionMessage(t, ns, ReasonClusterJoined, "all 3 pods joined the mesh")
	for _, m := range brokerStatus(t, ns).Cluster.Members {
		if !m.Joined || m.ConnectedPeers != 2 || len(m.MissingPeers) != 0 || m.Message != "" {
			t.Errorf("member %+v after every pod joined", m)
		}
	}

	// A pod stays joined (and ready) when it loses a route; the next look,
	// here brought by a pod event, reports the partial mesh.
	fake.set(ips[1], view(1, true, 0))
	pod := &corev1.Pod{}
	if _, err := get(t, ns, "telemetry-1", pod); err != nil {
		t.Fatal(err)
	}
	pod.Annotations = map[string]string{"touched": "yes"}
	if err := k8s.Update(context.Background(), pod); err != nil {
		t.Fatal(err)
	}
	waitForConditionMessage(t, ns, ReasonMeshPartial, "2 of 3 pods in the full mesh; not: telemetry-1 (no route to "+cfg.Cluster.Peers[2]+")")

	// The route returns: whole again, found by the backoff. (A whole mesh
	// also leaves the suite's reconcile counts alone.)
	fake.set(ips[1], view(1, true, 0, 2))
	waitForConditionMessage(t, ns, ReasonClusterJoined, "all 3 pods joined the mesh")
}

// waitForConditionMessage waits for the Clustered condition with reason and
// a message that contains part.
func waitForConditionMessage(t *testing.T, ns, reason, part string) {
	t.Helper()
	eventually(t, wait, "Clustered "+reason, func() error {
		c := meta.FindStatusCondition(brokerStatus(t, ns).Conditions, v1alpha1.ConditionClustered)
		if c == nil || c.Reason != reason || !strings.Contains(c.Message, part) {
			return errors.New(fmt.Sprint("Clustered condition ", c))
		}
		return nil
	})
}
