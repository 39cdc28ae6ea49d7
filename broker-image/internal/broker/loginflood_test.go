package broker_test

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/mqtt-operator/mqtt-operator/broker-image/internal/policy"
)

// How long a refused login takes must not tell whether its username
// exists: an unknown name, a wrong chosen password (bcrypt) and a wrong
// generated password (one SHA-256) all take at least FailedLoginDelay.
func TestRefusalTimingTellsNoUsernames(t *testing.T) {
	tb := startBroker(t, testConfig(t.TempDir()), testBundle(t, 1))
	for _, tc := range []struct{ name, user, password string }{
		{"unknown username", "mallory", "whatever"},
		{"wrong chosen password", "alice", "not-" + alicePassword},
		{"wrong generated password", "bob", "not-" + bobPassword},
	} {
		start := time.Now()
		_, err := connectV5(t, tb.tcp, v5opts{user: tc.user, password: tc.password})
		took := time.Since(start)
		var refused *refusedError
		if !errors.As(err, &refused) {
			t.Fatalf("%s: %v, want a CONNACK refusal", tc.name, err)
		}
		if took < policy.FailedLoginDelay {
			t.Errorf("%s: refused after %v, before the %v every refusal takes", tc.name, took, policy.FailedLoginDelay)
		}
	}
}

// A flood of made-up usernames costs no bcrypt run: the only KDF run is
// the real user's login in the middle of it.
func TestUnknownUsernameFloodRunsNoKDF(t *testing.T) {
	tb := startBroker(t, testConfig(t.TempDir()), testBundle(t, 1))
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; n < 4; n++ {
				select {
				case <-stop:
					return
				default:
				}
				_, _ = connectV5(t, tb.tcp, v5opts{user: fmt.Sprintf("nobody-%d-%d", i, n), password: "guess"})
			}
		}()
	}
	mustV5(t, tb.tcp, "alice", alicePassword)
	close(stop)
	wg.Wait()
	if runs := tb.Stats().AuthKDFRuns; runs != 1 {
		t.Errorf("%d bcrypt runs, want 1 (alice's): unknown usernames cost CPU", runs)
	}
}
