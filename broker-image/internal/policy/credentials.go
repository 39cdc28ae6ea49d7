package policy

import (
	"crypto/hmac"
	"crypto/sha256"
	"runtime"
	"sync"
	"time"

	"github.com/mqtt-operator/mqtt-operator/internal/passwordhash"
)

// FailedLoginDelay is the least time a refused login takes, whatever the
// reason: an unknown username, a wrong password for a bcrypt user (~60 ms
// of work), or for a user with an operator-generated password (~1 µs). Each
// would otherwise be told apart by its answer time, and usernames
// enumerated. The wait costs no CPU, so unlike a decoy bcrypt run it gives
// a flood of made-up usernames nothing to burn, and it slows online
// password guessing down. It is far above a bcrypt run (cost ≤ 12) so
// that load does not push a real check past it. Tests shorten it.
var FailedLoginDelay = 500 * time.Millisecond

// suspectFor is how long a username whose password check failed keeps its
// KDF runs in the suspect lane, and maxSuspects how many names are kept.
const (
	suspectFor  = time.Minute
	maxSuspects = 10000
)

// credentialCache remembers credentials that verified, so a reconnect storm of
// known clients costs an HMAC each instead of a bcrypt run each. Entries hold
// an HMAC of the password under a per-process random key, never the password,
// and are only valid for the exact hash they were verified against: a changed
// password or a removed user invalidates them by construction.
//
// KDF runs go through two lanes: the normal one, as wide as the CPUs, and
// one run wide for usernames whose check failed in the last minute. Someone
// guessing one user's password then holds at most one CPU, and the other
// users' logins keep theirs. Unknown usernames run no KDF at all (their
// refusal waits FailedLoginDelay like every other).
type credentialCache struct {
	key      []byte
	mu       sync.RWMutex
	entries  map[string]credential
	slow     chan struct{} // bounds concurrent KDF runs to the CPU count
	suspect  chan struct{} // one KDF run at a time for suspect usernames
	failedMu sync.Mutex
	failed   map[string]time.Time // username -> last failed check
}

type credential struct {
	hash string
	mac  [sha256.Size]byte
}

func newCredentialCache(key []byte) *credentialCache {
	return &credentialCache{key: key, entries: map[string]credential{}, slow: make(chan struct{}, runtime.GOMAXPROCS(0)),
		suspect: make(chan struct{}, 1), failed: map[string]time.Time{}}
}

func (c *credentialCache) mac(password []byte) [sha256.Size]byte {
	m := hmac.New(sha256.New, c.key)
	m.Write(password)
	var out [sha256.Size]byte
	copy(out[:], m.Sum(nil))
	return out
}

// verify checks password against the user's hash. A certificate user has
// no hash and an unknown user none either: no password logs them in, and no
// work is done for them.
func (c *credentialCache) verify(username, hash string, known bool, password []byte, counters *Counters) bool {
	if !known || hash == "" {
		return false
	}
	mac := c.mac(password)
	c.mu.RLock()
	e, ok := c.entries[username]
	c.mu.RUnlock()
	if ok && e.hash == hash && hmac.Equal(e.mac[:], mac[:]) {
		counters.AuthCacheHits.Add(1)
		return true
	}
	if passwordhash.IsSlow(hash) {
		lane := c.slow
		if c.isSuspect(username) {
			lane = c.suspect
		}
		lane <- struct{}{}
		defer func() { <-lane }()
		counters.KDFRuns.Add(1)
	}
	ok, err := passwordhash.Verify(hash, string(password))
	if err != nil || !ok {
		c.markFailed(username)
		return false
	}
	c.mu.Lock()
	c.entries[username] = credential{hash: hash, mac: mac}
	c.mu.Unlock()
	return true
}

func (c *credentialCache) isSuspect(username string) bool {
	c.failedMu.Lock()
	defer c.failedMu.Unlock()
	at, ok := c.failed[username]
	if ok && time.Since(at) > suspectFor {
		delete(c.failed, username)
		return false
	}
	return ok
}

// markFailed puts username in the suspect lane. The map is bounded: when
// full, entries past suspectFor go, and if none have, all do (a guesser
// cycling through more than maxSuspects real names is back in the normal
// lane, still bounded by the CPU count).
func (c *credentialCache) markFailed(username string) {
	c.failedMu.Lock()
	defer c.failedMu.Unlock()
	if len(c.failed) >= maxSuspects {
		for u, at := range c.failed {
			if time.Since(at) > suspectFor {
				delete(c.failed, u)
			}
		}
		if len(c.failed) >= maxSuspects {
			clear(c.failed)
		}
	}
	c.failed[username] = time.Now()
}

// forget drops entries of users that are gone, whose hash changed, or that
// now log in with a certificate.
func (c *credentialCache) forget(keep func(username, hash string) bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for u, e := range c.entries {
		if !keep(u, e.hash) {
			delete(c.entries, u)
		}
	}
}
