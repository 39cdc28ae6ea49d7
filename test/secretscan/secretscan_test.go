package secretscan

import (
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"testing"
)

func TestFindsEveryEncoding(t *testing.T) {
	const secret = "alice-chose-this-passphrase"
	wrapped := func(prefix string) []byte { return []byte(prefix + secret + "tail") }
	texts := map[string]string{
		"plain":         "password=" + secret,
		"hex":           hex.EncodeToString(wrapped("x")),
		"base64 raw":    base64.RawStdEncoding.EncodeToString(wrapped("")),
		"base64 off 1":  base64.StdEncoding.EncodeToString(wrapped("a")),
		"base64 off 2":  base64.StdEncoding.EncodeToString(wrapped("ab")),
		"base64url":     base64.URLEncoding.EncodeToString(wrapped("abc")),
		"base64url raw": base64.RawURLEncoding.EncodeToString(wrapped("abcd")),
	}
	data, _ := json.Marshal(struct{ B []byte }{wrapped("z")})
	texts["JSON []byte"] = string(data)
	array, _ := json.Marshal([]int{1, 'a', 'l', 'i', 'c', 'e', '-', 'c', 'h', 'o', 's', 'e', '-', 't', 'h', 'i', 's', '-', 'p', 'a', 's', 's', 'p', 'h', 'r', 'a', 's', 'e', 2})
	texts["JSON byte array"] = string(array)
	for name, text := range texts {
		if Find(text, secret) == "" {
			t.Errorf("%s: not found in %q", name, text)
		}
	}
	if form := Find(base64.StdEncoding.EncodeToString([]byte("alice-chose-another-one")), secret); form != "" {
		t.Errorf("found %s in an unrelated value", form)
	}
}
