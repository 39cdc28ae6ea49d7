package passwordhash

import (
	"strings"
	"testing"
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
