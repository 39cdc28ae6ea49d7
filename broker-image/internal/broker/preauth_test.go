package broker_test

import (
	"net"
	"strings"
	"testing"
	"time"
)

// dialSilent opens n connections that never send anything, as an attacker
// filling a broker would, and closes them at the end of the test.
func dialSilent(t *testing.T, addr string, n int) []net.Conn {
	t.Helper()
	conns := make([]net.Conn, 0, n)
	for range n {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	t.Cleanup(func() {
		for _, c := range conns {
			_ = c.Close()
		}
	})
	return conns
}

// Sockets that never log in cannot lock logged-in clients out: they have a
// budget of their own, and the oldest silent one makes room for a newcomer.
func TestSilentSocketsDoNotLockClientsOut(t *testing.T) {
	cfg := testConfig(t.TempDir())
	cfg.Limits.MaxConnections = 10
	cfg.Limits.MaxPendingConnections = 20
	tb := startBroker(t, cfg, testBundle(t, 1))
	dialSilent(t, tb.tcp, 100)
	for range 3 {
		mustV5(t, tb.tcp, "alice", alicePassword)
	}
	s := tb.Stats()
	if s.PreauthEvicted < 80 {
		t.Errorf("%d silent sockets evicted, want at least 80 of 100 with a budget of 20", s.PreauthEvicted)
	}
	if s.PreauthPending > 20 {
		t.Errorf("%d connections not logged in, above the budget of 20", s.PreauthPending)
	}
}

// A CONNECT has a small size cap of its own, checked at its header before
// its body is read, whatever the packet size limit; after login the packet
// size limit applies.
func TestLargeConnectIsRefusedAtItsHeader(t *testing.T) {
	cfg := testConfig(t.TempDir())
	cfg.Limits.MaxPacketSize = 2 << 20
	tb := startBroker(t, cfg, testBundle(t, 1))
	conn := dialSilent(t, tb.tcp, 1)[0]
	// CONNECT, remaining length 1 MiB (varint 0x80 0x80 0x40), a few bytes of body.
	if _, err := conn.Write([]byte{0x10, 0x80, 0x80, 0x40, 0, 4, 'M', 'Q', 'T', 'T'}); err != nil {
		t.Fatal(err)
	}
	if !closedWithin(conn, 3*time.Second) {
		t.Fatal("a connection announcing a 1 MiB CONNECT stayed open")
	}
	if n := tb.Stats().ConnectTooLarge; n != 1 {
		t.Errorf("mqtt_connect_too_large_total = %d, want 1", n)
	}
	alice := mustV5(t, tb.tcp, "alice", alicePassword)
	bob := mustV5(t, tb.tcp, "bob", bobPassword)
	bob.subscribe(t, "devices/alice/#", 1)
	big := strings.Repeat("x", 100<<10)
	if err := alice.publish(t, "devices/alice/blob", big, 1, false); err != nil {
		t.Fatalf("a 100 KiB publish after login: %v", err)
	}
	bob.expect(t, big)
}

// Per source address, optionally: connections not logged in, and new
// connections per second.
func TestPerAddressLimits(t *testing.T) {
	cfg := testConfig(t.TempDir())
	cfg.Limits.MaxPendingConnectionsPerAddress = 3
	tb := startBroker(t, cfg, testBundle(t, 1))
	silent := dialSilent(t, tb.tcp, 4)
	if !closedWithin(silent[3], 3*time.Second) {
		t.Error("a fourth silent connection from one address stayed open with a limit of 3")
	}
	if n := tb.Stats().PreauthRefusedAddress; n != 1 {
		t.Errorf("refusals by address = %d, want 1", n)
	}

	cfg = testConfig(t.TempDir())
	cfg.Limits.ConnectRatePerAddress = 5
	tb = startBroker(t, cfg, testBundle(t, 1))
	burst := dialSilent(t, tb.tcp, 6)
	if !closedWithin(burst[5], 3*time.Second) {
		t.Error("a sixth connection within a second stayed open with a rate of 5 per second")
	}
	if n := tb.Stats().PreauthRefusedRate; n != 1 {
		t.Errorf("refusals by rate = %d, want 1", n)
	}
}
