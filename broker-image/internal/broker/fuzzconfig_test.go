package broker_test

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/mqtt-operator/mqtt-operator/broker-image/internal/broker"
	"github.com/mqtt-operator/mqtt-operator/internal/brokerconfig"
)

// FuzzConfigStart is the broker's side of brokerconfig's FuzzConfigParse:
// every configuration that validates must also build and start, or fail
// with an error, never panic. Listeners keep their names, protocols and
// paths but bind free loopback ports, storage goes to a temporary
// directory and TLS to a real pair, so what is exercised is the setup of
// the listeners the configuration describes.
//
//	go test ./broker-image/internal/broker -run '^$' -fuzz FuzzConfigStart -fuzztime 10m
func FuzzConfigStart(f *testing.F) {
	certDir := f.TempDir()
	newTestCA(f).issue(f, certDir, 2, time.Now().Add(time.Hour))
	clustered := testConfig("/data")
	clustered.Cluster = &brokerconfig.Cluster{Name: "c", NodeName: "pod-0", Address: ":6222", Peers: []string{"pod-0.h:6222", "pod-1.h:6222"}, PasswordFile: "/p",
		TLS: &brokerconfig.ClusterTLS{CertFile: "/c", KeyFile: "/k", CAFile: "/ca"}}
	for _, seed := range []*brokerconfig.Config{testConfig("/data"), tlsConfig("/data"), clustered} {
		data, err := brokerconfig.Marshal(seed)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	// Paths net/http panics on (before validation refused them, a
	// websocket listener without a path passed and the broker panicked).
	for _, path := range []string{"", "/{x}", "/a/b/", "GET /"} {
		cfg := testConfig("/data")
		cfg.Listeners[1].Path = path
		data, err := yaml.Marshal(cfg)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	f.Fuzz(func(t *testing.T, data []byte) {
		if cfg, err := brokerconfig.Parse(data); err == nil {
			startRewritten(t, cfg, certDir, log)
		}
		var lenient brokerconfig.Config
		if yaml.Unmarshal(data, &lenient) == nil && lenient.Validate() == nil {
			startRewritten(t, &lenient, certDir, log)
		}
	})
}

func startRewritten(t *testing.T, cfg *brokerconfig.Config, certDir string, log *slog.Logger) {
	for i := range cfg.Listeners {
		cfg.Listeners[i].Address = "127.0.0.1:0"
	}
	cfg.HealthAddress, cfg.AdminAddress = "127.0.0.1:0", "127.0.0.1:0"
	cfg.Storage.Path = t.TempDir()
	if cfg.TLS != nil {
		cfg.TLS = &brokerconfig.TLS{CertFile: filepath.Join(certDir, "tls.crt"), KeyFile: filepath.Join(certDir, "tls.key")}
	}
	if c := cfg.Cluster; c != nil {
		// On loopback, alone: no route is dialled to what the fuzzer wrote.
		c.Address = "127.0.0.1:0"
		c.Peers = []string{c.Address}
		c.PasswordFile = filepath.Join(t.TempDir(), "cluster-password")
		if err := os.WriteFile(c.PasswordFile, []byte("fuzz-cluster-password-0123"), 0o600); err != nil {
			t.Fatal(err)
		}
		if c.NodeName == "" {
			c.NodeName = "fuzz"
		}
		if c.TLS != nil {
			crt := filepath.Join(certDir, "tls.crt")
			c.TLS = &brokerconfig.ClusterTLS{CertFile: crt, KeyFile: filepath.Join(certDir, "tls.key"), CAFile: crt}
		}
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("the rewritten configuration does not validate: %v", err)
	}
	b, err := broker.New(cfg, log)
	if err != nil {
		t.Fatalf("a valid configuration does not build: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	defer b.Drain(ctx, 0)
	if err := b.Start(); err != nil {
		t.Fatalf("a valid configuration does not start: %v", err)
	}
	for _, l := range cfg.Listeners {
		if b.ListenerAddress(l.Name) == "" {
			t.Fatalf("listener %s is not bound", l.Name)
		}
	}
}
