package passwordhash

import (
	"strings"
	"testing"
	"time"
)

func TestChosenPasswords(t *testing.T) {
	h, err := HashChosen("correct horse battery staple")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(h, "horse") || !IsSlow(h) {
		t.Fatalf("hash %q leaks the password or is not bcrypt", h)
	}
	for pw, want := range map[string]bool{"correct horse battery staple": true, "correct horse battery stapl": false, "": false} {
		if ok, err := Verify(h, pw); ok != want || err != nil {
			t.Errorf("Verify(%q) = %v, %v; want %v", pw, ok, err, want)
		}
	}
	if _, err := HashChosen(strings.Repeat("x", 73)); err == nil {
		t.Error("a 73-byte password was accepted; bcrypt would silently ignore its tail")
	}
	if _, err := HashChosen(""); err == nil {
		t.Error("an empty password was accepted")
	}
}

func TestGeneratedPasswords(t *testing.T) {
	pw := strings.Repeat("k", 43)
	salt := []byte("0123456789abcdef")
	h, err := HashGenerated(pw, salt)
	if err != nil {
		t.Fatal(err)
	}
	if IsSlow(h) || Validate(h) != nil {
		t.Fatalf("hash %q: slow or invalid", h)
	}
	if ok, _ := Verify(h, pw); !ok {
		t.Error("the right password failed")
	}
	if ok, _ := Verify(h, pw+"x"); ok {
		t.Error("a wrong password passed")
	}
	other, _ := HashGenerated(pw, []byte("fedcba9876543210"))
	if other == h {
		t.Error("two salts gave one hash")
	}
	if _, err := HashGenerated("short", salt); err == nil {
		t.Error("a short generated password was accepted")
	}
}

func TestMalformedHashes(t *testing.T) {
	for _, h := range []string{"", "plain", "$sha256$", "$sha256$c2FsdA$AAAA", "$2a$10$short", "$md5$x"} {
		if err := Validate(h); err == nil {
			t.Errorf("Validate(%q) accepted a malformed hash", h)
		}
		if ok, _ := Verify(h, "anything"); ok {
			t.Errorf("Verify(%q) accepted a password against a malformed hash", h)
		}
	}
}

// A hash is data a tenant can edit. One asking for bcrypt cost 31 (about 60
// hours a check) must be refused before any work, wherever it is read.
func TestExpensiveHashesAreRefusedBeforeAnyWork(t *testing.T) {
	h, err := HashChosen("correct horse battery staple")
	if err != nil {
		t.Fatal(err)
	}
	costly := strings.Replace(h, "$10$", "$31$", 1)
	huge := sha256Prefix + b64.EncodeToString(make([]byte, 1<<20)) + "$" + b64.EncodeToString(make([]byte, 32))
	for name, hash := range map[string]string{"bcrypt cost 31": costly, "bcrypt cost 13": strings.Replace(h, "$10$", "$13$", 1), "1 MiB salt": huge} {
		if err := Validate(hash); err == nil {
			t.Errorf("%s: Validate accepted it", name)
		}
		done := make(chan error, 1)
		go func() { _, err := Verify(hash, "correct horse battery staple"); done <- err }()
		select {
		case err := <-done:
			if err == nil {
				t.Errorf("%s: Verify gave no error", name)
			}
		case <-time.After(10 * time.Second): // cost 13 alone takes ~0.5 s
			t.Fatalf("%s: Verify is still running after 10 s: it did the work", name)
		}
	}
	if err := Validate(strings.Replace(h, "$10$", "$12$", 1)); err != nil {
		t.Errorf("cost %d refused: %v", MaxBcryptCost, err)
	}
}
