package controllers

import (
	"context"
	"fmt"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log"

	v1alpha1 "github.com/mqtt-operator/mqtt-operator/api/v1alpha1"
	"github.com/mqtt-operator/mqtt-operator/internal/brokerconfig"
	"github.com/mqtt-operator/mqtt-operator/internal/pki"
	"github.com/mqtt-operator/mqtt-operator/internal/resources"
)

// gatherCertificate finds or issues a certificate user's client certificate.
// The one in the connection Secret is kept while it is good (signed by the
// broker's active CA, for this username, not due); otherwise a new one is
// issued and the old one's fingerprint kept, so the broker accepts both
// until the old one expires. It returns when to look again and the
// connection Secret's resourceVersion, which the write must still find: two
// reconciles racing on a stale cache must not both issue.
func (r *MQTTUserReconciler) gatherCertificate(ctx context.Context, s *userScope, creds *resources.Credentials) (ctrl.Result, string, error) {
	u, b := s.user, s.broker
	settings := resources.TLS(b)
	if settings == nil {
		s.problem = &userProblem{ReasonBrokerTLSOff, fmt.Sprintf("MQTTBroker %q has no TLS listener, and certificate users log in over TLS; enable listeners.tls or listeners.secureWebsocket", b.Name)}
		return ctrl.Result{}, "", nil
	}
	ca, err := readSecret(ctx, r.Client, b.Namespace, resources.CASecretName(b))
	if err != nil {
		return ctrl.Result{}, "", err
	}
	var authority *pki.Authority
	if ca != nil {
		authority = pki.LoadAuthority(ca.Data)
	}
	if authority == nil || authority.Active == nil {
		s.problem = &userProblem{ReasonCertificateWait, fmt.Sprintf("waiting for MQTTBroker %q's certificate authority", b.Name)}
		return ctrl.Result{}, "", nil
	}
	conn, err := r.readConnectionSecret(ctx, u)
	switch {
	case apierrors.IsNotFound(err):
		conn = nil
	case err != nil:
		return ctrl.Result{}, "", fmt.Errorf("reading the connection Secret: %w", err)
	case !metav1.IsControlledBy(conn, u):
		s.problem = &userProblem{ReasonSecretConflict, fmt.Sprintf("Secret %q exists and does not belong to this MQTTUser; set connectionSecretName to another name", conn.Name)}
		return ctrl.Result{}, "", nil
	}
	now := r.clock()
	var certPEM, keyPEM []byte
	precondition := ""
	if conn != nil {
		certPEM, keyPEM = conn.Data[resources.ConnectionClientCertKey], conn.Data[resources.ConnectionClientKeyKey]
		creds.PreviousCertificate = conn.Annotations[resources.AnnotationPreviousCertificate]
		precondition = conn.ResourceVersion
	}
	why := authority.Reissue(certPEM, keyPEM, s.username, nil, settings.CertificateDuration, settings.RenewBefore, now)
	if why == "" {
		creds.ClientCert, creds.ClientKey = certPEM, keyPEM
	} else {
		pair, err := authority.Active.Issue(pki.Request{CommonName: s.username, Client: true, Validity: settings.CertificateDuration}, now)
		if err != nil {
			return ctrl.Result{}, "", err
		}
		creds.PreviousCertificate = "" // an expired predecessor needs no grace
		if old, err := pki.ParsePair(certPEM, keyPEM, now); err == nil {
			creds.PreviousCertificate = brokerconfig.CertificateFingerprint(old.Raw) // still valid: keep it working
		}
		creds.ClientCert, creds.ClientKey = pair.CertPEM, pair.KeyPEM
		log.FromContext(ctx).Info("issued a client certificate", "reason", why, "notAfter", pair.Cert.NotAfter.UTC().Format(time.RFC3339))
	}
	cert, err := pki.ParseCertificate(creds.ClientCert)
	if err != nil {
		return ctrl.Result{}, "", err
	}
	after := min(max(pki.RenewalTime(cert, settings.RenewBefore).Sub(now)+time.Second, time.Second), maxTLSRequeue)
	return ctrl.Result{RequeueAfter: after}, precondition, nil
}

// serverCA is the bundle applications verify the broker with, from the TLS
// Secret the broker controller writes; nil without TLS (or before it exists).
func (r *MQTTUserReconciler) serverCA(ctx context.Context, b *v1alpha1.MQTTBroker) ([]byte, error) {
	if !resources.TLSEnabled(b) {
		return nil, nil
	}
	secret, err := readSecret(ctx, r.Client, b.Namespace, resources.TLSSecretName(b))
	if secret == nil && err == nil {
		// Just written, likely: the cache lags. A connection Secret should
		// be complete when an application first reads it.
		secret, err = readSecret(ctx, r.APIReader, b.Namespace, resources.TLSSecretName(b))
	}
	if secret == nil || err != nil {
		return nil, err // not there yet: its write brings every user of the broker back
	}
	return secret.Data[resources.TLSCAKey], nil
}

func (r *MQTTUserReconciler) clock() time.Time {
	if r.Clock != nil {
		return r.Clock()
	}
	return time.Now()
}
