package policy

import (
	"io"
	"log/slog"
	"net"
	"testing"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/mqtt-operator/mqtt-operator/internal/brokerconfig"
)

// mochi calls OnDisconnect only for clients it admitted, so the state
// OnConnect stores for a client that then fails to log in must go with the
// refusal: otherwise every wrong password would keep a client in memory.
func TestRefusedLoginLeavesNoClientState(t *testing.T) {
	server := mqtt.New(nil)
	h := New(server, slog.New(slog.NewTextHandler(io.Discard, nil)))
	h.Apply(NewSnapshot(&brokerconfig.AuthBundle{Revision: "test"}, false, Quotas{}))
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	cl := server.NewClient(a, "mqtt", "refused", false)
	cl.Properties.Username = []byte("nobody")
	if err := h.OnConnect(cl, packets.Packet{}); err != nil {
		t.Fatal(err)
	}
	if h.state(cl) == nil {
		t.Fatal("OnConnect stored no state: the case is not being tested")
	}
	pk := packets.Packet{Connect: packets.ConnectParams{Username: []byte("nobody"), Password: []byte("guess")}}
	if h.OnConnectAuthenticate(cl, pk) {
		t.Fatal("an unknown user logged in")
	}
	if h.state(cl) != nil {
		t.Error("the refused client's state is still held")
	}
}
