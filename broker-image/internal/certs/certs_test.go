package certs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"strings"
	"testing"
	"time"
)

func caPEM(t *testing.T, cn string) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func TestParseCAsIsStrict(t *testing.T) {
	one, two := caPEM(t, "one"), caPEM(t, "two")
	bundle := append(append([]byte("# the current CA\n"), one...), append([]byte("\n# the next one\n"), two...)...)
	pool, err := parseCAs(bundle)
	if err != nil {
		t.Fatalf("a bundle of two CAs with comments refused: %v", err)
	}
	want := x509.NewCertPool()
	for _, p := range [][]byte{one, two} {
		block, _ := pem.Decode(p)
		cert, _ := x509.ParseCertificate(block.Bytes)
		want.AddCert(cert)
	}
	if !pool.Equal(want) {
		t.Error("the pool does not hold exactly the two CAs")
	}

	secret := "c2VjcmV0LWtleS1ieXRlcw=="
	for name, tc := range map[string]struct {
		data string
		want string
	}{
		"empty":             {"", "no PEM certificate"},
		"not PEM":           {"just text\n", "no PEM certificate"},
		"truncated":         {string(one) + string(two[:len(two)/2]), "PEM block 2 does not decode"},
		"a key":             {"-----BEGIN EC PRIVATE KEY-----\n" + secret + "\n-----END EC PRIVATE KEY-----\n", `PEM block 1 is a "EC PRIVATE KEY"`},
		"garbage DER":       {"-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n", "certificate 1:"},
		"key after the CAs": {string(one) + "-----BEGIN PRIVATE KEY-----\n" + secret + "\n-----END PRIVATE KEY-----\n", `PEM block 2 is a "PRIVATE KEY"`},
	} {
		_, err := parseCAs([]byte(tc.data))
		switch {
		case err == nil:
			t.Errorf("%s: accepted", name)
		case !strings.Contains(err.Error(), tc.want):
			t.Errorf("%s: %v, want %q", name, err, tc.want)
		case strings.Contains(err.Error(), secret):
			t.Errorf("%s: the error quotes the file: %v", name, err)
		}
	}
}
