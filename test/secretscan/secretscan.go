// Package secretscan finds a secret in text such as a log, in the encodings
// a logger or serialiser may give it: plain, JSON-escaped, base64 (standard
// and URL alphabets, padded or not, at any byte offset within a longer
// value), hex and a JSON array of bytes. A JSON handler prints a []byte in
// base64, so a test that looks only for the plain secret misses it.
package secretscan

import (
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"slices"
	"strconv"
	"strings"
)

// Forms returns the encodings of secret to look for, by name. The base64
// forms are the characters that depend on the secret alone, for each of the
// three offsets the secret can have inside a longer encoded value, so they
// match whatever surrounds it.
func Forms(secret string) map[string]string {
	forms := map[string]string{"plain": secret}
	if quoted, err := json.Marshal(secret); err == nil {
		forms["JSON string"] = string(quoted[1 : len(quoted)-1])
	}
	forms["hex"] = hex.EncodeToString([]byte(secret))
	forms["HEX"] = strings.ToUpper(forms["hex"])
	numbers := make([]string, len(secret))
	for i := 0; i < len(secret); i++ {
		numbers[i] = strconv.Itoa(int(secret[i]))
	}
	forms["JSON byte array"] = strings.Join(numbers, ",")
	for name, enc := range map[string]*base64.Encoding{"base64": base64.StdEncoding, "base64url": base64.URLEncoding} {
		for offset := range 3 {
			if part := base64Core(enc, secret, offset); len(part) >= 4 {
				forms[name+" at offset "+strconv.Itoa(offset)] = part
			}
		}
	}
	return forms
}

// base64Core encodes secret after offset bytes of padding and keeps the
// characters whose 6 bits all come from the secret. Raw and padded
// encodings share those characters.
func base64Core(enc *base64.Encoding, secret string, offset int) string {
	full := enc.EncodeToString(append(make([]byte, offset), secret...))
	first := (8*offset + 5) / 6            // first character past the padding bytes
	last := 8 * (offset + len(secret)) / 6 // characters wholly inside the secret end here
	if last <= first {
		return ""
	}
	return full[first:last]
}

// Find reports the first encoding of secret found in text, or "" if none.
// The names are ordered so the result is stable.
func Find(text, secret string) string {
	forms := Forms(secret)
	names := make([]string, 0, len(forms))
	for name := range forms {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		if strings.Contains(text, forms[name]) {
			return name
		}
	}
	return ""
}

// T is what Absent needs of a test.
type T interface {
	Helper()
	Errorf(format string, args ...any)
}

// Absent fails t for each named secret that appears in text (where names
// the text) in any encoding. An empty secret fails too: a test that scans
// for nothing proves nothing.
func Absent(t T, where, text string, secrets map[string]string) {
	t.Helper()
	for what, secret := range secrets {
		if secret == "" {
			t.Errorf("%s is empty: nothing to look for in the %s", what, where)
		} else if form := Find(text, secret); form != "" {
			t.Errorf("%s appears in the %s (%s)", what, where, form)
		}
	}
}
