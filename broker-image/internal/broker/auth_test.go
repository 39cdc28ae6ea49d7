package broker_test

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	pahov3 "github.com/eclipse/paho.mqtt.golang"

	"github.com/mqtt-operator/mqtt-operator/internal/brokerconfig"
	"github.com/mqtt-operator/mqtt-operator/internal/passwordhash"
)

func TestAuthentication(t *testing.T) {
	tb := startBroker(t, testConfig(t.TempDir()), testBundle(t, 1))
	cases := []struct {
		name, user, password string
		ok                   bool
	}{
		{"bcrypt password", "alice", alicePassword, true},
		{"generated password", "bob", bobPassword, true},
		{"wrong password", "alice", "guess", false},
		{"unknown user", "mallory", alicePassword, false},
		{"empty password", "alice", "", false},
		{"anonymous while anonymous access is off", "", "", false},
	}
	for _, tc := range cases {
		t.Run("v5 "+tc.name, func(t *testing.T) {
			_, err := connectV5(t, tb.tcp, v5opts{user: tc.user, password: tc.password})
			if (err == nil) != tc.ok {
				t.Errorf("connect error %v, want ok=%v", err, tc.ok)
			}
		})
		t.Run("v3 "+tc.name, func(t *testing.T) {
			c, err := connectV3("tcp://"+tb.tcp, tc.user, tc.password, fmt.Sprintf("v3-%d", time.Now().UnixNano()))
			if (err == nil) != tc.ok {
				t.Errorf("connect error %v, want ok=%v", err, tc.ok)
			}
			if err == nil {
				c.Disconnect(10)
			}
		})
	}
	if s := tb.Stats(); s.AuthSuccess == 0 || s.AuthFailure == 0 {
		t.Errorf("auth metrics not counted: %+v", s)
	}
}

// A second connection of a known client is answered from the verified
// credential cache instead of another bcrypt run.
func TestReconnectsHitTheCredentialCache(t *testing.T) {
	tb := startBroker(t, testConfig(t.TempDir()), testBundle(t, 1))
	for range 3 {
		c := mustV5(t, tb.tcp, "alice", alicePassword)
		_ = c.Disconnect(&paho.Disconnect{})
	}
	if hits := tb.Stats().AuthCacheHits; hits != 2 {
		t.Errorf("%d cache hits for three connects, want 2", hits)
	}
	if _, err := connectV5(t, tb.tcp, v5opts{user: "alice", password: alicePassword + "x"}); err == nil {
		t.Error("a wrong password passed after the right one was cached")
	}
}

func TestClientIDOfAnotherUserIsRefused(t *testing.T) {
	tb := startBroker(t, testConfig(t.TempDir()), testBundle(t, 1))
	if _, err := connectV5(t, tb.tcp, v5opts{user: "alice", password: alicePassword, clientID: "sensor-1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := connectV5(t, tb.tcp, v5opts{user: "bob", password: bobPassword, clientID: "sensor-1"}); err == nil {
		t.Error("bob took over alice's client ID")
	}
}

func TestACL(t *testing.T) {
	tb := startBroker(t, testConfig(t.TempDir()), testBundle(t, 1))
	alice := mustV5(t, tb.tcp, "alice", alicePassword)
	bob := mustV5(t, tb.tcp, "bob", bobPassword)

	subs := []struct {
		c      *v5
		who    string
		filter string
		ok     bool
	}{
		{bob, "bob", "devices/alice/#", true},
		{bob, "bob", "devices/+/status", true},
		{alice, "alice", "devices/+/status", true},
		{alice, "alice", "commands/alice/#", true},
		{alice, "alice", "commands/bob/#", false},
		{alice, "alice", "devices/bob/#", false},
		{alice, "alice", "#", false},
		{alice, "alice", "devices/#", false},
	}
	for _, s := range subs {
		code := s.c.subscribe(t, s.filter, 1)
		if (code < 0x80) != s.ok {
			t.Errorf("%s subscribe %s: reason 0x%02x, want allowed=%v", s.who, s.filter, code, s.ok)
		}
	}

	// alice may publish under her own prefix only.
	if err := alice.publish(t, "devices/alice/temp", "21.5", 1, false); err != nil {
		t.Fatal(err)
	}
	bob.expect(t, "21.5")
	if err := alice.publish(t, "devices/bob/temp", "forged", 1, false); err == nil {
		t.Error("alice's QoS 1 publish to bob's prefix was acknowledged as a success")
	}
	_ = alice.publish(t, "devices/alice/status", "marker", 1, false)
	bob.expectNoneBefore(t, "forged", "marker")
	if tb.Stats().ACLDeniedPublish == 0 {
		t.Error("denied publish not counted")
	}
}

// MQTT 3.1.1 clients get the same answers, as SUBACK 0x80 and silent drops.
func TestACLWithMQTT311(t *testing.T) {
	tb := startBroker(t, testConfig(t.TempDir()), testBundle(t, 1))
	alice, err := connectV3("tcp://"+tb.tcp, "alice", alicePassword, "alice-v3")
	if err != nil {
		t.Fatal(err)
	}
	defer alice.Disconnect(10)
	for filter, want := range map[string]byte{"commands/bob/#": 0x80, "commands/alice/#": 1} {
		tok := alice.Subscribe(filter, 1, nil).(*pahov3.SubscribeToken)
		tok.Wait()
		if got := tok.Result()[filter]; got != want {
			t.Errorf("v3 SUBACK for %s: 0x%02x, want 0x%02x", filter, got, want)
		}
	}
}

func TestAnonymousAccessFollowsTheConfigAndACL(t *testing.T) {
	cfg := testConfig(t.TempDir())
	cfg.AllowAnonymous = true
	tb := startBroker(t, cfg, testBundle(t, 1))
	guest, err := connectV5(t, tb.tcp, v5opts{keepAlive: 30})
	if err != nil {
		t.Fatal(err)
	}
	if code := guest.subscribe(t, "public/#", 0); code >= 0x80 {
		t.Errorf("guest subscribe public/#: 0x%02x", code)
	}
	if code := guest.subscribe(t, "devices/+/status", 0); code < 0x80 {
		t.Error("guest could subscribe to device status")
	}
}

// Revocation happens inside the reload: the sessions are told to go before
// apply returns. How fast that is end to end (MQTTUser deleted -> session
// closed) is measured by `make bench-acl` (revocation_ms_p99), not here; the
// generous deadline below only keeps a broken broker from hanging the test.
func TestRevocationDisconnectsSessions(t *testing.T) {
	tb := startBroker(t, testConfig(t.TempDir()), testBundle(t, 1))
	alice := mustV5(t, tb.tcp, "alice", alicePassword)
	bob := mustV5(t, tb.tcp, "bob", bobPassword)

	// alice's password changes, bob is deleted.
	next := testBundle(t, 2)
	next.Users = next.Users[:1]
	other, _ := hashesFor("a-new-passphrase-for-alice")
	next.Users[0].PasswordHash = other
	tb.apply(t, next)
	deadline := time.After(10 * time.Second)
	for _, c := range []struct {
		name string
		c    *v5
	}{{"alice (password changed)", alice}, {"bob (deleted)", bob}} {
		select {
		case d := <-c.c.disconnect:
			if d.ReasonCode != 0x87 {
				t.Errorf("%s: reason 0x%02x, want 0x87 not authorized", c.name, d.ReasonCode)
			}
		case <-deadline:
			t.Fatalf("%s still connected 10s after the reload that revoked it", c.name)
		}
	}
	if _, err := connectV5(t, tb.tcp, v5opts{user: "alice", password: alicePassword}); err == nil {
		t.Error("alice's old password still works")
	}
	if _, err := connectV5(t, tb.tcp, v5opts{user: "alice", password: "a-new-passphrase-for-alice"}); err != nil {
		t.Errorf("alice's new password refused: %v", err)
	}
}

func hashesFor(password string) (string, error) {
	return passwordhash.HashChosen(password)
}

func TestNarrowedACLAppliesToTheNextMessage(t *testing.T) {
	tb := startBroker(t, testConfig(t.TempDir()), testBundle(t, 1))
	alice := mustV5(t, tb.tcp, "alice", alicePassword)
	bob := mustV5(t, tb.tcp, "bob", bobPassword)
	bob.subscribe(t, "devices/alice/#", 1)
	bob.subscribe(t, "devices/+/status", 1)
	_ = alice.publish(t, "devices/alice/temp", "before", 1, false)
	bob.expect(t, "before")

	narrowed := testBundle(t, 2)
	narrowed.ACLs = narrowed.ACLs[:1] // bob no longer reads alice's telemetry
	tb.apply(t, narrowed)
	_ = alice.publish(t, "devices/alice/temp", "after", 1, false)
	_ = alice.publish(t, "devices/alice/status", "marker", 1, false)
	bob.expectNoneBefore(t, "after", "marker")
}

func TestInvalidOrStaleBundleKeepsTheLastGoodOne(t *testing.T) {
	tb := startBroker(t, testConfig(t.TempDir()), testBundle(t, 5))
	rev := tb.Revision()
	for name, data := range map[string]string{
		"not json":      "{",
		"unknown field": `{"version":"` + brokerconfig.BundleVersion + `","surprise":1}`,
		"bad revision":  strings.Replace(mustMarshal(t, testBundle(t, 6)), `"revision":"`, `"revision":"00`, 1),
	} {
		if _, err := tb.ApplyBundle([]byte(data), "test"); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	older := testBundle(t, 4)
	older.Users = nil
	if _, err := tb.ApplyBundle([]byte(mustMarshal(t, older)), "test"); err == nil {
		t.Error("a bundle of an older generation replaced a newer one")
	}
	if s := tb.Stats(); s.ReloadsStale != 1 || s.ReloadsFailed != 3 {
		t.Errorf("refusals counted: %d stale (want 1), %d failed (want 3)", s.ReloadsStale, s.ReloadsFailed)
	}
	if !strings.Contains(tb.logs.String(), "ignored an auth bundle older than the one in force") {
		t.Error("the stale bundle was ignored silently")
	}
	if tb.Revision() != rev {
		t.Errorf("revision moved from %s to %s", rev, tb.Revision())
	}
	mustV5(t, tb.tcp, "alice", alicePassword)
}

func mustMarshal(t *testing.T, b *brokerconfig.AuthBundle) string {
	t.Helper()
	data, err := brokerconfig.MarshalBundle(b)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// Reloads under live traffic, with the race detector on: every publish and
// delivery runs against whichever snapshot is current, never a torn one.
func TestReloadUnderLoad(t *testing.T) {
	tb := startBroker(t, testConfig(t.TempDir()), testBundle(t, 1))
	bob := mustV5(t, tb.tcp, "bob", bobPassword)
	bob.subscribe(t, "devices/alice/#", 0)
	var wg sync.WaitGroup
	var sent atomic.Int64
	stop := make(chan struct{})
	for i := range 4 {
		c, err := connectV5(t, tb.tcp, v5opts{user: "alice", password: alicePassword, clientID: fmt.Sprintf("alice-load-%d", i)})
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if c.publish(t, fmt.Sprintf("devices/alice/load/%d", i), "x", 0, false) == nil {
					sent.Add(1)
				}
			}
		}()
	}
	for gen := int64(2); gen < 60; gen++ {
		b := testBundle(t, gen)
		if gen%2 == 0 {
			b.ACLs[0].Rules = append(b.ACLs[0].Rules, brokerconfig.Rule{Topic: fmt.Sprintf("extra/%d", gen), Access: brokerconfig.AccessPublish, Effect: brokerconfig.EffectAllow})
		}
		tb.apply(t, b)
	}
	close(stop)
	wg.Wait()
	if sent.Load() == 0 {
		t.Fatal("no traffic during the reloads")
	}
	if got := tb.Stats().ReloadsOK; got < 58 {
		t.Errorf("%d reloads applied, want 58", got)
	}
}
