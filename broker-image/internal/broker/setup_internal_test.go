package broker

import (
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/mochi-mqtt/server/v2/listeners"

	"github.com/mqtt-operator/mqtt-operator/internal/brokerconfig"
)

// panickingListener stands for a setup bug validation did not foresee.
type panickingListener struct{ listeners.Listener }

func (panickingListener) ID() string                  { return "broken" }
func (panickingListener) Init(*slog.Logger) error     { panic("http: invalid pattern") }
func (panickingListener) Address() string             { return "" }
func (panickingListener) Protocol() string            { return "tcp" }
func (panickingListener) Close(listeners.CloseFn)     {}
func (panickingListener) Serve(listeners.EstablishFn) {}

// Whatever a listener's setup does, Start returns an error that says what
// happened; the process never dies of a panic with a stack trace.
func TestStartTurnsASetupPanicIntoAnError(t *testing.T) {
	cfg := &brokerconfig.Config{
		Version:       brokerconfig.Version,
		Listeners:     []brokerconfig.Listener{{Name: "mqtt", Protocol: brokerconfig.ProtocolTCP, Address: "127.0.0.1:0"}},
		HealthAddress: "127.0.0.1:0", AdminAddress: "127.0.0.1:0",
		Limits:  brokerconfig.Limits{MaxConnections: 10, MaxPacketSize: 4096, MaxInflight: 8, MaxKeepaliveSeconds: 60, MaxSubscriptionsPerClient: 10},
		Storage: brokerconfig.Storage{Path: t.TempDir()},
	}
	b, err := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	b.listeners = append(b.listeners, panickingListener{})
	err = b.Start()
	if err == nil || !strings.Contains(err.Error(), "starting the broker: http: invalid pattern") {
		t.Fatalf("Start returned %v, want the panic as an error", err)
	}
	_ = b.server.Close()
}
