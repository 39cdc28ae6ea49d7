package httpapi_test

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/mqtt-operator/mqtt-operator/broker-image/internal/httpapi"
	"github.com/mqtt-operator/mqtt-operator/internal/brokerconfig"
)

func postWith(t *testing.T, h http.Handler, path, token, body string) (int, string) {
	t.Helper()
	srv := httptest.NewServer(h)
	defer srv.Close()
	req, _ := http.NewRequest(http.MethodPost, srv.URL+path, bytes.NewBufferString(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(out)
}

// connectAnonymous logs an MQTT 3.1.1 client in without a username and
// keeps its connection open until the test ends.
func connectAnonymous(t *testing.T, addr, id string) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	pkt := []byte{0x10, byte(12 + len(id)), 0, 4, 'M', 'Q', 'T', 'T', 4, 0x02, 0, 30, 0, byte(len(id))}
	if _, err := conn.Write(append(pkt, id...)); err != nil {
		t.Fatal(err)
	}
	ack := make([]byte, 4)
	_ = conn.SetReadDeadline(time.Now().Add(3 * time.Second))
	if _, err := io.ReadFull(conn, ack); err != nil || ack[3] != 0 {
		t.Fatalf("CONNACK % x, %v", ack, err)
	}
}

// POST /v1/shed: token required, the request checked, the pod's client
// count in GET /v1/cluster, one shed at a time (409 for the next).
func TestShedRoute(t *testing.T) {
	b := startBroker(t, true)
	admin := httpapi.Admin(b, func() string { return "tok" }, slog.New(slog.DiscardHandler))
	if code, _ := postWith(t, admin, "/v1/shed", "", `{"clients":1}`); code != http.StatusUnauthorized {
		t.Errorf("without the token: %d, want 401", code)
	}
	for _, bad := range []string{`{"clients":0}`, `{"clients":1,"periodSeconds":-1}`, `{"clients":1,"periodSeconds":100000}`, `{"clients":1,"extra":1}`, `not json`} {
		if code, body := postWith(t, admin, "/v1/shed", "tok", bad); code != http.StatusBadRequest {
			t.Errorf("%s: %d %s, want 400", bad, code, body)
		}
	}
	if code, body := postWith(t, admin, "/v1/shed", "tok", `{"clients":5,"periodSeconds":1}`); code != http.StatusAccepted || body != "{\"moving\":0}\n" {
		t.Errorf("with no clients: %d %s, want 202 moving 0", code, body)
	}
	addr := b.ListenerAddress("mqtt")
	connectAnonymous(t, addr, "first")
	connectAnonymous(t, addr, "second")
	_, body := getWith(t, admin, "/v1/cluster")
	var st brokerconfig.ClusterStatus
	if err := json.Unmarshal([]byte(body), &st); err != nil || st.Clients != 2 || st.Shedding {
		t.Fatalf("GET /v1/cluster: %s, want 2 clients, not shedding", body)
	}
	if code, body := postWith(t, admin, "/v1/shed", "tok", `{"clients":5,"periodSeconds":4}`); code != http.StatusAccepted || body != "{\"moving\":2}\n" {
		t.Errorf("%d %s, want 202 moving 2", code, body)
	}
	if code, body := postWith(t, admin, "/v1/shed", "tok", `{"clients":1}`); code != http.StatusConflict {
		t.Errorf("a second shed while the first runs: %d %s, want 409", code, body)
	}
	_, body = getWith(t, admin, "/v1/cluster")
	if err := json.Unmarshal([]byte(body), &st); err != nil || !st.Shedding {
		t.Errorf("GET /v1/cluster during a shed: %s, want shedding", body)
	}
}
