package controllers

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	v1alpha1 "github.com/mqtt-operator/mqtt-operator/api/v1alpha1"
	"github.com/mqtt-operator/mqtt-operator/internal/pki"
	"github.com/mqtt-operator/mqtt-operator/internal/resources"
)

// Reasons of the TLSReady condition.
const (
	ReasonCertificateValid        = "CertificateValid"
	ReasonCertificatePending      = "CertificatePending"
	ReasonInvalidCertificate      = "InvalidCertificate"
	ReasonCertManagerNotInstalled = "CertManagerNotInstalled"
	// ReasonSecretNotFound is shared with MQTTUser.
)

// maxTLSRequeue bounds how long a broker with TLS goes unexamined, so a
// clock jump or a missed event delays a renewal by hours at most.
const maxTLSRequeue = 6 * time.Hour

// tlsOutcome is what the TLS step learned, for status and requeueing.
type tlsOutcome struct {
	status *v1alpha1.TLSStatus
	ready  metav1.Condition // Type and ObservedGeneration are set by the caller
	after  time.Duration    // when to look again; 0 = no need
}

// tlsPair is a server certificate about to be written, or in use.
type tlsPair struct {
	cert, key, serverCA []byte
	source              string
}

// reconcileTLS keeps the broker's certificate authority and its pods' TLS
// Secret current. It returns nil for a broker without a TLS listener. A
// source that cannot be used (missing, broken, not yet issued) leaves the
// pods' Secret as it is and says why in the outcome.
func (r *MQTTBrokerReconciler) reconcileTLS(ctx context.Context, b *v1alpha1.MQTTBroker) (*tlsOutcome, error) {
	settings := resources.TLS(b)
	if settings == nil {
		return nil, nil
	}
	now := r.clock()
	authority, next, err := r.reconcileAuthority(ctx, b, settings, now)
	if err != nil {
		return nil, err
	}
	current, err := r.getSecret(ctx, b.Namespace, resources.TLSSecretName(b))
	if err != nil {
		return nil, err
	}
	out := &tlsOutcome{}
	var want *tlsPair
	switch settings.Mode {
	case v1alpha1.TLSExistingSecret:
		want = r.pairFromSecret(ctx, b.Namespace, settings.SecretName, "ExistingSecret", now, out)
	case v1alpha1.TLSCertManager:
		if err := apply(ctx, r.Client, resources.CertManagerCertificate(b, settings, r.Options)); meta.IsNoMatchError(err) {
			out.ready = notReady(ReasonCertManagerNotInstalled, "mode CertManager needs cert-manager, and its Certificate kind (cert-manager.io/v1) is not installed in this cluster; install cert-manager or choose another tls.mode")
			out.after = time.Minute
		} else if err != nil {
			return nil, err
		} else {
			want = r.pairFromSecret(ctx, b.Namespace, resources.CertManagerSecretName(b), "CertManager", now, out)
		}
	default:
		want, err = operatorIssued(b, settings, r.Options, authority, current, now)
		if err != nil {
			return nil, err
		}
	}
	if want != nil {
		secret := resources.TLSSecret(b, want.cert, want.key, want.serverCA, authority.TrustBundle(), want.source)
		if current != nil {
			secret.ResourceVersion = current.ResourceVersion // a stale cache must not undo a newer write
		}
		if current == nil || !sameTLSData(current, secret) {
			if err := apply(ctx, r.Client, secret); err != nil {
				return nil, err
			}
			log.FromContext(ctx).Info("wrote the broker's TLS Secret", "source", want.source)
		}
		current = secret
	}
	out.status = tlsStatus(b, settings, authority, current, now)
	if want != nil {
		out.ready = metav1.Condition{Status: metav1.ConditionTrue, Reason: ReasonCertificateValid,
			Message: fmt.Sprintf("the server certificate is valid until %s", out.status.NotAfter.UTC().Format(time.RFC3339))}
	}
	if out.status.RenewalTime != nil && settings.Mode == v1alpha1.TLSOperatorManaged && out.status.RenewalTime.Time.Before(next) {
		next = out.status.RenewalTime.Time
	}
	if d := next.Sub(now) + time.Second; out.after == 0 || d < out.after {
		out.after = min(max(d, time.Second), maxTLSRequeue)
	}
	return out, nil
}

// reconcileAuthority creates and rolls over the broker's CA, and returns it
// with the time it next needs attention.
func (r *MQTTBrokerReconciler) reconcileAuthority(ctx context.Context, b *v1alpha1.MQTTBroker, s *resources.TLSSettings, now time.Time) (*pki.Authority, time.Time, error) {
	return r.keepAuthority(ctx, b, authorityKind{
		secretName: resources.CASecretName(b), commonName: resources.CACommonName(b), policy: s.AuthorityPolicy,
		secret: resources.CASecret, what: "certificate authority", rotatedEvent: true,
	}, now)
}

// authorityKind is one of a broker's CAs: the TLS one, or the cluster's.
type authorityKind struct {
	secretName, commonName string
	policy                 pki.Policy
	secret                 func(*v1alpha1.MQTTBroker, map[string][]byte) *corev1.Secret
	what                   string // for logs and errors
	rotatedEvent           bool   // record an Event when an existing CA changes
}

// keepAuthority creates and rolls over a CA, and returns it with the time
// it next needs attention. The Secret is written with its resourceVersion as
// a precondition: a reconcile working from a stale cache fails and retries
// instead of replacing a CA that already signed.
func (r *MQTTBrokerReconciler) keepAuthority(ctx context.Context, b *v1alpha1.MQTTBroker, k authorityKind, now time.Time) (*pki.Authority, time.Time, error) {
	secret, err := r.getSecret(ctx, b.Namespace, k.secretName)
	if err == nil && secret == nil {
		secret, err = readSecret(ctx, r.APIReader, b.Namespace, k.secretName) // the cache may not have seen it yet
	}
	if err != nil {
		return nil, time.Time{}, err
	}
	var data map[string][]byte
	if secret != nil {
		data = secret.Data
	}
	authority := pki.LoadAuthority(data)
	changed, next, err := authority.Plan(k.commonName, k.policy, now)
	if err != nil || changed == "" {
		return authority, next, err
	}
	desired := k.secret(b, authority.Data())
	if secret == nil {
		err = r.Client.Create(ctx, desired)
	} else {
		desired.ResourceVersion = secret.ResourceVersion
		err = apply(ctx, r.Client, desired)
	}
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("writing the %s Secret: %w", k.what, err)
	}
	log.FromContext(ctx).Info(k.what+": "+changed, "notAfter", authority.Active.Cert.NotAfter.UTC().Format(time.RFC3339))
	if secret != nil && k.rotatedEvent {
		r.Recorder.Eventf(b, nil, corev1.EventTypeNormal, "CertificateAuthorityRotated", "Rotate", "%s", changed)
	}
	return authority, next, nil
}

// operatorIssued returns the server pair the pods should have in mode
// OperatorManaged: the one they have while it is still good, else a new one.
func operatorIssued(b *v1alpha1.MQTTBroker, s *resources.TLSSettings, opts resources.Options, authority *pki.Authority, current *corev1.Secret, now time.Time) (*tlsPair, error) {
	cn := resources.ServerCommonName(b)
	names := resources.ServerDNSNames(b, s.ExtraDNSNames, opts)
	var certPEM, keyPEM []byte
	if current != nil {
		certPEM, keyPEM = current.Data[resources.TLSCertKey], current.Data[resources.TLSKeyKey]
	}
	why := authority.Reissue(certPEM, keyPEM, cn, names, s.CertificateDuration, s.RenewBefore, now)
	if why == "" {
		return &tlsPair{cert: certPEM, key: keyPEM, serverCA: authority.TrustBundle(), source: string(v1alpha1.TLSOperatorManaged)}, nil
	}
	pair, err := authority.Active.Issue(pki.Request{CommonName: cn, DNSNames: names, Validity: s.CertificateDuration}, now)
	if err != nil {
		return nil, err
	}
	return &tlsPair{cert: pair.CertPEM, key: pair.KeyPEM, serverCA: authority.TrustBundle(), source: string(v1alpha1.TLSOperatorManaged) + ": " + why}, nil
}

// pairFromSecret reads and checks a pair someone else provides. When it
// cannot be used it returns nil and records why in out.
func (r *MQTTBrokerReconciler) pairFromSecret(ctx context.Context, namespace, name, mode string, now time.Time, out *tlsOutcome) *tlsPair {
	secret := &corev1.Secret{}
	err := r.secrets.get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, secret)
	if apierrors.IsNotFound(err) {
		secret, err = nil, nil
	}
	switch {
	case err != nil:
		out.ready = notReady(ReasonSecretNotFound, err.Error())
		return nil
	case secret == nil && mode == "CertManager":
		out.ready = notReady(ReasonCertificatePending, fmt.Sprintf("waiting for cert-manager to issue the certificate into Secret %q", name))
		return nil
	case secret == nil:
		out.ready = notReady(ReasonSecretNotFound, fmt.Sprintf("Secret %q (tls.secretName) does not exist; the pods keep the certificate they have", name))
		return nil
	}
	if _, err := pki.ParsePair(secret.Data[resources.TLSCertKey], secret.Data[resources.TLSKeyKey], now); err != nil {
		out.ready = notReady(ReasonInvalidCertificate, fmt.Sprintf("Secret %q cannot be used, so the pods keep the certificate they have: %v", name, err))
		return nil
	}
	return &tlsPair{
		cert: secret.Data[resources.TLSCertKey], key: secret.Data[resources.TLSKeyKey],
		serverCA: secret.Data[resources.TLSCAKey],
		source:   fmt.Sprintf("%s: Secret %s version %s", mode, name, secret.ResourceVersion),
	}
}

func notReady(reason, message string) metav1.Condition {
	return metav1.Condition{Status: metav1.ConditionFalse, Reason: reason, Message: message}
}

// sameTLSData reports whether the Secret the pods mount already holds what
// would be written, so an unchanged certificate costs no API write.
func sameTLSData(current, desired *corev1.Secret) bool {
	for k, v := range desired.Data {
		if string(current.Data[k]) != string(v) {
			return false
		}
	}
	return len(current.Data) == len(desired.Data) && current.Type == desired.Type
}

// tlsStatus describes the certificate the pods' Secret holds. No key
// material, ever.
func tlsStatus(b *v1alpha1.MQTTBroker, s *resources.TLSSettings, authority *pki.Authority, current *corev1.Secret, now time.Time) *v1alpha1.TLSStatus {
	st := &v1alpha1.TLSStatus{
		Mode:       s.Mode,
		CANotAfter: &metav1.Time{Time: authority.Active.Cert.NotAfter},
	}
	if cas, err := pki.ParseCertificates(authority.TrustBundle()); err == nil {
		st.TrustedCAs = int32(len(cas))
	}
	if current == nil {
		return st
	}
	st.SecretName = resources.TLSSecretName(b)
	cert, err := pki.ParseCertificate(current.Data[resources.TLSCertKey])
	if err != nil {
		return st
	}
	st.NotAfter = &metav1.Time{Time: cert.NotAfter}
	st.SerialNumber = cert.SerialNumber.Text(16)
	st.DNSNames = cert.DNSNames
	if s.Mode == v1alpha1.TLSExistingSecret {
		return st // renewed by whoever writes that Secret
	}
	renewal := pki.RenewalTime(cert, s.RenewBefore)
	if renewal.Before(now) {
		renewal = now
	}
	st.RenewalTime = &metav1.Time{Time: renewal}
	return st
}

// setTLSStatus reports the TLS outcome: status.tls and the TLSReady
// condition, which exists only while a TLS listener does.
func setTLSStatus(st *v1alpha1.MQTTBrokerStatus, generation int64, out *tlsOutcome, tlsOn bool, now metav1.Time) {
	if !tlsOn {
		st.TLS = nil
		meta.RemoveStatusCondition(&st.Conditions, v1alpha1.ConditionTLSReady)
		return
	}
	if out == nil {
		return // this reconcile did not get that far; the last report stays
	}
	st.TLS = out.status
	c := out.ready
	c.Type, c.ObservedGeneration, c.LastTransitionTime = v1alpha1.ConditionTLSReady, generation, now
	meta.SetStatusCondition(&st.Conditions, c)
}
