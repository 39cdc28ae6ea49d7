package pki

import (
	"crypto/x509"
	"fmt"
	"time"
)

// Authority is a broker's certificate authority over time: the CA that
// signs, the one that will (already trusted, not yet signing), and those
// retired but still trusted until they expire.
//
// Rollover, so that no client that pinned the CA is cut off:
//  1. When the active CA has renewBefore left, a new CA is created and put
//     in the trust bundle next to it. Nothing is signed with it yet.
//  2. Half of renewBefore later, the new CA becomes active: the server and
//     client certificates are reissued from it. The old one stays in the
//     bundle, so client certificates it signed keep working until it expires.
//
// So clients have renewBefore/2 to pick up the bundle with both CAs before
// the server presents a certificate from the new one.
type Authority struct {
	Active   *CA
	Next     *CA
	Retired  []*x509.Certificate
	retiredP [][]byte
}

// Policy is how long CAs live and how early they are replaced.
type Policy struct {
	Validity, RenewBefore time.Duration
}

// Secret keys of an authority.
const (
	KeyCert        = "tls.crt"  // active CA certificate
	KeyKey         = "tls.key"  // active CA key
	KeyNextCert    = "next.crt" // next CA, during a rollover
	KeyNextKey     = "next.key"
	KeyRetiredCert = "retired.crt" // retired CA certificates, until they expire
	KeyTrustBundle = "ca.crt"      // every CA certificate to trust
)

// LoadAuthority reads an authority from its Secret data. Missing or damaged
// parts come back nil, to be replaced by Plan.
func LoadAuthority(data map[string][]byte) *Authority {
	a := &Authority{}
	if len(data[KeyCert]) > 0 {
		a.Active, _ = ParseCA(data[KeyCert], data[KeyKey])
	}
	if len(data[KeyNextCert]) > 0 {
		a.Next, _ = ParseCA(data[KeyNextCert], data[KeyNextKey])
	}
	if certs, err := ParseCertificates(data[KeyRetiredCert]); err == nil {
		for _, c := range certs {
			a.Retired = append(a.Retired, c)
			a.retiredP = append(a.retiredP, encodeCert(c.Raw))
		}
	}
	return a
}

// Data is the authority as Secret data.
func (a *Authority) Data() map[string][]byte {
	d := map[string][]byte{KeyCert: a.Active.CertPEM, KeyKey: a.Active.KeyPEM, KeyTrustBundle: a.TrustBundle()}
	if a.Next != nil {
		d[KeyNextCert], d[KeyNextKey] = a.Next.CertPEM, a.Next.KeyPEM
	}
	if len(a.retiredP) > 0 {
		d[KeyRetiredCert] = Bundle(a.retiredP...)
	}
	return d
}

// TrustBundle holds every CA certificate a client or the broker should
// trust now: active, next and retired.
func (a *Authority) TrustBundle() []byte {
	parts := [][]byte{a.Active.CertPEM}
	if a.Next != nil {
		parts = append(parts, a.Next.CertPEM)
	}
	return Bundle(append(parts, a.retiredP...)...)
}

// Plan moves the authority to where it should be at now, creating CAs as
// needed. It reports what it did (empty when nothing changed) and when it
// next needs looking at.
func (a *Authority) Plan(commonName string, p Policy, now time.Time) (changed string, next time.Time, err error) {
	newCA := func() (*CA, error) { return NewCA(commonName, now, p.Validity) }
	switch {
	case a.Active == nil:
		if a.Active, err = newCA(); err != nil {
			return "", time.Time{}, err
		}
		a.Next, a.Retired, a.retiredP = nil, nil, nil
		changed = "created the certificate authority"
	case a.Next != nil && (!now.Before(a.promotion(p)) || now.After(a.Active.Cert.NotAfter)):
		a.Retired = append(a.Retired, a.Active.Cert)
		a.retiredP = append(a.retiredP, a.Active.CertPEM)
		a.Active, a.Next = a.Next, nil
		changed = "the new certificate authority now signs; the old one stays trusted until it expires"
	case a.Next == nil && DueForRenewal(a.Active.Cert, p.RenewBefore, now):
		if a.Next, err = newCA(); err != nil {
			return "", time.Time{}, err
		}
		changed = fmt.Sprintf("created the next certificate authority; it signs from %s", a.promotion(p).UTC().Format(time.RFC3339))
	}
	if dropped := a.dropExpired(now); dropped > 0 && changed == "" {
		changed = "dropped expired certificate authorities from the trust bundle"
	}
	return changed, a.nextEvent(p), nil
}

// promotion is when the next CA starts signing.
func (a *Authority) promotion(p Policy) time.Time {
	return a.Next.Cert.NotBefore.Add(backdate + p.RenewBefore/2)
}

func (a *Authority) dropExpired(now time.Time) int {
	dropped := 0
	for i := 0; i < len(a.Retired); {
		if now.After(a.Retired[i].NotAfter) {
			a.Retired = append(a.Retired[:i], a.Retired[i+1:]...)
			a.retiredP = append(a.retiredP[:i], a.retiredP[i+1:]...)
			dropped++
			continue
		}
		i++
	}
	return dropped
}

func (a *Authority) nextEvent(p Policy) time.Time {
	next := RenewalTime(a.Active.Cert, p.RenewBefore)
	if a.Next != nil {
		next = a.promotion(p)
	}
	for _, r := range a.Retired {
		if r.NotAfter.Before(next) {
			next = r.NotAfter.Add(time.Second)
		}
	}
	return next
}

// Reissue says why the certificate in certPEM/keyPEM must be replaced, or ""
// when it is still good: it is missing or damaged, not signed by the active
// CA, no longer names what it must, longer-lived than asked, or due.
func (a *Authority) Reissue(certPEM, keyPEM []byte, commonName string, dnsNames []string, validity, renewBefore time.Duration, now time.Time) string {
	cert, err := ParsePair(certPEM, keyPEM, now)
	switch {
	case len(certPEM) == 0:
		return "no certificate yet"
	case err != nil:
		return "the stored certificate is unusable: " + err.Error()
	case !SignedBy(cert, a.Active.Cert):
		return "the certificate authority changed"
	case cert.Subject.CommonName != commonName || !Covers(cert, dnsNames):
		return "the names the certificate must carry changed"
	case cert.NotAfter.After(now.Add(validity)):
		return "the configured duration is shorter than the certificate's"
	case DueForRenewal(cert, renewBefore, now) && cert.NotAfter.Before(a.Active.Cert.NotAfter):
		// A certificate that ends with its CA cannot be renewed to last
		// longer; the CA rollover reissues it.
		return "due for renewal"
	}
	return ""
}
