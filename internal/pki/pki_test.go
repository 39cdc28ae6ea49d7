package pki

import (
	"crypto/x509"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func TestAuthorityRollover(t *testing.T) {
	p := Policy{Validity: 100 * time.Hour, RenewBefore: 40 * time.Hour}
	a := LoadAuthority(nil)
	step := func(at time.Duration, wantChange string, wantTrusted int) {
		t.Helper()
		changed, _, err := a.Plan("test CA", p, t0.Add(at))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(changed, wantChange) || (wantChange == "" && changed != "") {
			t.Fatalf("at %v: changed %q, want %q", at, changed, wantChange)
		}
		if n := len(mustParse(t, a.TrustBundle())); n != wantTrusted {
			t.Fatalf("at %v: %d CAs trusted, want %d", at, n, wantTrusted)
		}
		// What was planned survives a round trip through the Secret.
		a = LoadAuthority(a.Data())
	}
	step(0, "created", 1)
	first := a.Active.Cert
	step(59*time.Hour, "", 1)
	step(61*time.Hour, "created the next", 2)
	if !a.Active.Cert.Equal(first) || a.Next == nil {
		t.Fatal("the next CA must not sign before the overlap's first half is over")
	}
	step(70*time.Hour, "", 2)
	step(81*time.Hour+6*time.Minute, "now signs", 2)
	if a.Active.Cert.Equal(first) || len(a.Retired) != 1 || !a.Retired[0].Equal(first) {
		t.Fatal("the next CA did not take over, or the old one is not retired")
	}
	step(99*time.Hour, "", 2)
	step(101*time.Hour, "dropped expired", 1)
}

func mustParse(t *testing.T, pem []byte) []any {
	t.Helper()
	certs, err := ParseCertificates(pem)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]any, len(certs))
	for i := range certs {
		out[i] = certs[i]
	}
	return out
}

func TestReissueReasons(t *testing.T) {
	a := LoadAuthority(nil)
	if _, _, err := a.Plan("ca", Policy{Validity: 1000 * time.Hour, RenewBefore: 100 * time.Hour}, t0); err != nil {
		t.Fatal(err)
	}
	names := []string{"b", "a"}
	pair, err := a.Active.Issue(Request{CommonName: "svc", DNSNames: names, Validity: 10 * time.Hour}, t0)
	if err != nil {
		t.Fatal(err)
	}
	other, _ := NewCA("other", t0, 1000*time.Hour)
	foreign, _ := other.Issue(Request{CommonName: "svc", DNSNames: names, Validity: 10 * time.Hour}, t0)
	cases := []struct {
		name      string
		cert, key []byte
		cn        string
		names     []string
		validity  time.Duration
		at        time.Duration
		want      string
	}{
		{"good", pair.CertPEM, pair.KeyPEM, "svc", []string{"a", "b"}, 10 * time.Hour, time.Hour, ""},
		{"missing", nil, nil, "svc", names, 10 * time.Hour, 0, "no certificate yet"},
		{"wrong key", pair.CertPEM, foreign.KeyPEM, "svc", names, 10 * time.Hour, 0, "unusable"},
		{"other CA", foreign.CertPEM, foreign.KeyPEM, "svc", names, 10 * time.Hour, 0, "certificate authority changed"},
		{"names", pair.CertPEM, pair.KeyPEM, "svc", []string{"a"}, 10 * time.Hour, 0, "names"},
		{"common name", pair.CertPEM, pair.KeyPEM, "other", names, 10 * time.Hour, 0, "names"},
		{"shorter duration", pair.CertPEM, pair.KeyPEM, "svc", names, 5 * time.Hour, 0, "shorter"},
		{"due", pair.CertPEM, pair.KeyPEM, "svc", names, 10 * time.Hour, 8*time.Hour + time.Minute, "due"},
		{"expired", pair.CertPEM, pair.KeyPEM, "svc", names, 10 * time.Hour, 11 * time.Hour, "expired"},
	}
	for _, c := range cases {
		got := a.Reissue(c.cert, c.key, c.cn, c.names, c.validity, 2*time.Hour, t0.Add(c.at))
		if (c.want == "") != (got == "") || !strings.Contains(got, c.want) {
			t.Errorf("%s: Reissue = %q, want %q", c.name, got, c.want)
		}
	}
}

func TestCertificatesNeverOutliveTheirCA(t *testing.T) {
	ca, _ := NewCA("short", t0, 5*time.Hour)
	pair, err := ca.Issue(Request{CommonName: "x", Validity: 24 * time.Hour}, t0)
	if err != nil {
		t.Fatal(err)
	}
	if pair.Cert.NotAfter.After(ca.Cert.NotAfter) {
		t.Errorf("certificate expires %s, after its CA (%s)", pair.Cert.NotAfter, ca.Cert.NotAfter)
	}
	// A certificate that ends with its CA is not "due" in a loop: only the
	// CA's rollover can replace it with something longer-lived.
	a := &Authority{Active: ca}
	if why := a.Reissue(pair.CertPEM, pair.KeyPEM, "x", nil, 24*time.Hour, 2*time.Hour, t0.Add(4*time.Hour)); why != "" {
		t.Errorf("reissued a certificate capped by its CA: %s", why)
	}
}

func TestParsePairErrorsNameTheProblemWithoutKeyMaterial(t *testing.T) {
	ca, _ := NewCA("ca", t0, 10*time.Hour)
	a, _ := ca.Issue(Request{CommonName: "a", Validity: time.Hour}, t0)
	b, _ := ca.Issue(Request{CommonName: "b", Validity: time.Hour}, t0)
	for _, c := range []struct {
		name      string
		cert, key []byte
		at        time.Time
		want      string
	}{
		{"empty cert", nil, a.KeyPEM, t0, "tls.crt is empty"},
		{"empty key", a.CertPEM, nil, t0, "tls.key is empty"},
		{"mismatch", a.CertPEM, b.KeyPEM, t0, "not a usable pair"},
		{"expired", a.CertPEM, a.KeyPEM, t0.Add(2 * time.Hour), "expired"},
		{"not yet valid", a.CertPEM, a.KeyPEM, t0.Add(-time.Hour), "not valid before"},
	} {
		_, err := ParsePair(c.cert, c.key, c.at)
		if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "PRIVATE KEY") {
			t.Errorf("%s: %v, want an error saying %q", c.name, err, c.want)
		}
	}
}

// A server certificate serves, a client one logs in, a peer one (a cluster
// route, dialled by either side) does both.
func TestIssueKeyUsages(t *testing.T) {
	ca, err := NewCA("test CA", t0, 100*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	for _, tc := range []struct {
		name           string
		req            Request
		server, client bool
	}{
		{"server", Request{}, true, false},
		{"client", Request{Client: true}, false, true},
		{"peer", Request{Peer: true}, true, true},
	} {
		tc.req.CommonName, tc.req.DNSNames, tc.req.Validity = "x", []string{"*.b-headless.ns.svc"}, time.Hour
		pair, err := ca.Issue(tc.req, t0)
		if err != nil {
			t.Fatal(err)
		}
		for usage, want := range map[x509.ExtKeyUsage]bool{x509.ExtKeyUsageServerAuth: tc.server, x509.ExtKeyUsageClientAuth: tc.client} {
			_, err := pair.Cert.Verify(x509.VerifyOptions{Roots: roots, CurrentTime: t0, KeyUsages: []x509.ExtKeyUsage{usage}})
			if (err == nil) != want {
				t.Errorf("%s certificate for usage %v: verify error %v, want usable=%v", tc.name, usage, err, want)
			}
		}
	}
}
