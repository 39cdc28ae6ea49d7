package resources

import (
	"fmt"
	"net/url"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha1 "github.com/mqtt-operator/mqtt-operator/api/v1alpha1"
	"github.com/mqtt-operator/mqtt-operator/internal/brokerconfig"
)

// Keys, labels and annotations of the Secrets the operator writes.
const (
	// AuthSourcesKey in the auth state Secret records, per username, the
	// version of the Secret its password hash was made from (never the
	// password), so an operator restart does not re-run bcrypt for everyone.
	AuthSourcesKey = "sources.json"
	// AnnotationAuthRevision and AnnotationAuthGeneration on the auth Secret
	// describe the bundle it holds.
	AnnotationAuthRevision   = "broker.mqtt-operator.io/auth-revision"
	AnnotationAuthGeneration = "broker.mqtt-operator.io/auth-generation"

	// Connection Secret keys, for applications.
	ConnectionHostKey     = "host"
	ConnectionPortKey     = "port"
	ConnectionWSPortKey   = "websocketPort"
	ConnectionUsernameKey = "username"
	ConnectionPasswordKey = "password"
	ConnectionURIKey      = "uri"
	// LabelBroker and LabelUser find a user's connection Secret.
	LabelBroker = "broker.mqtt-operator.io/broker"
	LabelUser   = "broker.mqtt-operator.io/user"
	// AnnotationRotatePassword on an MQTTUser asks for a new generated
	// password: whenever its value changes, the operator generates one. The
	// connection Secret records the value it last acted on.
	AnnotationRotatePassword = "broker.mqtt-operator.io/rotate-password"
	// AnnotationPasswordSource on a connection Secret records the version
	// of the tenant's Secret its password was copied from (never the
	// password), so the operator reads that Secret again only when it
	// changed.
	AnnotationPasswordSource = "broker.mqtt-operator.io/password-source"
)

// AuthSecret holds the rendered bundle the broker pods mount. data is the
// bundle as brokerconfig.MarshalBundleCompressed returns it.
func AuthSecret(b *v1alpha1.MQTTBroker, data []byte, bundle *brokerconfig.AuthBundle) *corev1.Secret {
	meta := objectMeta(b, AuthSecretName(b))
	meta.Annotations = map[string]string{
		AnnotationAuthRevision:   bundle.Revision,
		AnnotationAuthGeneration: strconv.FormatInt(bundle.Generation, 10),
	}
	return &corev1.Secret{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
		ObjectMeta: meta,
		Type:       corev1.SecretTypeOpaque,
		Data:       map[string][]byte{brokerconfig.BundleFileName: data},
	}
}

// AuthStateSecret holds the operator's bookkeeping about the bundle: the
// password sources of the hashes. Pods do not mount it.
func AuthStateSecret(b *v1alpha1.MQTTBroker, sources []byte) *corev1.Secret {
	return &corev1.Secret{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
		ObjectMeta: objectMeta(b, AuthStateSecretName(b)),
		Type:       corev1.SecretTypeOpaque,
		Data:       map[string][]byte{AuthSourcesKey: sources},
	}
}

// AdminSecret holds the admin API token the operator and the pods share.
func AdminSecret(b *v1alpha1.MQTTBroker, token string) *corev1.Secret {
	return &corev1.Secret{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
		ObjectMeta: objectMeta(b, AdminSecretName(b)),
		Type:       corev1.SecretTypeOpaque,
		Data:       map[string][]byte{AdminTokenKey: []byte(token)},
	}
}

// ConnectionSecretName is where an MQTTUser's connection details go.
func ConnectionSecretName(u *v1alpha1.MQTTUser) string {
	if u.Spec.ConnectionSecretName != "" {
		return u.Spec.ConnectionSecretName
	}
	return u.Name + "-mqtt"
}

// Credentials are what a connection Secret hands an application.
type Credentials struct {
	Username string
	// Password and Rotation (the rotate-password annotation value it was
	// generated for) of a password user.
	Password, Rotation string
	// PasswordSource is the version of the Secret a chosen password came
	// from (MQTTUser passwordSecretRef), empty for a generated one.
	PasswordSource string
	// ClientCert and ClientKey (PEM) of a certificate user, and the
	// fingerprint of the certificate they replaced, if any.
	ClientCert, ClientKey []byte
	PreviousCertificate   string
	// CA is the bundle that verifies the broker's server certificate, when
	// the broker has a TLS listener.
	CA []byte
}

// ConnectionSecret is what applications read to connect as u: the broker's
// in-cluster host and ports, the credentials, the CA bundle when the broker
// has TLS, and a URI (TLS preferred). It is owned by the MQTTUser, so
// deleting the user deletes it.
func ConnectionSecret(u *v1alpha1.MQTTUser, b *v1alpha1.MQTTBroker, c Credentials) *corev1.Secret {
	data := map[string][]byte{ConnectionUsernameKey: []byte(c.Username)}
	annotations := map[string]string{}
	if len(c.ClientCert) > 0 {
		data[ConnectionClientCertKey], data[ConnectionClientKeyKey] = c.ClientCert, c.ClientKey
		if c.PreviousCertificate != "" {
			annotations[AnnotationPreviousCertificate] = c.PreviousCertificate
		}
	} else {
		data[ConnectionPasswordKey] = []byte(c.Password)
		annotations[AnnotationRotatePassword] = c.Rotation
		if c.PasswordSource != "" {
			annotations[AnnotationPasswordSource] = c.PasswordSource
		}
	}
	if len(c.CA) > 0 {
		data[ConnectionCAKey] = c.CA
	}
	host := fmt.Sprintf("%s.%s.svc", ClientServiceName(b), b.Namespace)
	uris := map[string]*url.URL{}
	for _, l := range enabledListeners(b) {
		port := strconv.Itoa(int(l.port))
		switch l.name {
		case "mqtt":
			data[ConnectionPortKey] = []byte(port)
			uris[l.name] = &url.URL{Scheme: "mqtt", Host: host + ":" + port}
		case "mqtts":
			data[ConnectionTLSPortKey] = []byte(port)
			uris[l.name] = &url.URL{Scheme: "mqtts", Host: host + ":" + port}
		case "ws":
			data[ConnectionWSPortKey] = []byte(port)
			uris[l.name] = &url.URL{Scheme: "ws", Host: host + ":" + port, Path: "/mqtt"}
		case "wss":
			data[ConnectionWSSPortKey] = []byte(port)
			uris[l.name] = &url.URL{Scheme: "wss", Host: host + ":" + port, Path: "/mqtt"}
		}
	}
	data[ConnectionHostKey] = []byte(host)
	for _, name := range []string{"mqtts", "mqtt", "wss", "ws"} {
		uri, ok := uris[name]
		if !ok {
			continue
		}
		if len(c.ClientCert) > 0 {
			uri.User = url.User(c.Username)
		} else {
			uri.User = url.UserPassword(c.Username, c.Password)
		}
		data[ConnectionURIKey] = []byte(uri.String())
		break
	}
	isController := true
	return &corev1.Secret{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
		ObjectMeta: metav1.ObjectMeta{
			Name:      ConnectionSecretName(u),
			Namespace: u.Namespace,
			Labels: map[string]string{
				LabelManagedBy: OperatorName,
				LabelComponent: "connection",
				LabelBroker:    b.Name,
				LabelUser:      u.Name,
			},
			Annotations: annotations,
			OwnerReferences: []metav1.OwnerReference{{
				APIVersion: v1alpha1.GroupVersion.String(), Kind: "MQTTUser", Name: u.Name, UID: u.UID,
				Controller: &isController, BlockOwnerDeletion: &isController,
			}},
		},
		Type: corev1.SecretTypeOpaque,
		Data: data,
	}
}
