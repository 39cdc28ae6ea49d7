package resources

import (
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	v1alpha1 "github.com/mqtt-operator/mqtt-operator/api/v1alpha1"
	"github.com/mqtt-operator/mqtt-operator/internal/pki"
)

// tlsDir is where the broker container finds the server certificate, its
// key and the client CA bundle: the TLS Secret, mounted.
const tlsDir = "/etc/mqtt/tls"

// Keys of the TLS Secret the pods mount.
const (
	TLSCertKey     = corev1.TLSCertKey       // server certificate chain
	TLSKeyKey      = corev1.TLSPrivateKeyKey // its key
	TLSCAKey       = "ca.crt"                // what clients trust to verify the server
	TLSClientCAKey = "client-ca.crt"         // what client certificates must chain to
	// AnnotationTLSSource on the TLS Secret records where the pair came from
	// (mode and source Secret version), never the material.
	AnnotationTLSSource = "broker.mqtt-operator.io/tls-source"
)

// Connection Secret keys for TLS.
const (
	ConnectionTLSPortKey    = "tlsPort"
	ConnectionWSSPortKey    = "secureWebsocketPort"
	ConnectionCAKey         = "ca.crt"
	ConnectionClientCertKey = corev1.TLSCertKey
	ConnectionClientKeyKey  = corev1.TLSPrivateKeyKey
	// AnnotationPreviousCertificate on a certificate user's connection Secret
	// holds the fingerprint of the certificate the current one replaced; the
	// broker accepts both until the old one expires, so applications have
	// time to pick up the new files.
	AnnotationPreviousCertificate = "broker.mqtt-operator.io/previous-certificate-sha256"
)

// TLSSecretName is the Secret the broker pods mount for TLS. The operator
// writes it in every mode, after checking the pair.
func TLSSecretName(b *v1alpha1.MQTTBroker) string { return b.Name + "-tls" }

// CASecretName holds the broker's certificate authority (keys included). No
// pod mounts it.
func CASecretName(b *v1alpha1.MQTTBroker) string { return b.Name + "-ca" }

// CertManagerSecretName is where cert-manager writes the certificate it
// issues for the broker, in mode CertManager.
func CertManagerSecretName(b *v1alpha1.MQTTBroker) string { return b.Name + "-tls-issued" }

// maxCommonName is X.509's upper bound on a subject common name (RFC 5280
// ub-common-name); cert-manager refuses a Certificate whose commonName is
// longer.
const maxCommonName = 64

// ServerCommonName is the subject common name of the broker's server
// certificate: "<client Service>.<namespace>.svc", or empty when that is
// longer than X.509 allows (a long broker name in a long namespace). Clients
// check the certificate's DNS names, which always carry it, never the
// common name.
func ServerCommonName(b *v1alpha1.MQTTBroker) string {
	cn := fmt.Sprintf("%s.%s.svc", ClientServiceName(b), b.Namespace)
	if len(cn) > maxCommonName {
		return ""
	}
	return cn
}

// CACommonName names the broker's certificate authority, cut to the length
// X.509 allows. A certificate authority needs a subject; it also carries
// the organisation mqtt-operator.
func CACommonName(b *v1alpha1.MQTTBroker) string {
	cn := fmt.Sprintf("%s.%s MQTT broker CA", b.Name, b.Namespace)
	if len(cn) > maxCommonName {
		cn = cn[:maxCommonName] // object names are ASCII
	}
	return cn
}

// TLSEnabled reports whether b has a TLS listener.
func TLSEnabled(b *v1alpha1.MQTTBroker) bool {
	return b.Spec.Listeners.TLS.Enabled || b.Spec.Listeners.SecureWebSocket.Enabled
}

// TLSSettings are a broker's TLS settings with defaults filled in.
type TLSSettings struct {
	Mode                               v1alpha1.TLSMode
	SecretName                         string
	Issuer                             *v1alpha1.IssuerReference
	ExtraDNSNames                      []string
	CertificateDuration, RenewBefore   time.Duration
	CADuration, CARenewBefore          time.Duration
	CertificatePolicy, AuthorityPolicy pki.Policy
}

// TLS returns b's TLS settings, defaults included, or nil without a TLS
// listener. The defaults match the CRD's, for a spec written before them.
func TLS(b *v1alpha1.MQTTBroker) *TLSSettings {
	if !TLSEnabled(b) {
		return nil
	}
	spec := b.Spec.TLS
	if spec == nil {
		spec = &v1alpha1.TLSSpec{}
	}
	dur := func(d *metav1.Duration, def time.Duration) time.Duration {
		if d == nil || d.Duration <= 0 {
			return def
		}
		return d.Duration
	}
	s := &TLSSettings{
		Mode:                spec.Mode,
		SecretName:          spec.SecretName,
		Issuer:              spec.IssuerRef,
		ExtraDNSNames:       spec.DNSNames,
		CertificateDuration: dur(spec.CertificateDuration, 90*24*time.Hour),
		RenewBefore:         dur(spec.RenewBefore, 30*24*time.Hour),
		CADuration:          dur(spec.CADuration, 5*365*24*time.Hour),
		CARenewBefore:       dur(spec.CARenewBefore, 365*24*time.Hour),
	}
	if s.Mode == "" {
		s.Mode = v1alpha1.TLSOperatorManaged
	}
	s.CertificatePolicy = pki.Policy{Validity: s.CertificateDuration, RenewBefore: s.RenewBefore}
	s.AuthorityPolicy = pki.Policy{Validity: s.CADuration, RenewBefore: s.CARenewBefore}
	return s
}

// ServerDNSNames are the names the server certificate must carry: the
// client Service and the headless Service in their short and full forms,
// every pod (by wildcard on the headless Service, so scaling reissues
// nothing), and the user's extra names.
func ServerDNSNames(b *v1alpha1.MQTTBroker, extra []string, opts Options) []string {
	domain := opts.ClusterDomain
	if domain == "" {
		domain = DefaultClusterDomain
	}
	var names []string
	for _, svc := range []string{ClientServiceName(b), HeadlessServiceName(b)} {
		names = append(names, svc,
			svc+"."+b.Namespace,
			svc+"."+b.Namespace+".svc",
			svc+"."+b.Namespace+".svc."+domain)
	}
	headless := HeadlessServiceName(b) + "." + b.Namespace
	names = append(names, "*."+headless+".svc", "*."+headless+".svc."+domain)
	return append(names, extra...)
}

// DefaultClusterDomain is the DNS suffix of most clusters' Services.
const DefaultClusterDomain = "cluster.local"

// CASecret holds the broker's certificate authority.
func CASecret(b *v1alpha1.MQTTBroker, data map[string][]byte) *corev1.Secret {
	meta := objectMeta(b, CASecretName(b))
	meta.Labels[LabelBroker] = b.Name // its users' controller watches it
	return &corev1.Secret{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
		ObjectMeta: meta,
		Type:       corev1.SecretTypeOpaque,
		Data:       data,
	}
}

// TLSSecret is what the broker pods mount: the server pair, the CA bundle
// clients verify the server with, and the CA bundle client certificates must
// chain to.
func TLSSecret(b *v1alpha1.MQTTBroker, certPEM, keyPEM, serverCA, clientCA []byte, source string) *corev1.Secret {
	meta := objectMeta(b, TLSSecretName(b))
	meta.Labels[LabelBroker] = b.Name // its users' controller watches it
	meta.Annotations = map[string]string{AnnotationTLSSource: source}
	return &corev1.Secret{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
		ObjectMeta: meta,
		Type:       corev1.SecretTypeTLS,
		Data: map[string][]byte{
			TLSCertKey:     certPEM,
			TLSKeyKey:      keyPEM,
			TLSCAKey:       serverCA,
			TLSClientCAKey: clientCA,
		},
	}
}

// CertManagerCertificate is the cert-manager Certificate for mode
// CertManager, as an unstructured object so that cert-manager is not a
// dependency: where its CRDs are absent, applying it fails with a clear
// condition and nothing else is affected.
func CertManagerCertificate(b *v1alpha1.MQTTBroker, s *TLSSettings, opts Options) *unstructured.Unstructured {
	names := ServerDNSNames(b, s.ExtraDNSNames, opts)
	dnsNames := make([]any, len(names))
	for i, n := range names {
		dnsNames[i] = n
	}
	u := ownedUnstructured(b, certManagerCertificateGVK, nil, map[string]any{
		"secretName":  CertManagerSecretName(b),
		"dnsNames":    dnsNames,
		"duration":    s.CertificateDuration.String(),
		"renewBefore": s.RenewBefore.String(),
		"usages":      []any{"server auth", "digital signature"},
		"privateKey":  map[string]any{"algorithm": "ECDSA", "size": int64(256), "rotationPolicy": "Always"},
		"issuerRef": map[string]any{
			"name":  s.Issuer.Name,
			"kind":  valueOrString(s.Issuer.Kind, "Issuer"),
			"group": valueOrString(s.Issuer.Group, "cert-manager.io"),
		},
		// The issued Secret carries the broker's label, so the operator
		// learns of it from its Secret watch alone, and the operator's
		// managed-by label, so it is cached like the operator's own
		// (without it, it is read from the API server each time).
		"secretTemplate": map[string]any{"labels": map[string]any{LabelBroker: b.Name, LabelManagedBy: OperatorName}},
	})
	if cn := ServerCommonName(b); cn != "" {
		_ = unstructured.SetNestedField(u.Object, cn, "spec", "commonName")
	}
	return u
}

// certManagerCertificateGVK is cert-manager's Certificate, optional as well.
var certManagerCertificateGVK = schema.GroupVersionKind{Group: "cert-manager.io", Version: "v1", Kind: "Certificate"}

func valueOrString(v, def string) string {
	if v == "" {
		return def
	}
	return v
}
