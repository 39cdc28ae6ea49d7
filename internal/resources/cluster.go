package resources

import (
	"fmt"
	"net"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha1 "github.com/mqtt-operator/mqtt-operator/api/v1alpha1"
	"github.com/mqtt-operator/mqtt-operator/internal/brokerconfig"
)

// ClusterPort is where a clustered broker's pods route to each other.
const (
	ClusterPort     = 6222
	clusterPortName = "cluster"
)

// clusterDir is where a clustered broker's pods find the cluster Secret:
// the route password, the pod's cluster certificate and the cluster CA.
const clusterDir = "/etc/mqtt/cluster"

// Keys of the cluster Secret the pods mount.
const (
	ClusterPasswordKey = "password"
	ClusterCertKey     = corev1.TLSCertKey
	ClusterKeyKey      = corev1.TLSPrivateKeyKey
	ClusterCAKey       = "ca.crt"
)

// ClusterSecretName is the Secret a clustered broker's pods mount for their
// routes. The suffix is one no other child name ends in, so no broker's
// child can be another broker's.
func ClusterSecretName(b *v1alpha1.MQTTBroker) string { return b.Name + "-cluster" }

// ClusterAuthoritySecretName holds the CA (keys included) that signs the
// cluster certificates. No pod mounts it.
func ClusterAuthoritySecretName(b *v1alpha1.MQTTBroker) string {
	return b.Name + "-cluster-authority"
}

// Clustering says how a clustered broker's pods form their mesh; nil for a
// broker that is not clustered.
//
// A broker is clustered from the first time it runs more than one pod, and
// stays so (the controller knows by its cluster Secret): the cluster
// section's identity is part of the restart hash, so switching it off on a
// scale-down would restart the pod that stays.
type Clustering struct {
	// Peers is how many pods the peer list names, pod 0 up: the most of the
	// pods wanted and the pods that still exist, so pods on their way out
	// keep their routes until they are gone. At least 1.
	Peers int32
}

// ClusterName identifies a broker's cluster: its UID, so the pods of
// another broker, or of one created again under the same name, can never
// join.
func ClusterName(b *v1alpha1.MQTTBroker) string { return "mqtt-" + string(b.UID) }

// ClusterPeers are the cluster addresses of pods 0 to n-1: their names
// under the headless Service, which publishes pods before they are ready.
func ClusterPeers(b *v1alpha1.MQTTBroker, n int32, opts Options) []string {
	out := make([]string, 0, n)
	for i := range n {
		host := fmt.Sprintf("%s-%d.%s.%s.svc.%s", StatefulSetName(b), i, HeadlessServiceName(b), b.Namespace, clusterDomain(opts))
		out = append(out, net.JoinHostPort(host, strconv.Itoa(ClusterPort)))
	}
	return out
}

// ClusterDNSNames are the names a pod's cluster certificate carries: every
// pod under the headless Service, by wildcard, so scaling reissues nothing;
// and the cluster name, which a route can verify instead of the peer's
// host name where peers are addresses (local pods) and which only this
// broker's certificates carry.
func ClusterDNSNames(b *v1alpha1.MQTTBroker, opts Options) []string {
	headless := HeadlessServiceName(b) + "." + b.Namespace + ".svc"
	return []string{"*." + headless, "*." + headless + "." + clusterDomain(opts), ClusterName(b)}
}

// ClusterCommonName names the cluster certificate and ClusterCACommonName
// its CA, cut to the length X.509 allows.
func ClusterCommonName(b *v1alpha1.MQTTBroker) string {
	return cutCommonName(fmt.Sprintf("%s.%s MQTT cluster", b.Name, b.Namespace))
}

func ClusterCACommonName(b *v1alpha1.MQTTBroker) string {
	return cutCommonName(fmt.Sprintf("%s.%s MQTT cluster CA", b.Name, b.Namespace))
}

func cutCommonName(cn string) string {
	if len(cn) > maxCommonName {
		return cn[:maxCommonName] // object names are ASCII
	}
	return cn
}

func clusterDomain(opts Options) string {
	if opts.ClusterDomain == "" {
		return DefaultClusterDomain
	}
	return opts.ClusterDomain
}

// clusterConfig is the broker config's cluster section. The node name is
// left to the pod (its name, from the environment): one ConfigMap serves
// every pod.
func clusterConfig(b *v1alpha1.MQTTBroker, cl *Clustering, opts Options) *brokerconfig.Cluster {
	return &brokerconfig.Cluster{
		Name:         ClusterName(b),
		Address:      net.JoinHostPort("", strconv.Itoa(ClusterPort)),
		Peers:        ClusterPeers(b, max(cl.Peers, 1), opts),
		PasswordFile: clusterDir + "/" + ClusterPasswordKey,
		TLS: &brokerconfig.ClusterTLS{
			CertFile: clusterDir + "/" + ClusterCertKey,
			KeyFile:  clusterDir + "/" + ClusterKeyKey,
			CAFile:   clusterDir + "/" + ClusterCAKey,
		},
	}
}

// ClusterSecret holds what every pod of a clustered broker needs for its
// routes: the password they authenticate with, the certificate they
// present (server and client: a route is dialled by either side) and the
// CAs a peer's certificate must chain to.
func ClusterSecret(b *v1alpha1.MQTTBroker, password, certPEM, keyPEM, caBundle []byte) *corev1.Secret {
	return &corev1.Secret{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
		ObjectMeta: objectMeta(b, ClusterSecretName(b)),
		Type:       corev1.SecretTypeOpaque,
		Data: map[string][]byte{
			ClusterPasswordKey: password,
			ClusterCertKey:     certPEM,
			ClusterKeyKey:      keyPEM,
			ClusterCAKey:       caBundle,
		},
	}
}

// ClusterAuthoritySecret holds the cluster CA. It is not the CA that signs
// the broker's server and MQTT client certificates: no MQTTUser's client
// certificate is ever trusted on the cluster port.
func ClusterAuthoritySecret(b *v1alpha1.MQTTBroker, data map[string][]byte) *corev1.Secret {
	return &corev1.Secret{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
		ObjectMeta: objectMeta(b, ClusterAuthoritySecretName(b)),
		Type:       corev1.SecretTypeOpaque,
		Data:       data,
	}
}
