// Package httpapi serves the broker's two HTTP endpoints: the health port
// (/healthz, /readyz, /metrics; unauthenticated, nothing secret on it) and the
// admin port (the operator pushes auth bundles; bearer-token authenticated,
// and reachable only from the operator by NetworkPolicy).
package httpapi

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/mqtt-operator/mqtt-operator/broker-image/internal/broker"
	"github.com/mqtt-operator/mqtt-operator/internal/brokerconfig"
)

// maxBundleBytes bounds an admin PUT: 10,000 users with bcrypt hashes and
// their ACLs fit in a few MiB.
const maxBundleBytes = 32 << 20

// Health returns the handler of the health port.
func Health(b *broker.Broker) http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(newCollector(b), collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if err := b.Ready(); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "ok\n")
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	return mux
}

// TokenFile reads the admin token from a file at every request, so a
// rotated token (a new Secret, synced by the kubelet) is in force without a
// restart. A request costs one read of a small file; the admin port is
// reachable only from the operator. An unreadable file gives "", which
// refuses every request.
func TokenFile(path string) func() string {
	return func() string {
		data, err := os.ReadFile(path)
		if err != nil {
			return ""
		}
		return strings.TrimSpace(string(data))
	}
}

// Admin returns the handler of the admin port. The token, as token returns
// it for each request, is compared in constant time; an empty one refuses
// every admin route.
func Admin(b *broker.Broker, token func() string, log *slog.Logger) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("PUT /v1/auth-bundle", func(w http.ResponseWriter, r *http.Request) {
		data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBundleBytes))
		if err != nil {
			http.Error(w, "reading body: "+err.Error(), http.StatusRequestEntityTooLarge)
			return
		}
		revision, err := b.ApplyBundle(data, "admin-api")
		switch {
		case errors.Is(err, broker.ErrStale):
			// The generation lets the operator continue counting from the
			// pod's, for example after the auth Secret was recreated.
			writeJSON(w, http.StatusConflict, map[string]any{"error": err.Error(), "revision": revision, "generation": b.Stats().Generation})
		case err != nil:
			writeJSON(w, http.StatusUnprocessableEntity, map[string]string{"error": err.Error()})
		default:
			writeJSON(w, http.StatusOK, map[string]string{"revision": revision})
		}
	})
	mux.HandleFunc("GET /v1/auth-bundle/revision", func(w http.ResponseWriter, _ *http.Request) {
		s := b.Stats()
		writeJSON(w, http.StatusOK, map[string]any{"revision": s.Revision, "generation": s.Generation})
	})
	mux.HandleFunc("GET /v1/cluster", func(w http.ResponseWriter, _ *http.Request) {
		st, ok := b.ClusterStatus()
		if !ok {
			writeJSON(w, http.StatusNotFound, map[string]string{"error": "this broker is not clustered"})
			return
		}
		writeJSON(w, http.StatusOK, st)
	})
	// The operator rebalances a cluster after a scale-out: it asks the
	// busiest pods to send some clients elsewhere (broker.Shed).
	mux.HandleFunc("POST /v1/shed", func(w http.ResponseWriter, r *http.Request) {
		var req brokerconfig.ShedRequest
		dec := json.NewDecoder(io.LimitReader(r.Body, 4<<10))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "reading the request: " + err.Error()})
			return
		}
		moving, err := b.Shed(req.Clients, time.Duration(req.PeriodSeconds*float64(time.Second)))
		switch {
		case errors.Is(err, broker.ErrDraining), errors.Is(err, broker.ErrShedding):
			writeJSON(w, http.StatusConflict, map[string]string{"error": err.Error()})
		case err != nil:
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
		default:
			writeJSON(w, http.StatusAccepted, brokerconfig.ShedResponse{Moving: moving})
		}
	})
	return authenticated(token, log, mux)
}

func authenticated(token func() string, log *slog.Logger, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		current := token()
		got, want := []byte(r.Header.Get("Authorization")), []byte("Bearer "+current)
		if current == "" || subtle.ConstantTimeCompare(got, want) != 1 {
			log.Warn("refused an admin request without a valid token", "remote", r.RemoteAddr, "path", r.URL.Path,
				"hadToken", strings.HasPrefix(string(got), "Bearer "))
			w.Header().Set("WWW-Authenticate", "Bearer")
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r)
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
