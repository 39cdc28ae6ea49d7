package resources

import (
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/mqtt-operator/mqtt-operator/internal/brokerconfig"

	v1alpha1 "github.com/mqtt-operator/mqtt-operator/api/v1alpha1"
)

// The longest names the CRDs admit (MQTTBroker 52, MQTTUser 63) in the
// longest namespace must give children the API server (and cert-manager)
// accept: names, label values, pod hostnames, DNS names, common names.
func TestLongestNamesGiveValidChildren(t *testing.T) {
	b := loadBroker(t, "full")
	b.Name = "b" + strings.Repeat("x", 50) + "z" // 52, the CRD's maximum
	b.Namespace = strings.Repeat("n", 63)
	b.Spec.Listeners.TLS.Enabled = true
	b.Spec.TLS = &v1alpha1.TLSSpec{Mode: v1alpha1.TLSCertManager, IssuerRef: &v1alpha1.IssuerReference{Name: "ca"}}
	u := &v1alpha1.MQTTUser{ObjectMeta: metav1.ObjectMeta{Name: "u" + strings.Repeat("x", 61) + "z", Namespace: b.Namespace}}

	cfg, err := BrokerConfig(b, nil, testOptions)
	if err != nil {
		t.Fatal(err)
	}
	cm, err := ConfigMap(b, cfg)
	if err != nil {
		t.Fatal(err)
	}
	sts := StatefulSet(b, cfg, testOptions)
	children := []client.Object{
		cm, ServiceAccount(b), PodDisruptionBudget(b), NetworkPolicy(b, cfg, testOptions), sts,
		AuthSecret(b, nil, &brokerconfig.AuthBundle{}), AuthStateSecret(b, nil), AdminSecret(b, "t"),
		CASecret(b, nil), TLSSecret(b, nil, nil, nil, nil, ""), CertManagerCertificate(b, TLS(b), testOptions),
		ConnectionSecret(u, b, Credentials{Username: u.Name}),
	}
	check := func(what string, errs []string) {
		t.Helper()
		if len(errs) > 0 {
			t.Errorf("%s: %s", what, strings.Join(errs, "; "))
		}
	}
	for _, svc := range []client.Object{ClientService(b), HeadlessService(b, cfg)} {
		check("Service "+svc.GetName(), validation.IsDNS1035Label(svc.GetName()))
		children = append(children, svc)
	}
	for _, c := range children {
		check(c.GetObjectKind().GroupVersionKind().Kind+" "+c.GetName(), validation.IsDNS1123Subdomain(c.GetName()))
		for k, v := range c.GetLabels() {
			check("label "+k+" of "+c.GetName(), validation.IsValidLabelValue(v))
		}
	}
	for k, v := range sts.Spec.Template.Labels {
		check("pod label "+k, validation.IsValidLabelValue(v))
	}
	// What the StatefulSet controller derives: pod names (their hostnames),
	// the pod-name and controller-revision-hash labels ("<name>-<hash>", the
	// hash up to 10 characters), and volume claim names.
	pod := sts.Name + "-" + "2147483647"
	check("pod hostname "+pod, validation.IsDNS1123Label(pod))
	check("controller-revision-hash", validation.IsValidLabelValue(sts.Name+"-"+strings.Repeat("h", 10)))
	for _, claim := range sts.Spec.VolumeClaimTemplates {
		check("volume claim of "+pod, validation.IsDNS1123Subdomain(claim.Name+"-"+pod))
	}
	for _, name := range ServerDNSNames(b, nil, testOptions) {
		if strings.HasPrefix(name, "*.") {
			check("DNS name "+name, validation.IsWildcardDNS1123Subdomain(name))
		} else {
			check("DNS name "+name, validation.IsDNS1123Subdomain(name))
		}
	}
	podDNS := pod + "." + HeadlessServiceName(b) + "." + b.Namespace + ".svc." + DefaultClusterDomain
	check("pod DNS name", validation.IsDNS1123Subdomain(podDNS))

	cert := CertManagerCertificate(b, TLS(b), testOptions)
	if cn, _, _ := unstructured.NestedString(cert.Object, "spec", "commonName"); len(cn) > 64 {
		t.Errorf("cert-manager Certificate commonName %q is %d characters; cert-manager refuses more than 64", cn, len(cn))
	}
	if cn := CACommonName(b); len(cn) > 64 || !strings.HasPrefix(cn, b.Name) {
		t.Errorf("CA common name %q: want at most 64 characters, starting with the broker's name", cn)
	}
}

// A broker in a short namespace keeps its Service name as the server
// certificate's common name.
func TestServerCommonName(t *testing.T) {
	b := &v1alpha1.MQTTBroker{ObjectMeta: metav1.ObjectMeta{Name: "telemetry", Namespace: "tenant-a"}}
	if got := ServerCommonName(b); got != "telemetry.tenant-a.svc" {
		t.Errorf("ServerCommonName = %q", got)
	}
	b.Namespace = strings.Repeat("n", 63)
	if got := ServerCommonName(b); got != "" {
		t.Errorf("ServerCommonName in a long namespace = %q, want none", got)
	}
}
