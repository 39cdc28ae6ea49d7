package policy

import (
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/mqtt-operator/mqtt-operator/internal/brokerconfig"
	"github.com/mqtt-operator/mqtt-operator/internal/passwordhash"
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

// A login checked against one bundle can reach mochi's client list only
// after Apply installed the next bundle and scanned that list without it.
// OnSessionEstablished, which mochi calls once the client is in the list,
// must then judge the session by the new bundle, as Apply would have.
func TestLoginRacingAReloadIsJudgedByTheNewBundle(t *testing.T) {
	hash, err := passwordhash.HashGenerated("s3cret-generated-0123456789abcdefgh", []byte("0123456789abcdef"))
	if err != nil {
		t.Fatal(err)
	}
	withUser := func(rev, h string) *Snapshot {
		return NewSnapshot(&brokerconfig.AuthBundle{Revision: rev, Users: []brokerconfig.User{{Username: "sensor", PasswordHash: h}}}, false, Quotas{})
	}
	other, err := passwordhash.HashGenerated("another-generated-password-0123456789", []byte("fedcba9876543210"))
	if err != nil {
		t.Fatal(err)
	}
	deleted := NewSnapshot(&brokerconfig.AuthBundle{Revision: "b"}, false, Quotas{})
	for _, tc := range []struct {
		name      string
		next      *Snapshot // applied between the login and the session
		inList    bool      // the client reached mochi's list before the reload's scan
		wantAlive bool
	}{
		{"no reload", nil, false, true},
		{"reload keeps the user", withUser("b", hash), false, true},
		{"reload deletes the user", deleted, false, false},
		{"reload changes the password", withUser("b", other), false, false},
		// Both the reload and the session hook see the client: one revocation.
		{"reload sees the client too", deleted, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			server := mqtt.New(nil)
			h := New(server, slog.New(slog.NewTextHandler(io.Discard, nil)))
			h.Apply(withUser("a", hash))
			a, b := net.Pipe()
			defer a.Close()
			defer b.Close()
			go func() { _, _ = io.Copy(io.Discard, b) }()
			cl := server.NewClient(a, "mqtt", "sensor-1", false)
			cl.Properties.Username = []byte("sensor")
			cl.Properties.ProtocolVersion = 5
			pk := packets.Packet{Connect: packets.ConnectParams{Username: []byte("sensor"), Password: []byte("s3cret-generated-0123456789abcdefgh")}}
			if err := h.OnConnect(cl, pk); err != nil {
				t.Fatal(err)
			}
			if !h.OnConnectAuthenticate(cl, pk) {
				t.Fatal("the user could not log in")
			}
			if tc.inList {
				server.Clients.Add(cl)
			}
			if tc.next != nil {
				want := map[bool]int{true: 1, false: 0}[tc.inList]
				if n := h.Apply(tc.next); n != want {
					t.Fatalf("Apply revoked %d sessions, want %d", n, want)
				}
			}
			server.Clients.Add(cl) // what mochi does next
			h.OnSessionEstablished(cl, pk)
			if alive := !cl.Closed(); alive != tc.wantAlive {
				t.Errorf("session alive = %v, want %v", alive, tc.wantAlive)
			}
			if want := map[bool]uint64{true: 0, false: 1}[tc.wantAlive]; h.Counters.Revoked.Load() != want {
				t.Errorf("revoked counter = %d, want %d", h.Counters.Revoked.Load(), want)
			}
		})
	}
}

// Someone guessing one user's password holds the one-wide suspect lane,
// not the CPUs: another user's first login does not wait for the guesses.
func TestPasswordGuessingKeepsToTheSuspectLane(t *testing.T) {
	aliceHash, err := passwordhash.HashChosen("alice-password")
	if err != nil {
		t.Fatal(err)
	}
	carolHash, err := passwordhash.HashChosen("carol-password")
	if err != nil {
		t.Fatal(err)
	}
	c := newCredentialCache([]byte("0123456789abcdef0123456789abcdef"))
	var counters Counters
	if c.verify("alice", aliceHash, true, []byte("guess"), &counters) {
		t.Fatal("a wrong password verified")
	}
	c.suspect <- struct{}{} // a guess against alice is running
	guessed := make(chan bool, 1)
	go func() { guessed <- c.verify("alice", aliceHash, true, []byte("alice-password"), &counters) }()
	carol := make(chan bool, 1)
	go func() { carol <- c.verify("carol", carolHash, true, []byte("carol-password"), &counters) }()
	select {
	case ok := <-carol:
		if !ok {
			t.Fatal("carol's password was refused")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("carol's login waited behind the guesses against alice")
	}
	select {
	case <-guessed:
		t.Fatal("alice's check ran while the suspect lane was full")
	default:
	}
	<-c.suspect
	if !<-guessed {
		t.Error("alice's right password was refused")
	}
}

// TakenOver marks a connection whose delayed will a takeover cancels. The
// mark must not outlive the connection, whether it was set before the
// connection's OnDisconnect (the usual order) or after it (the takeover
// raced the connection's own end): otherwise every takeover storm would
// keep ended clients in memory.
func TestTakenOverMarksDoNotOutliveTheirConnection(t *testing.T) {
	server := mqtt.New(nil)
	h := New(server, slog.New(slog.NewTextHandler(io.Discard, nil)))
	w := h.WillCheck().(*willCheck)
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	usual := server.NewClient(a, "mqtt", "usual", false)
	late := server.NewClient(b, "mqtt", "late", false)

	h.TakenOver(usual)
	h.TakenOver(usual) // twice, as a kick retried
	if _, ok := w.takenOver.Load(usual); !ok || w.marks.Load() != 1 {
		t.Fatalf("mark not held once: held=%v marks=%d", ok, w.marks.Load())
	}
	w.OnDisconnect(usual, nil, false)
	if _, ok := w.takenOver.Load(usual); ok || w.marks.Load() != 0 {
		t.Fatalf("mark kept after OnDisconnect: marks=%d", w.marks.Load())
	}

	h.TakenOver(late)                                    // after late's OnDisconnect
	w.takenOver.Store(late, time.Now().Add(-2*markLife)) // ...long ago
	w.OnDisconnect(server.NewClient(nil, "mqtt", "other", false), nil, false)
	if _, ok := w.takenOver.Load(late); ok || w.marks.Load() != 0 {
		t.Fatalf("stale mark not swept: marks=%d", w.marks.Load())
	}
}
