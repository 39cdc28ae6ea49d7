package policy

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"runtime"
	"sync"

	"github.com/mqtt-operator/mqtt-operator/internal/passwordhash"
)

// credentialCache remembers credentials that verified, so a reconnect storm of
// known clients costs an HMAC each instead of a bcrypt run each. Entries hold
// an HMAC of the password under a per-process random key, never the password,
// and are only valid for the exact hash they were verified against: a changed
// password or a removed user invalidates them by construction.
type credentialCache struct {
	key     []byte
	mu      sync.RWMutex
	entries map[string]credential
	slow    chan struct{} // bounds concurrent KDF runs to the CPU count
	// decoy is verified when the username is unknown, so probing for
	// usernames takes as long as a wrong password for a real one.
	decoy string
}

type credential struct {
	hash string
	mac  [sha256.Size]byte
}

func newCredentialCache(key []byte) *credentialCache {
	decoy, _ := passwordhash.HashChosen(hex.EncodeToString(key)) // a random, never-sent password
	return &credentialCache{key: key, entries: map[string]credential{}, slow: make(chan struct{}, runtime.GOMAXPROCS(0)), decoy: decoy}
}

func (c *credentialCache) mac(password []byte) [sha256.Size]byte {
	m := hmac.New(sha256.New, c.key)
	m.Write(password)
	var out [sha256.Size]byte
	copy(out[:], m.Sum(nil))
	return out
}

func (c *credentialCache) verify(username, hash string, known bool, password []byte, counters *Counters) bool {
	// A certificate user has no hash: no password logs it in, and its
	// refusal takes as long as an unknown user's.
	known = known && hash != ""
	mac := c.mac(password)
	if known {
		c.mu.RLock()
		e, ok := c.entries[username]
		c.mu.RUnlock()
		if ok && e.hash == hash && hmac.Equal(e.mac[:], mac[:]) {
			counters.AuthCacheHits.Add(1)
			return true
		}
	}
	target := hash
	if !known {
		target = c.decoy
	}
	if passwordhash.IsSlow(target) {
		c.slow <- struct{}{}
		defer func() { <-c.slow }()
	}
	ok, err := passwordhash.Verify(target, string(password))
	if !known || err != nil || !ok {
		return false
	}
	c.mu.Lock()
	c.entries[username] = credential{hash: hash, mac: mac}
	c.mu.Unlock()
	return true
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
