package localpods

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/mqtt-operator/mqtt-operator/internal/brokerconfig"
)

var testMounts = mountTable{
	{containerPath: "/etc/mqtt/config", hostPath: "/work/p/volumes/config"},
	{containerPath: "/etc/mqtt/auth", hostPath: "/work/p/volumes/auth"},
	{containerPath: "/var/lib/mqtt", hostPath: "/work/pvc/data-b-0"},
	{containerPath: "/var/lib/mqtt/cache", hostPath: "/work/p/volumes/cache"},
	{containerPath: "/tmp", hostPath: "/work/p/volumes/tmp"},
}

func TestRewriteArgs(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"flag=path under a mount", "--config=/etc/mqtt/config/broker.yaml", "--config=/work/p/volumes/config/broker.yaml"},
		{"single-dash flag", "-auth-bundle=/etc/mqtt/auth/auth.json", "-auth-bundle=/work/p/volumes/auth/auth.json"},
		{"the mount path itself", "--data=/var/lib/mqtt", "--data=/work/pvc/data-b-0"},
		{"nested mount wins", "--cache=/var/lib/mqtt/cache/x", "--cache=/work/p/volumes/cache/x"},
		{"bare path argument", "/etc/mqtt/auth/auth.json", "/work/p/volumes/auth/auth.json"},
		{"path outside any mount", "--admin-token-file=/etc/mqtt/admin/token", "--admin-token-file=/etc/mqtt/admin/token"},
		{"prefix that is not a directory", "--config=/etc/mqtt/configs/x", "--config=/etc/mqtt/configs/x"},
		{"not a path", "--drain-period=45s", "--drain-period=45s"},
		{"relative path", "--config=etc/mqtt/config/broker.yaml", "--config=etc/mqtt/config/broker.yaml"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := rewriteArgs([]string{tc.in}, testMounts)[0]; got != tc.want {
				t.Errorf("rewriteArgs(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

func testBrokerConfig() *brokerconfig.Config {
	return &brokerconfig.Config{
		Version: brokerconfig.Version,
		Listeners: []brokerconfig.Listener{
			{Name: "mqtt", Protocol: brokerconfig.ProtocolTCP, Address: ":1883"},
			{Name: "ws", Protocol: brokerconfig.ProtocolWebSocket, Address: "0.0.0.0:8083", Path: "/mqtt"},
			{Name: "mqtts", Protocol: brokerconfig.ProtocolTLS, Address: ":8883"},
		},
		HealthAddress: ":9090", AdminAddress: ":9091",
		Limits: brokerconfig.Limits{
			MaxConnections: 10, MaxPacketSize: 4096, MaxInflight: 8, MaxQoS: 2, RetainAvailable: true,
			MaxKeepaliveSeconds: 60, MaxSubscriptionsPerClient: 10,
		},
		Storage: brokerconfig.Storage{Persistent: true, Path: "/var/lib/mqtt"},
		TLS:     &brokerconfig.TLS{CertFile: "/etc/mqtt/auth/tls.crt", KeyFile: "/etc/mqtt/auth/tls.key"},
	}
}

func TestRewriteBrokerConfig(t *testing.T) {
	in, err := brokerconfig.Marshal(testBrokerConfig())
	if err != nil {
		t.Fatal(err)
	}
	out, err := rewriteBrokerConfig(in, "127.0.0.7", testMounts, noPeers)
	if err != nil {
		t.Fatal(err)
	}
	got, err := brokerconfig.Parse(out)
	if err != nil {
		t.Fatalf("the rewritten config is invalid: %v", err)
	}
	want := testBrokerConfig()
	want.Listeners[0].Address, want.Listeners[1].Address, want.Listeners[2].Address = "127.0.0.7:1883", "127.0.0.7:8083", "127.0.0.7:8883"
	want.HealthAddress, want.AdminAddress = "127.0.0.7:9090", "127.0.0.7:9091"
	want.Storage.Path = "/work/pvc/data-b-0"
	want.TLS = &brokerconfig.TLS{CertFile: "/work/p/volumes/auth/tls.crt", KeyFile: "/work/p/volumes/auth/tls.key"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("rewritten config (-want +got):\n%s", diff)
	}
	if got.RestartHash() == testBrokerConfig().RestartHash() {
		t.Error("the rewrite should change what the broker binds")
	}
}

func noPeers(string) (string, bool) { return "", false }

// A clustered broker's cluster port binds the pod's address, its files are
// the materialised cluster Secret's, and each peer's per-pod DNS name
// becomes that pod's address; a name the harness cannot map stays.
func TestRewriteClusteredBrokerConfig(t *testing.T) {
	cluster := func() *brokerconfig.Cluster {
		return &brokerconfig.Cluster{
			Name: "mqtt-uid", Address: ":6222",
			Peers: []string{
				"b-0.b-headless.ns.svc.cluster.local:6222",
				"b-1.b-headless.ns.svc:6222",
				"elsewhere.example.com:6222",
			},
			PasswordFile: "/etc/mqtt/cluster/password",
			TLS:          &brokerconfig.ClusterTLS{CertFile: "/etc/mqtt/cluster/tls.crt", KeyFile: "/etc/mqtt/cluster/tls.key", CAFile: "/etc/mqtt/cluster/ca.crt"},
		}
	}
	cfg := testBrokerConfig()
	cfg.Cluster = cluster()
	in, err := brokerconfig.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	mounts := append(mountTable{{containerPath: "/etc/mqtt/cluster", hostPath: "/work/p/volumes/cluster"}}, testMounts...)
	pods := map[string]string{"ns/b-0": "127.0.0.7", "ns/b-1": "127.0.0.8"}
	out, err := rewriteBrokerConfig(in, "127.0.0.7", mounts, func(host string) (string, bool) {
		ns, pod, ok := podOfPeer(host)
		ip, known := pods[ns+"/"+pod]
		return ip, ok && known
	})
	if err != nil {
		t.Fatal(err)
	}
	got, err := brokerconfig.Parse(out)
	if err != nil {
		t.Fatalf("the rewritten config is invalid: %v", err)
	}
	want := cluster()
	want.Address = "127.0.0.7:6222"
	want.Peers = []string{"127.0.0.7:6222", "127.0.0.8:6222", "elsewhere.example.com:6222"}
	want.PasswordFile = "/work/p/volumes/cluster/password"
	want.TLS = &brokerconfig.ClusterTLS{CertFile: "/work/p/volumes/cluster/tls.crt", KeyFile: "/work/p/volumes/cluster/tls.key", CAFile: "/work/p/volumes/cluster/ca.crt"}
	if diff := cmp.Diff(want, got.Cluster); diff != "" {
		t.Errorf("rewritten cluster section (-want +got):\n%s", diff)
	}
}

func TestRewriteBrokerConfigRefusesWhatTheBrokerWould(t *testing.T) {
	if _, err := rewriteBrokerConfig([]byte("version: something-else\n"), "127.0.0.7", testMounts, noPeers); err == nil {
		t.Fatal("an invalid config must not be rewritten (it is written as is for the broker to refuse)")
	}
}

func TestContainerEnv(t *testing.T) {
	c := &corev1.Container{Env: []corev1.EnvVar{
		{Name: "PLAIN", Value: "v"},
		{Name: "POD", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
		{Name: "IP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.podIP"}}},
		{Name: "MEM", ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: &corev1.ResourceFieldSelector{Resource: "limits.memory"}}},
	}}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "b-0", Namespace: "ns"}}
	got := strings.Join(containerEnv(c, pod, "127.0.0.9", testMounts), " ")
	if want := "TMPDIR=/work/p/volumes/tmp PLAIN=v POD=b-0 IP=127.0.0.9"; got != want {
		t.Errorf("env = %q, want %q (resourceFieldRef is skipped)", got, want)
	}
}
