package broker_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	pahov3 "github.com/eclipse/paho.mqtt.golang"

	"github.com/mqtt-operator/mqtt-operator/internal/brokerconfig"
	"github.com/mqtt-operator/mqtt-operator/test/secretscan"
)

// Clustered brokers on loopback: each is one pod of one MQTTBroker, in this
// process, with its own MQTT and cluster ports, sharing a password file.

const clusterPassword = "cluster-secret-0123456789abcdef"

type clusterOpts struct {
	name     string // cluster name; "test-cluster" when empty
	password string // clusterPassword when empty
	tls      *testCA
	certName string // the name the route certificate is issued for; the cluster's when empty
}

// freePorts reserves n loopback ports and frees them for the brokers.
func freePorts(t *testing.T, n int) []string {
	t.Helper()
	var ls []net.Listener
	var addrs []string
	for i := range n {
		// One loopback address per pod (127.0.0.2, .3, ...): the kernel
		// hands the ports of 127.0.0.1 to the outgoing connections of the
		// tests running alongside, which took a freed cluster port before
		// its pod bound it (seen under go test ./...).
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.%d:0", 2+i%250))
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		addrs = append(addrs, l.Addr().String())
	}
	for _, l := range ls {
		_ = l.Close()
	}
	return addrs
}

// clusterBundle lets alice and bob publish and subscribe anywhere.
func clusterBundle(t testing.TB) *brokerconfig.AuthBundle {
	a, b := hashes(t)
	return &brokerconfig.AuthBundle{
		Generation: 1,
		Users:      []brokerconfig.User{{Username: "alice", PasswordHash: a}, {Username: "bob", PasswordHash: b}},
		ACLs: []brokerconfig.ACL{{Name: "test/all", Subjects: brokerconfig.Subjects{AllAuthenticated: true}, Rules: []brokerconfig.Rule{
			{Topic: "#", Access: brokerconfig.AccessPublishSubscribe, Effect: brokerconfig.EffectAllow},
		}}},
	}
}

func clusterConfig(t *testing.T, node, addr string, peers []string, o clusterOpts) *brokerconfig.Config {
	t.Helper()
	dir := t.TempDir()
	cfg := testConfig(dir)
	cfg.Listeners = cfg.Listeners[:1]
	cfg.Limits.MaxPacketSize = 256 << 10
	cfg.Limits.MaxTopicLength = 65535
	cfg.Limits.MaxTopicLevels = 1000
	cfg.Limits.MaxSubscriptionsPerClient = 100
	name, password := o.name, o.password
	if name == "" {
		name = "test-cluster"
	}
	if password == "" {
		password = clusterPassword
	}
	pw := filepath.Join(dir, "cluster-password")
	writeFile(t, pw, []byte(password+"\n"))
	t.Cleanup(func() { checkNoClusterSecret(t, node) })
	cfg.Cluster = &brokerconfig.Cluster{Name: name, NodeName: node, Address: addr, Peers: peers, PasswordFile: pw}
	if o.tls != nil {
		certName := o.certName
		if certName == "" {
			certName = name
		}
		o.tls.issueRoute(t, dir, certName)
		writeFile(t, filepath.Join(dir, "ca.crt"), o.tls.pem())
		cfg.Cluster.TLS = &brokerconfig.ClusterTLS{CertFile: filepath.Join(dir, "route.crt"), KeyFile: filepath.Join(dir, "route.key"), CAFile: filepath.Join(dir, "ca.crt")}
	}
	return cfg
}

// startCluster starts n clustered brokers and waits until each has joined
// (routes to all others).
func startCluster(t *testing.T, n int, o clusterOpts) []*testBroker {
	t.Helper()
	addrs := freePorts(t, n)
	pods := make([]*testBroker, n)
	for i := range n {
		pods[i] = startClusterPod(t, clusterConfig(t, fmt.Sprintf("pod-%d", i), addrs[i], addrs, o))
	}
	for _, p := range pods {
		waitReady(t, p, 10*time.Second)
	}
	return pods
}

func startClusterPod(t *testing.T, cfg *brokerconfig.Config) *testBroker {
	t.Helper()
	p := startBroker(t, cfg, clusterBundle(t))
	clusterLogs.Store(t.Name()+"/"+cfg.Cluster.NodeName, p.logs)
	return p
}

func waitReady(t *testing.T, p *testBroker, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		err := p.Ready()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("pod %s not ready: %v", p.cfg.Cluster.NodeName, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// issueRoute writes a certificate for the cluster's name good for both
// ends of a route (server and client authentication), as the operator
// issues them.
func (ca *testCA) issueRoute(t testing.TB, dir, clusterName string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: "pod"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		DNSNames:    []string{clusterName},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(key)
	writeFile(t, filepath.Join(dir, "route.crt"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	writeFile(t, filepath.Join(dir, "route.key"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}))
}

type (
	pahov3Client  = pahov3.Client
	pahov3Message = pahov3.Message
)

var clusterLogs sync.Map // node name -> *syncBuffer, for the secret check

// checkNoClusterSecret fails if a pod's log holds a cluster password.
func checkNoClusterSecret(t *testing.T, node string) {
	if logs, ok := clusterLogs.Load(t.Name() + "/" + node); ok {
		secretscan.Absent(t, "broker's log", logs.(*syncBuffer).String(), map[string]string{
			"cluster password": clusterPassword, "other cluster password": "another-password-0123456789",
		})
	}
}

// startPersistentPair starts two clustered pods, the second with a
// persistent store (its config returned, to restart it on the same volume).
func startPersistentPair(t *testing.T) (pod0, pod1 *testBroker, cfg1 *brokerconfig.Config) {
	t.Helper()
	addrs := freePorts(t, 2)
	pod0 = startClusterPod(t, clusterConfig(t, "pod-0", addrs[0], addrs, clusterOpts{}))
	cfg1 = clusterConfig(t, "pod-1", addrs[1], addrs, clusterOpts{})
	cfg1.Storage.Persistent = true
	pod1 = startClusterPod(t, cfg1)
	waitReady(t, pod0, 5*time.Second)
	waitReady(t, pod1, 5*time.Second)
	return pod0, pod1, cfg1
}

// waitNoRoutes waits until p has no route left (a peer stopped, or routes cut).
func waitNoRoutes(t *testing.T, p *testBroker) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); len(routesOf(p)) > 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s still has routes: %v", p.cfg.Cluster.NodeName, routesOf(p))
		}
	}
}
