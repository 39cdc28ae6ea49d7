package httpapi_test

import (
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mqtt-operator/mqtt-operator/broker-image/internal/broker"
	"github.com/mqtt-operator/mqtt-operator/broker-image/internal/httpapi"
	"github.com/mqtt-operator/mqtt-operator/internal/brokerconfig"
)

func startBroker(t *testing.T, cluster bool) *broker.Broker {
	t.Helper()
	dir := t.TempDir()
	cfg := &brokerconfig.Config{
		Version:        brokerconfig.Version,
		AllowAnonymous: true,
		Listeners:      []brokerconfig.Listener{{Name: "mqtt", Protocol: brokerconfig.ProtocolTCP, Address: "127.0.0.1:0"}},
		HealthAddress:  "127.0.0.1:9090", AdminAddress: "127.0.0.1:9091",
		Limits:  brokerconfig.Limits{MaxConnections: 10, MaxPacketSize: 64 << 10, MaxInflight: 32, MaxQoS: 2, SessionExpirySeconds: 60, MaxKeepaliveSeconds: 60, MaxSubscriptionsPerClient: 10},
		Storage: brokerconfig.Storage{Path: dir},
	}
	if cluster {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		_ = l.Close()
		pw := filepath.Join(dir, "password")
		if err := os.WriteFile(pw, []byte("0123456789abcdef0123"), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg.Cluster = &brokerconfig.Cluster{Name: "c1", NodeName: "pod-0", Address: addr, Peers: []string{addr}, PasswordFile: pw}
	}
	b, err := broker.New(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	data, _ := brokerconfig.MarshalBundle(&brokerconfig.AuthBundle{Generation: 1})
	if _, err := b.ApplyBundle(data, "test"); err != nil {
		t.Fatal(err)
	}
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Drain(t.Context(), 0) })
	return b
}

func getWith(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	srv := httptest.NewServer(h)
	defer srv.Close()
	req, _ := http.NewRequest(http.MethodGet, srv.URL+path, nil)
	req.Header.Set("Authorization", "Bearer tok")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

func TestClusterStatusMetricsAndReadiness(t *testing.T) {
	b := startBroker(t, true)
	admin := httpapi.Admin(b, func() string { return "tok" }, slog.New(slog.DiscardHandler))
	code, body := getWith(t, admin, "/v1/cluster")
	var st brokerconfig.ClusterStatus
	if err := json.Unmarshal([]byte(body), &st); code != http.StatusOK || err != nil || st.Name != "c1" || st.Node != "pod-0" || !st.Joined {
		t.Fatalf("GET /v1/cluster: %d %s", code, body)
	}
	health := httpapi.Health(b)
	if code, body := getWith(t, health, "/readyz"); code != http.StatusOK {
		t.Fatalf("/readyz of a one-pod cluster: %d %s", code, body)
	}
	_, metrics := getWith(t, health, "/metrics")
	for _, want := range []string{"mqtt_cluster_peers_connected 0", "mqtt_cluster_messages_forwarded_total 0",
		"mqtt_cluster_messages_received_total 0", "mqtt_cluster_qos0_dropped_total 0", "mqtt_cluster_retained_copies_total 0", "mqtt_cluster_partition_held_total 0", "mqtt_cluster_partition_dropped_total 0"} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

func TestNoClusterStatusOnASinglePod(t *testing.T) {
	b := startBroker(t, false)
	admin := httpapi.Admin(b, func() string { return "tok" }, slog.New(slog.DiscardHandler))
	if code, _ := getWith(t, admin, "/v1/cluster"); code != http.StatusNotFound {
		t.Fatalf("GET /v1/cluster on a single pod: %d, want 404", code)
	}
	_, metrics := getWith(t, httpapi.Health(b), "/metrics")
	if strings.Contains(metrics, "mqtt_cluster_") {
		t.Error("a single pod reports cluster metrics")
	}
}
