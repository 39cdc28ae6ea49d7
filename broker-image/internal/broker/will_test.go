package broker_test

import (
	"net"
	"testing"

	"github.com/mqtt-operator/mqtt-operator/internal/brokerconfig"
)

// mqttConnectWill encodes an MQTT 3.1.1 clean-session CONNECT with a will.
func mqttConnectWill(clientID, user, password, willTopic, willPayload string, retain bool) []byte {
	str := func(s string) []byte { return append([]byte{byte(len(s) >> 8), byte(len(s))}, s...) }
	flags := byte(0xC0 | 0x04 | 0x02) // username, password, will, clean session
	if retain {
		flags |= 0x20
	}
	body := append(str("MQTT"), 4, flags, 0, 30)
	for _, s := range []string{clientID, willTopic, willPayload, user, password} {
		body = append(body, str(s)...)
	}
	return append([]byte{0x10, byte(len(body))}, body...)
}

// A will is an ordinary publish sent late: the ACLs in force when the
// connection ends decide whether it goes out, not those of its CONNECT.
func TestWillDeniedByTheBundleInForceIsNotSent(t *testing.T) {
	tb := startBroker(t, testConfig(t.TempDir()), testBundle(t, 1))
	alice := mustV5(t, tb.tcp, "alice", alicePassword) // alice reads devices/+/status
	alice.subscribe(t, "devices/+/status", 0)
	// bob's generated password is checked in microseconds: no bcrypt run
	// races the raw read's deadline on a loaded machine.
	connectWithWill := func(payload string) net.Conn {
		t.Helper()
		conn, err := net.Dial("tcp", tb.tcp)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = conn.Write(mqttConnectWill("bob-will", "bob", bobPassword, "devices/bob/status", payload, true))
		if ack := readPacket(t, conn); ack[3] != 0 {
			t.Fatalf("CONNECT with a will refused: % x", ack)
		}
		return conn
	}
	_ = connectWithWill("will-allowed").Close() // no DISCONNECT: the will is due
	alice.expect(t, "will-allowed")             // the test can see a will at all
	waitOffline(t, tb, "bob-will")

	conn := connectWithWill("will-denied")
	narrowed := testBundle(t, 2)
	narrowed.ACLs = append(narrowed.ACLs, brokerconfig.ACL{
		Name: "test/no-bob-status", Subjects: brokerconfig.Subjects{Users: []string{"bob"}},
		Rules: []brokerconfig.Rule{{Topic: "devices/bob/status", Access: brokerconfig.AccessPublish, Effect: brokerconfig.EffectDeny}},
	})
	tb.apply(t, narrowed)
	_ = conn.Close()
	waitOffline(t, tb, "bob-will")

	// alice's own message, sent after the will was due, arrives after it.
	if err := alice.publish(t, "devices/alice/status", "marker", 0, false); err != nil {
		t.Fatal(err)
	}
	alice.expectNoneBefore(t, "will-denied", "marker")
	if m, ok := tb.Server().Topics.Retained.GetAll()["devices/bob/status"]; ok && string(m.Payload) == "will-denied" {
		t.Error("the denied will was retained")
	}
}

// The will of a session ended because its user was removed is not sent: its
// user is no longer allowed to publish anything. mochi sends no will for a
// session the server ends, and the will check refuses a revoked session's
// will besides; this keeps both true.
func TestWillOfARemovedUserIsNotSent(t *testing.T) {
	tb := startBroker(t, testConfig(t.TempDir()), testBundle(t, 1))
	alice := mustV5(t, tb.tcp, "alice", alicePassword)
	alice.subscribe(t, "devices/+/status", 0)
	conn, err := net.Dial("tcp", tb.tcp)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, _ = conn.Write(mqttConnectWill("bob-will", "bob", bobPassword, "devices/bob/status", "will-of-removed", false))
	if ack := readPacket(t, conn); ack[3] != 0 {
		t.Fatalf("CONNECT with a will refused: % x", ack)
	}
	withoutBob := testBundle(t, 2)
	withoutBob.Users = withoutBob.Users[:1] // alice only
	tb.apply(t, withoutBob)                 // disconnects bob's session
	waitOffline(t, tb, "bob-will")

	if err := alice.publish(t, "devices/alice/status", "marker", 0, false); err != nil {
		t.Fatal(err)
	}
	alice.expectNoneBefore(t, "will-of-removed", "marker")
}

// A connection that ends by DISCONNECT while a new connection with its
// client ID logs in: mochi clears the old connection's will without
// synchronisation as it ends, so the takeover may not read it. Under -race
// this failed FuzzAfterConnect once in ~50 runs; here each round races the
// two for real.
func TestTakeoverRacingADisconnectReadsNoWill(t *testing.T) {
	tb := startBroker(t, testConfig(t.TempDir()), testBundle(t, 1))
	dial := func(connect []byte) net.Conn {
		t.Helper()
		conn, err := net.Dial("tcp", tb.tcp)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = conn.Write(connect)
		return conn
	}
	for range 100 {
		old := dial(mqttConnectWill("racing-will", "bob", bobPassword, "devices/bob/status", "gone", false))
		if ack := readPacket(t, old); ack[3] != 0 {
			t.Fatalf("CONNECT refused: % x", ack)
		}
		done := make(chan struct{})
		go func() { defer close(done); _, _ = old.Write([]byte{0xe0, 0}) }()
		next := dial(mqttConnect("racing-will", "bob", bobPassword, true))
		if ack := readPacket(t, next); ack[3] != 0 {
			t.Fatalf("second CONNECT refused: % x", ack)
		}
		<-done
		_ = old.Close()
		_ = next.Close()
	}
}
