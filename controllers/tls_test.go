package controllers

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/mqtt-operator/mqtt-operator/api/v1alpha1"
	"github.com/mqtt-operator/mqtt-operator/internal/brokerconfig"
	"github.com/mqtt-operator/mqtt-operator/internal/pki"
	"github.com/mqtt-operator/mqtt-operator/internal/resources"
)

// These specs drive certificates through time with the suite's clock: the
// operator decides renewals and rollovers by it, and a test moves it forward
// and pokes the broker (an annotation on its TLS Secret, which the operator
// watches) instead of sleeping.

// fakeClock is the operator's clock in this suite.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

var testClock = &fakeClock{t: time.Now()}

// later moves the clock and wakes the broker's reconcile.
func later(t *testing.T, ns string, d time.Duration) {
	t.Helper()
	testClock.advance(d)
	poke(t, ns, "telemetry-tls")
}

func poke(t *testing.T, ns, secret string) {
	t.Helper()
	eventually(t, wait, "poked "+secret, func() error {
		s, err := get(t, ns, secret, &corev1.Secret{})
		if err != nil {
			return err
		}
		if s.Annotations == nil {
			s.Annotations = map[string]string{}
		}
		s.Annotations["test/poke"] = testClock.Now().String()
		return k8s.Update(context.Background(), s)
	})
}

func tlsBroker(mutate func(*v1alpha1.TLSSpec)) func(*v1alpha1.MQTTBroker) {
	return func(b *v1alpha1.MQTTBroker) {
		b.Spec.Listeners.TCP.Port = 1883
		b.Spec.Listeners.TLS = v1alpha1.TLSListener{Enabled: true, Port: 8883}
		if mutate != nil {
			b.Spec.TLS = &v1alpha1.TLSSpec{}
			mutate(b.Spec.TLS)
		}
	}
}

func durationOf(d time.Duration) *metav1.Duration { return &metav1.Duration{Duration: d} }

// serverCert reads the pods' TLS Secret and returns its certificate, waiting
// until check accepts it.
func serverCert(t *testing.T, ns, what string, check func(cert *x509.Certificate, s *corev1.Secret) error) (*x509.Certificate, *corev1.Secret) {
	t.Helper()
	var cert *x509.Certificate
	var secret *corev1.Secret
	eventually(t, wait, what, func() error {
		var err error
		if secret, err = get(t, ns, "telemetry-tls", &corev1.Secret{}); err != nil {
			return err
		}
		if cert, err = pki.ParsePair(secret.Data["tls.crt"], secret.Data["tls.key"], testClock.Now()); err != nil {
			return err
		}
		if check == nil {
			return nil
		}
		return check(cert, secret)
	})
	return cert, secret
}

func trusted(t *testing.T, bundle []byte) []*x509.Certificate {
	t.Helper()
	cas, err := pki.ParseCertificates(bundle)
	if err != nil {
		t.Fatal(err)
	}
	return cas
}

func signedByOneOf(cert *x509.Certificate, cas []*x509.Certificate) *x509.Certificate {
	for _, ca := range cas {
		if pki.SignedBy(cert, ca) {
			return ca
		}
	}
	return nil
}

func TestOperatorManagedCertificates(t *testing.T) {
	ns := newNamespace(t)
	createBroker(t, ns, tlsBroker(nil)) // a TLS listener alone: operator-managed, default durations
	cert, secret := serverCert(t, ns, "a server certificate", nil)

	wantNames := []string{
		"telemetry", "telemetry." + ns, "telemetry." + ns + ".svc", "telemetry." + ns + ".svc.cluster.local",
		"telemetry-headless", "telemetry-headless." + ns, "telemetry-headless." + ns + ".svc", "telemetry-headless." + ns + ".svc.cluster.local",
		"*.telemetry-headless." + ns + ".svc", "*.telemetry-headless." + ns + ".svc.cluster.local",
	}
	if !pki.Covers(cert, wantNames) {
		t.Errorf("SANs %v, want %v", cert.DNSNames, wantNames)
	}
	if got := cert.NotAfter.Sub(testClock.Now()).Round(time.Hour); got != 90*24*time.Hour {
		t.Errorf("server certificate valid for %v, want the default 90 days", got)
	}
	if !slices.Contains(cert.ExtKeyUsage, x509.ExtKeyUsageServerAuth) {
		t.Error("the server certificate is not for server authentication")
	}
	cas := trusted(t, secret.Data["ca.crt"])
	if len(cas) != 1 || !pki.SignedBy(cert, cas[0]) {
		t.Fatalf("ca.crt holds %d CAs and does not verify the server certificate", len(cas))
	}
	if got := cas[0].NotAfter.Sub(testClock.Now()).Round(24 * time.Hour); got != 5*365*24*time.Hour {
		t.Errorf("CA valid for %v, want the default 5 years", got)
	}
	if string(secret.Data["client-ca.crt"]) != string(secret.Data["ca.crt"]) {
		t.Error("client-ca.crt differs from the operator's CA bundle")
	}
	ca, err := get(t, ns, "telemetry-ca", &corev1.Secret{})
	if err != nil {
		t.Fatal(err)
	}
	if !metav1.IsControlledBy(ca, &v1alpha1.MQTTBroker{ObjectMeta: metav1.ObjectMeta{UID: ownerUID(t, ns)}}) || !metav1.IsControlledBy(secret, &v1alpha1.MQTTBroker{ObjectMeta: metav1.ObjectMeta{UID: ownerUID(t, ns)}}) {
		t.Error("the CA and TLS Secrets are not owned by the broker")
	}

	// The pods mount the TLS Secret, never the CA key, and the broker's
	// config points at the files.
	var sts *appsv1.StatefulSet
	eventually(t, wait, "the StatefulSet", func() (err error) {
		sts, err = get(t, ns, "telemetry", &appsv1.StatefulSet{})
		return err
	})
	var mounted []string
	for _, v := range sts.Spec.Template.Spec.Volumes {
		if v.Secret != nil {
			mounted = append(mounted, v.Secret.SecretName)
		}
	}
	if !slices.Contains(mounted, "telemetry-tls") || slices.Contains(mounted, "telemetry-ca") {
		t.Errorf("pods mount Secrets %v; want telemetry-tls and never telemetry-ca", mounted)
	}
	cm, err := get(t, ns, "telemetry-config", &corev1.ConfigMap{})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := brokerconfig.Parse([]byte(cm.Data[brokerconfig.FileName]))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.TLS == nil || cfg.TLS.CertFile != "/etc/mqtt/tls/tls.crt" || cfg.TLS.ClientCAFile != "/etc/mqtt/tls/client-ca.crt" {
		t.Errorf("broker config TLS = %+v", cfg.TLS)
	}

	waitForCondition(t, ns, v1alpha1.ConditionTLSReady, metav1.ConditionTrue, ReasonCertificateValid)
	st := brokerStatus(t, ns).TLS
	if st == nil || st.NotAfter == nil || !st.NotAfter.Time.Equal(cert.NotAfter.Truncate(time.Second)) || st.SecretName != "telemetry-tls" ||
		st.Mode != v1alpha1.TLSOperatorManaged || st.TrustedCAs != 1 || st.SerialNumber != cert.SerialNumber.Text(16) {
		t.Errorf("status.tls = %+v", st)
	}

	// A password user's connection Secret carries the CA and the TLS port,
	// and its URI prefers TLS.
	createUser(t, ns, "gateway", nil)
	eventually(t, wait, "connection Secret with TLS details", func() error {
		conn, err := get(t, ns, "gateway-mqtt", &corev1.Secret{})
		if err != nil {
			return err
		}
		if string(conn.Data["ca.crt"]) != string(secret.Data["ca.crt"]) || string(conn.Data["tlsPort"]) != "8883" ||
			!strings.HasPrefix(string(conn.Data["uri"]), "mqtts://gateway:") {
			return fmt.Errorf("connection Secret keys %v, uri scheme %q", keys(conn.Data), strings.SplitN(string(conn.Data["uri"]), ":", 2)[0])
		}
		return nil
	})
}

func ownerUID(t *testing.T, ns string) types.UID {
	t.Helper()
	b, err := get(t, ns, "telemetry", &v1alpha1.MQTTBroker{})
	if err != nil {
		t.Fatal(err)
	}
	return b.UID
}

func keys(m map[string][]byte) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func TestServerCertificateRenewsWhenDue(t *testing.T) {
	ns := newNamespace(t)
	createBroker(t, ns, tlsBroker(func(s *v1alpha1.TLSSpec) {
		s.CertificateDuration, s.RenewBefore = durationOf(4*time.Hour), durationOf(time.Hour)
	}))
	first, _ := serverCert(t, ns, "a server certificate", nil)
	if got := first.NotAfter.Sub(testClock.Now()).Round(time.Minute); got != 4*time.Hour {
		t.Errorf("certificate valid for %v, want 4h", got)
	}
	waitForCondition(t, ns, v1alpha1.ConditionTLSReady, metav1.ConditionTrue, ReasonCertificateValid)

	// Not due yet: nothing changes.
	later(t, ns, 2*time.Hour)
	if cert, _ := serverCert(t, ns, "the same certificate", nil); cert.SerialNumber.Cmp(first.SerialNumber) != 0 {
		t.Fatal("the certificate was replaced before it was due")
	}
	// Within renewBefore of expiry: replaced, by the same CA.
	later(t, ns, time.Hour+time.Minute)
	second, secret := serverCert(t, ns, "a renewed certificate", func(c *x509.Certificate, _ *corev1.Secret) error {
		if c.SerialNumber.Cmp(first.SerialNumber) == 0 {
			return fmt.Errorf("still the first certificate, which expires %s", c.NotAfter)
		}
		return nil
	})
	if !second.NotAfter.After(first.NotAfter) || signedByOneOf(second, trusted(t, secret.Data["ca.crt"])) == nil {
		t.Error("the renewed certificate does not last longer or is not signed by the CA in ca.crt")
	}
	eventually(t, wait, "status shows the new expiry", func() error {
		if st := brokerStatus(t, ns).TLS; st == nil || st.NotAfter == nil || !st.NotAfter.Time.Equal(second.NotAfter.Truncate(time.Second)) {
			return fmt.Errorf("status.tls %+v", st)
		}
		return nil
	})
}

func TestCARolloverKeepsBothCAsTrustedDuringTheOverlap(t *testing.T) {
	ns := newNamespace(t)
	createBroker(t, ns, tlsBroker(func(s *v1alpha1.TLSSpec) {
		s.CADuration, s.CARenewBefore = durationOf(20*time.Hour), durationOf(8*time.Hour)
		s.CertificateDuration, s.RenewBefore = durationOf(6*time.Hour), durationOf(time.Hour)
	}))
	_, secret := serverCert(t, ns, "a server certificate", nil)
	oldCA := trusted(t, secret.Data["ca.crt"])[0]
	createUser(t, ns, "device", func(u *v1alpha1.MQTTUser) { u.Spec.Authentication = v1alpha1.AuthenticationClientCertificate })
	clientCert(t, ns, "device-mqtt", nil)

	// 12h in, 8h before the CA expires: a new CA joins the bundle, but the
	// server certificate still comes from the old one.
	later(t, ns, 12*time.Hour+time.Minute)
	cert, secret := serverCert(t, ns, "both CAs in the bundle", func(_ *x509.Certificate, s *corev1.Secret) error {
		if n := len(trusted(t, s.Data["ca.crt"])); n != 2 {
			return fmt.Errorf("ca.crt holds %d CAs", n)
		}
		return nil
	})
	cas := trusted(t, secret.Data["ca.crt"])
	if !cas[0].Equal(oldCA) || !pki.SignedBy(cert, oldCA) {
		t.Error("during the overlap's first half the old CA must still sign the server certificate")
	}
	newCA := cas[1]
	if string(secret.Data["client-ca.crt"]) != string(secret.Data["ca.crt"]) {
		t.Error("the broker does not trust both CAs for client certificates")
	}
	eventually(t, wait, "connection Secrets carry both CAs", func() error {
		conn, err := get(t, ns, "device-mqtt", &corev1.Secret{})
		if err != nil {
			return err
		}
		if n := len(trusted(t, conn.Data["ca.crt"])); n != 2 {
			return fmt.Errorf("the connection Secret's ca.crt holds %d CAs", n)
		}
		return nil
	})
	eventually(t, wait, "status.tls.trustedCAs 2", func() error {
		if st := brokerStatus(t, ns).TLS; st == nil || st.TrustedCAs != 2 {
			return fmt.Errorf("status.tls = %+v", st)
		}
		return nil
	})
	// The first client certificate expired meanwhile (6h); its successor
	// still comes from the old CA.
	oldClient := clientCert(t, ns, "device-mqtt", func(c *x509.Certificate) error {
		if !pki.SignedBy(c, oldCA) {
			return fmt.Errorf("signed by %q", c.Issuer.CommonName)
		}
		return nil
	})

	// Half of caRenewBefore later the new CA signs: server and client
	// certificates are reissued from it; the old CA stays trusted, and the
	// old client certificate stays accepted, until they expire.
	later(t, ns, 4*time.Hour+time.Minute)
	serverCert(t, ns, "a server certificate from the new CA", func(c *x509.Certificate, s *corev1.Secret) error {
		if !pki.SignedBy(c, newCA) {
			return fmt.Errorf("the server certificate is still signed by %q", c.Issuer.CommonName)
		}
		if n := len(trusted(t, s.Data["ca.crt"])); n != 2 {
			return fmt.Errorf("ca.crt holds %d CAs, want the old one still", n)
		}
		return nil
	})
	newClient := clientCert(t, ns, "device-mqtt", func(c *x509.Certificate) error {
		if !pki.SignedBy(c, newCA) {
			return fmt.Errorf("the client certificate is still signed by %q", c.Issuer.CommonName)
		}
		return nil
	})
	eventually(t, wait, "the bundle accepts the old and the new client certificate", func() error {
		return wantFingerprints(t, ns, "device", newClient, oldClient)
	})

	// After the old CA expires it leaves the bundle.
	later(t, ns, 4*time.Hour)
	serverCert(t, ns, "only the new CA in the bundle", func(_ *x509.Certificate, s *corev1.Secret) error {
		if cas := trusted(t, s.Data["ca.crt"]); len(cas) != 1 || !cas[0].Equal(newCA) {
			return fmt.Errorf("ca.crt holds %d CAs", len(cas))
		}
		return nil
	})
}

// clientCert waits for a certificate user's connection Secret to hold a
// client certificate check accepts.
func clientCert(t *testing.T, ns, secret string, check func(*x509.Certificate) error) *x509.Certificate {
	t.Helper()
	var cert *x509.Certificate
	eventually(t, wait, "a client certificate in "+secret, func() error {
		s, err := get(t, ns, secret, &corev1.Secret{})
		if err != nil {
			return err
		}
		if cert, err = pki.ParsePair(s.Data["tls.crt"], s.Data["tls.key"], testClock.Now()); err != nil {
			return err
		}
		if check != nil {
			return check(cert)
		}
		return nil
	})
	return cert
}

func wantFingerprints(t *testing.T, ns, username string, certs ...*x509.Certificate) error {
	t.Helper()
	b, _ := bundle(t, ns)
	if b == nil {
		return fmt.Errorf("no bundle yet")
	}
	var want []string
	for _, c := range certs {
		want = append(want, brokerconfig.CertificateFingerprint(c.Raw))
	}
	slices.Sort(want)
	for _, u := range b.Users {
		if u.Username == username {
			got := slices.Clone(u.CertificateSHA256)
			slices.Sort(got)
			if !slices.Equal(got, want) || u.PasswordHash != "" {
				return fmt.Errorf("user %s has fingerprints %v and hash %q, want %v", username, got, u.PasswordHash, want)
			}
			return nil
		}
	}
	if len(certs) == 0 {
		return nil
	}
	return fmt.Errorf("user %s is not in the bundle", username)
}

func TestClientCertificateUser(t *testing.T) {
	ns := newNamespace(t)
	createBroker(t, ns, tlsBroker(func(s *v1alpha1.TLSSpec) {
		s.CertificateDuration, s.RenewBefore = durationOf(3*time.Hour), durationOf(time.Hour)
	}))
	createUser(t, ns, "sensor", func(u *v1alpha1.MQTTUser) {
		u.Spec.Authentication = v1alpha1.AuthenticationClientCertificate
		u.Spec.Username = "sensor-7"
	})
	cert := clientCert(t, ns, "sensor-mqtt", nil)
	conn, _ := get(t, ns, "sensor-mqtt", &corev1.Secret{})
	if cert.Subject.CommonName != "sensor-7" || !slices.Contains(cert.ExtKeyUsage, x509.ExtKeyUsageClientAuth) {
		t.Errorf("client certificate CN %q usages %v", cert.Subject.CommonName, cert.ExtKeyUsage)
	}
	if _, has := conn.Data["password"]; has {
		t.Error("a certificate user's connection Secret holds a password")
	}
	ca, _ := get(t, ns, "telemetry-ca", &corev1.Secret{})
	if signedByOneOf(cert, trusted(t, ca.Data["ca.crt"])) == nil {
		t.Error("the client certificate is not signed by the broker's CA")
	}
	// The CA bundle follows the broker's TLS Secret, which the operator
	// writes right after the CA.
	eventually(t, wait, "ca.crt in the connection Secret", func() error {
		conn, _ := get(t, ns, "sensor-mqtt", &corev1.Secret{})
		if len(conn.Data["ca.crt"]) == 0 {
			return errors.New("no ca.crt")
		}
		return nil
	})
	if got := string(conn.Data["uri"]); got != "mqtts://sensor-7@telemetry."+ns+".svc:8883" {
		t.Errorf("uri %q", got)
	}
	eventually(t, wait, "the user in the bundle by fingerprint", func() error { return wantFingerprints(t, ns, "sensor-7", cert) })
	waitUserReason(t, ns, "sensor", ReasonNoReadyPods)

	// Renewal: a new certificate, and the old one still accepted.
	later(t, ns, 2*time.Hour+time.Minute)
	poke(t, ns, "telemetry-ca") // the user controller watches the broker's Secrets
	renewed := clientCert(t, ns, "sensor-mqtt", func(c *x509.Certificate) error {
		if c.SerialNumber.Cmp(cert.SerialNumber) == 0 {
			return fmt.Errorf("not renewed yet")
		}
		return nil
	})
	eventually(t, wait, "both certificates accepted", func() error { return wantFingerprints(t, ns, "sensor-7", renewed, cert) })

	// Deleting the user takes its certificates out of the bundle.
	u, _ := get(t, ns, "sensor", &v1alpha1.MQTTUser{})
	if err := k8s.Delete(context.Background(), u); err != nil {
		t.Fatal(err)
	}
	eventually(t, wait, "the user gone from the bundle", func() error { return wantFingerprints(t, ns, "sensor-7") })
}

func TestCertificateUserNeedsATLSListener(t *testing.T) {
	ns := newNamespace(t)
	createBroker(t, ns, nil)
	createUser(t, ns, "sensor", func(u *v1alpha1.MQTTUser) { u.Spec.Authentication = v1alpha1.AuthenticationClientCertificate })
	u := waitUserReason(t, ns, "sensor", ReasonBrokerTLSOff)
	if c := readyOf(u.Status.Conditions); !strings.Contains(c.Message, "enable listeners.tls") {
		t.Errorf("message %q does not say what to do", c.Message)
	}
}

// tlsSecret is a kubernetes.io/tls Secret as a user or cert-manager writes it.
func tlsSecret(t *testing.T, ns, name string, labels map[string]string) (*corev1.Secret, *pki.Pair) {
	t.Helper()
	ca, err := pki.NewCA("user CA", testClock.Now(), 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	pair, err := ca.Issue(pki.Request{CommonName: "mqtt.example.com", DNSNames: []string{"mqtt.example.com"}, Validity: 12 * time.Hour}, testClock.Now())
	if err != nil {
		t.Fatal(err)
	}
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: labels},
		Type:       corev1.SecretTypeTLS,
		Data:       map[string][]byte{"tls.crt": pair.CertPEM, "tls.key": pair.KeyPEM, "ca.crt": ca.CertPEM},
	}, pair
}

func TestExistingSecret(t *testing.T) {
	ns := newNamespace(t)
	createBroker(t, ns, tlsBroker(func(s *v1alpha1.TLSSpec) {
		s.Mode, s.SecretName = v1alpha1.TLSExistingSecret, "broker-cert"
	}))
	waitForCondition(t, ns, v1alpha1.ConditionTLSReady, metav1.ConditionFalse, ReasonSecretNotFound)

	user, pair := tlsSecret(t, ns, "broker-cert", nil)
	if err := k8s.Create(context.Background(), user); err != nil {
		t.Fatal(err)
	}
	_, mounted := serverCert(t, ns, "the user's certificate copied for the pods", func(c *x509.Certificate, _ *corev1.Secret) error {
		if !c.Equal(pair.Cert) {
			return fmt.Errorf("serving %q", c.Subject.CommonName)
		}
		return nil
	})
	if string(mounted.Data["ca.crt"]) != string(user.Data["ca.crt"]) {
		t.Error("the pods' ca.crt is not the user's")
	}
	waitForCondition(t, ns, v1alpha1.ConditionTLSReady, metav1.ConditionTrue, ReasonCertificateValid)
	sts, _ := get(t, ns, "telemetry", &appsv1.StatefulSet{})

	// A key that does not match: refused, and nothing reaches the pods.
	other, _ := tlsSecret(t, ns, "x", nil)
	user, _ = get(t, ns, "broker-cert", &corev1.Secret{})
	user.Data["tls.key"] = other.Data["tls.key"]
	if err := k8s.Update(context.Background(), user); err != nil {
		t.Fatal(err)
	}
	waitForCondition(t, ns, v1alpha1.ConditionTLSReady, metav1.ConditionFalse, ReasonInvalidCertificate)
	c := meta.FindStatusCondition(brokerStatus(t, ns).Conditions, v1alpha1.ConditionTLSReady)
	if !strings.Contains(c.Message, "broker-cert") || !strings.Contains(c.Message, "keep the certificate they have") || strings.Contains(c.Message, "PRIVATE KEY") {
		t.Errorf("message %q", c.Message)
	}
	now, _ := get(t, ns, "telemetry-tls", &corev1.Secret{})
	if now.ResourceVersion != mounted.ResourceVersion && string(now.Data["tls.key"]) != string(mounted.Data["tls.key"]) {
		t.Error("the broken pair reached the pods' Secret")
	}
	if after, _ := get(t, ns, "telemetry", &appsv1.StatefulSet{}); after.Generation != sts.Generation {
		t.Error("a broken Secret changed the StatefulSet")
	}
	if st := brokerStatus(t, ns).TLS; st == nil || st.NotAfter == nil || !st.NotAfter.Time.Equal(pair.Cert.NotAfter.Truncate(time.Second)) {
		t.Errorf("status.tls should still describe the certificate in use: %+v", st)
	}

	// An expired certificate is refused too.
	expiredCA, _ := pki.NewCA("old", testClock.Now().Add(-48*time.Hour), 72*time.Hour)
	expired, _ := expiredCA.Issue(pki.Request{CommonName: "old", Validity: time.Hour}, testClock.Now().Add(-47*time.Hour))
	user, _ = get(t, ns, "broker-cert", &corev1.Secret{})
	user.Data["tls.crt"], user.Data["tls.key"] = expired.CertPEM, expired.KeyPEM
	if err := k8s.Update(context.Background(), user); err != nil {
		t.Fatal(err)
	}
	eventually(t, wait, "an expired certificate refused", func() error {
		c := meta.FindStatusCondition(brokerStatus(t, ns).Conditions, v1alpha1.ConditionTLSReady)
		if c == nil || c.Reason != ReasonInvalidCertificate || !strings.Contains(c.Message, "expired") {
			return fmt.Errorf("TLSReady %+v", c)
		}
		return nil
	})
}

var certificateGVK = schema.GroupVersionKind{Group: "cert-manager.io", Version: "v1", Kind: "Certificate"}

// TestCertManager runs without cert-manager's CRD first, then installs a
// stand-in for it (the operator needs only the kind to exist) and plays
// cert-manager by writing the issued Secret.
func TestCertManager(t *testing.T) {
	ns := newNamespace(t)
	createBroker(t, ns, tlsBroker(func(s *v1alpha1.TLSSpec) {
		s.Mode, s.IssuerRef = v1alpha1.TLSCertManager, &v1alpha1.IssuerReference{Name: "letsencrypt", Kind: "ClusterIssuer"}
		s.DNSNames = []string{"mqtt.example.com"}
	}))
	waitForCondition(t, ns, v1alpha1.ConditionTLSReady, metav1.ConditionFalse, ReasonCertManagerNotInstalled)
	// Everything else works without cert-manager.
	if _, err := get(t, ns, "telemetry", &appsv1.StatefulSet{}); err != nil {
		t.Errorf("no StatefulSet without cert-manager: %v", err)
	}

	installCertificateCRD(t)
	poke(t, ns, "telemetry-ca")
	waitForCondition(t, ns, v1alpha1.ConditionTLSReady, metav1.ConditionFalse, ReasonCertificatePending)
	cr := &unstructured.Unstructured{}
	cr.SetGroupVersionKind(certificateGVK)
	if _, err := get(t, ns, "telemetry", cr); err != nil {
		t.Fatal(err)
	}
	spec := cr.Object["spec"].(map[string]any)
	issuer := spec["issuerRef"].(map[string]any)
	names, _, _ := unstructured.NestedStringSlice(cr.Object, "spec", "dnsNames")
	if spec["secretName"] != "telemetry-tls-issued" || issuer["name"] != "letsencrypt" || issuer["kind"] != "ClusterIssuer" ||
		!slices.Contains(names, "mqtt.example.com") || !slices.Contains(names, "telemetry."+ns+".svc") || spec["duration"] != "2160h0m0s" {
		t.Errorf("Certificate spec %v", spec)
	}

	issued, pair := tlsSecret(t, ns, "telemetry-tls-issued", map[string]string{resources.LabelBroker: "telemetry"})
	if err := k8s.Create(context.Background(), issued); err != nil {
		t.Fatal(err)
	}
	serverCert(t, ns, "the issued certificate copied for the pods", func(c *x509.Certificate, _ *corev1.Secret) error {
		if !c.Equal(pair.Cert) {
			return fmt.Errorf("serving %q", c.Subject.CommonName)
		}
		return nil
	})
	waitForCondition(t, ns, v1alpha1.ConditionTLSReady, metav1.ConditionTrue, ReasonCertificateValid)
}

func installCertificateCRD(t *testing.T) { installCRD(t, certificateGVK, "certificates") }

// installCRD installs a schemaless CRD for an optional kind (cert-manager's,
// prometheus-operator's) and waits until it is served.
func installCRD(t *testing.T, gvk schema.GroupVersionKind, plural string) {
	t.Helper()
	preserve := true
	crd := &apiextensionsv1.CustomResourceDefinition{
		ObjectMeta: metav1.ObjectMeta{Name: plural + "." + gvk.Group},
		Spec: apiextensionsv1.CustomResourceDefinitionSpec{
			Group: gvk.Group, Scope: apiextensionsv1.NamespaceScoped,
			Names: apiextensionsv1.CustomResourceDefinitionNames{Plural: plural, Singular: strings.ToLower(gvk.Kind), Kind: gvk.Kind, ListKind: gvk.Kind + "List"},
			Versions: []apiextensionsv1.CustomResourceDefinitionVersion{{
				Name: gvk.Version, Served: true, Storage: true,
				Schema: &apiextensionsv1.CustomResourceValidation{OpenAPIV3Schema: &apiextensionsv1.JSONSchemaProps{
					Type: "object", XPreserveUnknownFields: &preserve,
				}},
			}},
		},
	}
	if err := k8s.Create(context.Background(), crd); err != nil && !strings.Contains(err.Error(), "already exists") {
		t.Fatal(err)
	}
	eventually(t, wait, "the "+gvk.Kind+" kind served", func() error {
		list := &unstructured.UnstructuredList{}
		list.SetGroupVersionKind(gvk.GroupVersion().WithKind(gvk.Kind + "List"))
		return k8s.List(context.Background(), list, client.InNamespace("default"))
	})
}
