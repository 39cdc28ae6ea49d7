package controllers

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	v1alpha1 "github.com/mqtt-operator/mqtt-operator/api/v1alpha1"
	"github.com/mqtt-operator/mqtt-operator/internal/brokerconfig"
	"github.com/mqtt-operator/mqtt-operator/internal/pki"
	"github.com/mqtt-operator/mqtt-operator/internal/resources"
)

// The cluster CA and certificates follow the defaults of the broker's own
// TLS: nothing about them is the tenant's to tune.
var (
	clusterAuthorityPolicy = pki.Policy{Validity: 5 * 365 * 24 * time.Hour, RenewBefore: 365 * 24 * time.Hour}
	clusterCertPolicy      = pki.Policy{Validity: 90 * 24 * time.Hour, RenewBefore: 30 * 24 * time.Hour}
)

// clusterOutcome is what the cluster step decided.
type clusterOutcome struct {
	clustering *resources.Clustering // nil: not clustered
	after      time.Duration         // when a certificate next needs attention
}

// reconcileCluster decides whether b is clustered and, when it is, keeps
// the cluster CA and the pods' cluster Secret (route password, cluster
// certificate, CA bundle) current.
//
// A broker is clustered while it asks for more than one pod, or has
// spec.autoscaling, and from then on for good: its cluster Secret exists.
// Turning the cluster section off would change the restart hash and restart
// the pod that stays after a scale-down; a broker that ran one pod since it
// was created pays nothing. An autoscaled one is clustered from its first
// pod: becoming clustered changes the pod template, and that restart (with
// ephemeral storage, the end of its persistent sessions) must not come
// with the autoscaler's first scale-up.
func (r *MQTTBrokerReconciler) reconcileCluster(ctx context.Context, b *v1alpha1.MQTTBroker, pods []corev1.Pod) (*clusterOutcome, error) {
	current, err := r.getSecret(ctx, b.Namespace, resources.ClusterSecretName(b))
	if err != nil {
		return nil, err
	}
	if current == nil && resources.Replicas(b) <= 1 && b.Spec.Autoscaling == nil {
		// Not clustered; a one-pod broker costs no API read here.
		return &clusterOutcome{}, nil
	}
	if current == nil {
		// The cache may not have seen it yet: a new password would lock the
		// running pods out of each other.
		if current, err = readSecret(ctx, r.APIReader, b.Namespace, resources.ClusterSecretName(b)); err != nil {
			return nil, err
		}
	}
	now := r.clock()
	authority, next, err := r.reconcileClusterAuthority(ctx, b, now)
	if err != nil {
		return nil, err
	}
	var password, certPEM, keyPEM []byte
	if current != nil {
		password, certPEM, keyPEM = current.Data[resources.ClusterPasswordKey], current.Data[resources.ClusterCertKey], current.Data[resources.ClusterKeyKey]
	}
	if len(password) == 0 {
		raw := make([]byte, 32)
		_, _ = rand.Read(raw) // crypto/rand.Read does not fail on supported platforms
		password = []byte(base64.RawURLEncoding.EncodeToString(raw))
	}
	cn, names := resources.ClusterCommonName(b), resources.ClusterDNSNames(b, r.Options)
	why := authority.Reissue(certPEM, keyPEM, cn, names, clusterCertPolicy.Validity, clusterCertPolicy.RenewBefore, now)
	if why != "" {
		pair, err := authority.Active.Issue(pki.Request{CommonName: cn, DNSNames: names, Peer: true, Validity: clusterCertPolicy.Validity}, now)
		if err != nil {
			return nil, fmt.Errorf("issuing the cluster certificate: %w", err)
		}
		certPEM, keyPEM = pair.CertPEM, pair.KeyPEM
	}
	desired := resources.ClusterSecret(b, password, certPEM, keyPEM, authority.TrustBundle())
	if current == nil {
		if err := r.Client.Create(ctx, desired); err != nil {
			return nil, fmt.Errorf("creating the cluster Secret: %w", err)
		}
	} else if !sameTLSData(current, desired) {
		desired.ResourceVersion = current.ResourceVersion // a stale cache must not undo a newer write
		if err := apply(ctx, r.Client, desired); err != nil {
			return nil, err
		}
	}
	if why != "" {
		log.FromContext(ctx).Info("issued the cluster certificate", "why", why)
	}
	if cert, err := pki.ParseCertificate(certPEM); err == nil {
		if renewal := pki.RenewalTime(cert, clusterCertPolicy.RenewBefore); renewal.Before(next) {
			next = renewal
		}
	}
	return &clusterOutcome{
		clustering: &resources.Clustering{Peers: clusterPeers(b, pods)},
		after:      min(max(next.Sub(now)+time.Second, time.Second), maxTLSRequeue),
	}, nil
}

// clusterPeers is how many pods the peer list names: those the spec asks
// for and, while a scale-down is under way, those still there.
func clusterPeers(b *v1alpha1.MQTTBroker, pods []corev1.Pod) int32 {
	n := max(resources.Replicas(b), 1)
	prefix := resources.StatefulSetName(b) + "-"
	for _, p := range pods {
		ordinal, err := strconv.ParseInt(strings.TrimPrefix(p.Name, prefix), 10, 32)
		if err == nil && strings.HasPrefix(p.Name, prefix) && ordinal >= 0 && ordinal < int64(brokerconfig.MaxClusterPeers) {
			n = max(n, int32(ordinal)+1)
		}
	}
	return n
}

// reconcileClusterAuthority creates and rolls over the cluster CA, as
// reconcileAuthority does the broker's.
func (r *MQTTBrokerReconciler) reconcileClusterAuthority(ctx context.Context, b *v1alpha1.MQTTBroker, now time.Time) (*pki.Authority, time.Time, error) {
	return r.keepAuthority(ctx, b, authorityKind{
		secretName: resources.ClusterAuthoritySecretName(b), commonName: resources.ClusterCACommonName(b),
		policy: clusterAuthorityPolicy, secret: resources.ClusterAuthoritySecret, what: "cluster certificate authority",
	}, now)
}

// brokerPods lists the pods of the broker's StatefulSet, as the cache has
// them. A pod that only carries the broker's labels is not one of them.
func (r *MQTTBrokerReconciler) brokerPods(ctx context.Context, b *v1alpha1.MQTTBroker) ([]corev1.Pod, error) {
	sts := &appsv1.StatefulSet{}
	err := r.Client.Get(ctx, client.ObjectKey{Namespace: b.Namespace, Name: resources.StatefulSetName(b)}, sts)
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading the broker's StatefulSet: %w", err)
	}
	var pods corev1.PodList
	if err := r.Client.List(ctx, &pods, client.InNamespace(b.Namespace), client.MatchingLabels(resources.SelectorLabels(b))); err != nil {
		return nil, fmt.Errorf("listing the broker's pods: %w", err)
	}
	return ownedPods(pods.Items, sts.UID), nil
}

// ownedPods keeps the pods whose controller is the StatefulSet with UID
// owner.
func ownedPods(pods []corev1.Pod, owner types.UID) []corev1.Pod {
	var out []corev1.Pod
	for _, p := range pods {
		if ref := metav1.GetControllerOf(&p); owner != "" && ref != nil && ref.Kind == "StatefulSet" && ref.UID == owner {
			out = append(out, p)
		}
	}
	return out
}
