package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mqtt-operator/mqtt-operator/internal/brokerconfig"
)

// queriedMetrics returns the broker metric names the chart's alerts and
// dashboards query.
func queriedMetrics(t *testing.T) []string {
	t.Helper()
	files := []string{filepath.Join("..", "charts", "mqtt-operator", "files", "alerts.yaml")}
	dashboards, _ := filepath.Glob(filepath.Join("..", "charts", "mqtt-operator", "dashboards", "*.json"))
	files = append(files, dashboards...)
	var names []string
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range regexp.MustCompile(`\bmqtt_[a-z0-9_]+`).FindAllString(string(data), -1) {
			if !slices.Contains(names, m) {
				names = append(names, m)
			}
		}
	}
	slices.Sort(names)
	if len(names) < 8 {
		t.Fatalf("found only %d metric names in %v: the pattern or the files changed", len(names), files)
	}
	return names
}

// Every metric the chart's alerts and dashboards query is on a real
// broker's /metrics (with TLS and persistence on, as in a pod): a renamed
// metric would otherwise make an alert silently never fire. And no broker
// metric has a label per client, user, device or topic.
func TestAlertsAndDashboardsQueryRealMetrics(t *testing.T) {
	f := newBrokerFiles(t)
	dir := filepath.Dir(f.config)
	f.cfg.TLS = &brokerconfig.TLS{CertFile: filepath.Join(dir, "tls.crt"), KeyFile: filepath.Join(dir, "tls.key")}
	writeSelfSigned(t, f.cfg.TLS.CertFile, f.cfg.TLS.KeyFile)
	f.cfg.Listeners = append(f.cfg.Listeners, brokerconfig.Listener{Name: "mqtts", Protocol: brokerconfig.ProtocolTLS, Address: freeAddr(t)})
	f.cfg.Storage.Persistent = true
	f.writeConfig(t)
	f.writeBundle(t, f.authBundle())
	f.start(t)
	waitFor(t, "ready", func() bool { return httpStatus(f.health, "/readyz") == http.StatusOK })

	resp, err := http.Get("http://" + f.health + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	exported := map[string]bool{}
	// Cardinality: per broker pod, never per client, user, device or topic.
	boundedLabels := map[string]bool{"qos": true, "reason": true, "result": true, "access": true, "quota": true, "limit": true, "revision": true}
	labelName := regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)="`)
	for _, line := range strings.Split(string(body), "\n") {
		if series, _, ok := strings.Cut(line, " "); ok && !strings.HasPrefix(line, "#") {
			name, labels, _ := strings.Cut(series, "{")
			exported[name] = true
			if !strings.HasPrefix(name, "mqtt_") {
				continue
			}
			for _, m := range labelName.FindAllStringSubmatch(labels, -1) {
				if !boundedLabels[m[1]] {
					t.Errorf("%s has label %q: broker metrics carry only bounded labels (%v)", name, m[1], boundedLabels)
				}
			}
		}
	}
	for _, name := range queriedMetrics(t) {
		if !exported[name] {
			t.Errorf("%s is queried by the chart's alerts or dashboards but the broker does not export it", name)
		}
	}
}

// writeSelfSigned writes a self-signed ECDSA certificate for localhost,
// valid for a year (no expiry alert fires on it), and its key.
func writeSelfSigned(t *testing.T, certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "broker"},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(365 * 24 * time.Hour),
		DNSNames: []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
}
