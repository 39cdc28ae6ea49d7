package brokerconfig

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/mqtt-operator/mqtt-operator/internal/passwordhash"
)

// BundleVersion of the auth bundle format. The broker refuses any other.
const BundleVersion = "broker.mqtt-operator.io/auth-v1"

// BundleFileName is the key of the auth bundle in its Secret and the name of
// the file the broker reads.
const BundleFileName = "auth.json"

// Access kinds and effects of a rule, as in the TopicACL API.
const (
	AccessPublish          = "Publish"
	AccessSubscribe        = "Subscribe"
	AccessPublishSubscribe = "PublishSubscribe"
	EffectAllow            = "Allow"
	EffectDeny             = "Deny"
)

// AuthBundle is everything the broker needs to authenticate clients and
// authorise topics: users with password hashes (never passwords) and ACLs.
//
// Evaluation, for one client, topic and access: each ACL whose subjects
// include the client gives a verdict from its first matching rule (or none).
// Any Deny verdict denies; otherwise any Allow verdict allows; otherwise the
// access is denied. So the result never depends on the order of ACL objects,
// and an explicit deny in any ACL always holds.
type AuthBundle struct {
	Version string `json:"version"`
	// Revision identifies the content; Seal computes it.
	Revision string `json:"revision"`
	// Generation increases with every bundle the operator writes. A broker
	// never replaces a bundle with one of a lower generation, so a late file
	// sync cannot undo a newer push. It is not part of the revision.
	Generation int64  `json:"generation"`
	Users      []User `json:"users"`
	ACLs       []ACL  `json:"acls"`
}

// User is one identity clients log in as: with a password (PasswordHash),
// or with a TLS client certificate (CertificateSHA256), never both.
type User struct {
	Username     string `json:"username"`
	PasswordHash string `json:"passwordHash,omitempty"`
	// CertificateSHA256 are the SHA-256 fingerprints (lowercase hex of the
	// DER bytes) of the client certificates this user may present: the one
	// in its connection Secret and, while it is still valid, the one it
	// replaced. A certificate must also chain to the broker's client CA and
	// carry the username as its subject common name.
	CertificateSHA256 []string `json:"certificateSHA256,omitempty"`
	// Limits are the user's quotas; nil: none of its own.
	Limits *UserLimits `json:"limits,omitempty"`
}

// UserLimits are one user's quotas (MQTTUser spec.limits); 0 means none.
// MaxConnections counts over all pods of a cluster; the others apply to
// each of the user's connections.
type UserLimits struct {
	MaxConnections        int32 `json:"maxConnections,omitempty"`
	MaxSubscriptions      int32 `json:"maxSubscriptions,omitempty"`
	PublishRate           int32 `json:"publishRate,omitempty"`
	PublishBytesPerSecond int64 `json:"publishBytesPerSecond,omitempty"`
	MaxInflight           int32 `json:"maxInflight,omitempty"`
}

// UsesCertificate reports whether u logs in with a client certificate.
func (u *User) UsesCertificate() bool { return len(u.CertificateSHA256) > 0 }

// ACL is one TopicACL.
type ACL struct {
	// Name identifies the source object (namespace/name) in logs and metrics.
	Name     string   `json:"name"`
	Subjects Subjects `json:"subjects"`
	Rules    []Rule   `json:"rules"`
}

// Subjects are the clients an ACL applies to.
type Subjects struct {
	Users            []string `json:"users,omitempty"`
	AllAuthenticated bool     `json:"allAuthenticated,omitempty"`
	Anonymous        bool     `json:"anonymous,omitempty"`
}

// Rule allows or denies one kind of access to topics matching a filter.
type Rule struct {
	Topic  string `json:"topic"`
	Access string `json:"access"`
	Effect string `json:"effect"`
}

// Seal sorts users by name and sets Revision to a digest of the content, so
// equal content always yields an equal revision.
func (b *AuthBundle) Seal() {
	b.Version = BundleVersion
	slices.SortFunc(b.Users, func(x, y User) int { return strings.Compare(x.Username, y.Username) })
	b.Revision = ""
	gen := b.Generation
	b.Generation = 0
	data, _ := json.Marshal(b) // plain strings and bools always marshal
	b.Generation = gen
	sum := sha256.Sum256(data)
	b.Revision = hex.EncodeToString(sum[:8])
}

// validate checks the bounds the MQTTUser schema sets, for a bundle that did
// not come through it.
func (l *UserLimits) validate() error {
	if l == nil {
		return nil
	}
	var errs []error
	check := func(name string, v, lo, hi int64) {
		if v != 0 && (v < lo || v > hi) {
			errs = append(errs, fmt.Errorf("%s %d is outside %d..%d", name, v, lo, hi))
		}
	}
	check("maxConnections", int64(l.MaxConnections), 1, 10_000_000)
	check("maxSubscriptions", int64(l.MaxSubscriptions), 1, 100_000)
	check("publishRate", int64(l.PublishRate), 1, 1_000_000)
	check("publishBytesPerSecond", l.PublishBytesPerSecond, 1024, 10<<30)
	check("maxInflight", int64(l.MaxInflight), 1, 65535)
	return errors.Join(errs...)
}

// Validate reports every problem in b, joined, or nil. It does not check the
// revision; VerifyRevision does.
func (b *AuthBundle) Validate() error {
	var errs []error
	if b.Version != BundleVersion {
		errs = append(errs, fmt.Errorf("version %q is not supported, want %q", b.Version, BundleVersion))
	}
	seen := map[string]bool{}
	for i, u := range b.Users {
		if err := ValidateUsername(u.Username); err != nil {
			errs = append(errs, fmt.Errorf("users[%d]: %w", i, err))
		}
		if seen[u.Username] {
			errs = append(errs, fmt.Errorf("users[%d]: username %q appears twice", i, u.Username))
		}
		seen[u.Username] = true
		switch {
		case u.UsesCertificate() && u.PasswordHash != "":
			errs = append(errs, fmt.Errorf("users[%d] (%s): has both a password hash and certificate fingerprints", i, u.Username))
		case u.UsesCertificate():
			for _, fp := range u.CertificateSHA256 {
				if !ValidFingerprint(fp) {
					errs = append(errs, fmt.Errorf("users[%d] (%s): certificate fingerprint %q is not 64 lowercase hex digits", i, u.Username, fp))
				}
			}
		default:
			if err := passwordhash.Validate(u.PasswordHash); err != nil {
				errs = append(errs, fmt.Errorf("users[%d] (%s): %w", i, u.Username, err))
			}
		}
		if err := u.Limits.validate(); err != nil {
			errs = append(errs, fmt.Errorf("users[%d] (%s): limits: %w", i, u.Username, err))
		}
	}
	for i, a := range b.ACLs {
		where := fmt.Sprintf("acls[%d] (%s)", i, a.Name)
		if len(a.Subjects.Users) == 0 && !a.Subjects.AllAuthenticated && !a.Subjects.Anonymous {
			errs = append(errs, fmt.Errorf("%s: no subjects", where))
		}
		for _, u := range a.Subjects.Users {
			if err := ValidateUsername(u); err != nil {
				errs = append(errs, fmt.Errorf("%s: subject: %w", where, err))
			}
		}
		if len(a.Rules) == 0 {
			errs = append(errs, fmt.Errorf("%s: no rules", where))
		}
		for j, r := range a.Rules {
			if err := ValidateTopicFilter(r.Topic); err != nil {
				errs = append(errs, fmt.Errorf("%s rules[%d]: %w", where, j, err))
			}
			if r.Access != AccessPublish && r.Access != AccessSubscribe && r.Access != AccessPublishSubscribe {
				errs = append(errs, fmt.Errorf("%s rules[%d]: unknown access %q", where, j, r.Access))
			}
			if r.Effect != EffectAllow && r.Effect != EffectDeny {
				errs = append(errs, fmt.Errorf("%s rules[%d]: unknown effect %q", where, j, r.Effect))
			}
		}
	}
	return errors.Join(errs...)
}

// VerifyRevision reports whether Revision matches the content.
func (b *AuthBundle) VerifyRevision() bool { return b.ContentRevision() == b.Revision }

// ContentRevision is the revision Seal would give b, without changing b.
func (b *AuthBundle) ContentRevision() string {
	c := *b
	c.Users = slices.Clone(b.Users)
	c.Seal()
	return c.Revision
}

// MarshalBundle seals, validates and renders b as the JSON the broker reads.
func MarshalBundle(b *AuthBundle) ([]byte, error) {
	b.Seal()
	if err := b.Validate(); err != nil {
		return nil, fmt.Errorf("invalid auth bundle: %w", err)
	}
	return json.Marshal(b)
}

// CompressAbove is the size from which MarshalBundleCompressed gzips a
// bundle: small bundles stay readable in their Secret, large ones (thousands
// of users) must fit the 1 MiB a Kubernetes Secret can hold.
const CompressAbove = 256 << 10

// MarshalBundleCompressed is MarshalBundle, gzipped when the JSON is larger
// than CompressAbove. ParseBundle reads both forms.
func MarshalBundleCompressed(b *AuthBundle) ([]byte, error) {
	data, err := MarshalBundle(b)
	if err != nil || len(data) <= CompressAbove {
		return data, err
	}
	var buf bytes.Buffer
	// The default level: best compression costs several times the CPU on
	// every render of a 10,000-user bundle for a few percent of size.
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(data); err != nil {
		return nil, fmt.Errorf("compressing auth bundle: %w", err)
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("compressing auth bundle: %w", err)
	}
	return buf.Bytes(), nil
}

// maxBundleJSON bounds what a compressed bundle may expand to, so a hostile
// or broken file cannot exhaust the broker's memory.
const maxBundleJSON = 64 << 20

// ParseBundle reads and validates an auth bundle, plain JSON or gzipped
// (recognised by its magic bytes); unknown fields and a revision that does
// not match the content are errors.
func ParseBundle(data []byte) (*AuthBundle, error) {
	if len(data) >= 2 && data[0] == 0x1f && data[1] == 0x8b {
		zr, err := gzip.NewReader(bytes.NewReader(data))
		if err != nil {
			return nil, fmt.Errorf("decompressing auth bundle: %w", err)
		}
		plain, err := io.ReadAll(io.LimitReader(zr, maxBundleJSON+1))
		if err != nil {
			return nil, fmt.Errorf("decompressing auth bundle: %w", err)
		}
		if len(plain) > maxBundleJSON {
			return nil, fmt.Errorf("auth bundle expands beyond %d bytes", maxBundleJSON)
		}
		data = plain
	}
	var b AuthBundle
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&b); err != nil {
		return nil, fmt.Errorf("parsing auth bundle: %w", locateJSONError(err))
	}
	if dec.More() {
		return nil, fmt.Errorf("parsing auth bundle: more than one JSON value (at byte %d)", dec.InputOffset())
	}
	if err := b.Validate(); err != nil {
		return nil, fmt.Errorf("invalid auth bundle: %w", err)
	}
	if want := b.ContentRevision(); want != b.Revision {
		return nil, fmt.Errorf("auth bundle revision mismatch: file says %q, content hashes to %q "+
			"(the revision is computed, not chosen: rebuild the file with `broker bundle`)", b.Revision, want)
	}
	return &b, nil
}

// locateJSONError says where in the file a decoding error is; encoding/json
// keeps the byte offset out of its messages.
func locateJSONError(err error) error {
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.Is(err, io.ErrUnexpectedEOF):
		return errors.New("the JSON ends early (a truncated file?)")
	case errors.As(err, &syntax):
		return fmt.Errorf("at byte %d: %w", syntax.Offset, err)
	case errors.As(err, &typ):
		return fmt.Errorf("at byte %d: field %s must be a JSON %s, not %s", typ.Offset, typ.Field, jsonKind(typ.Type.Kind().String()), typ.Value)
	}
	return err
}

func jsonKind(goKind string) string {
	switch goKind {
	case "string":
		return "string"
	case "bool":
		return "boolean"
	case "slice", "array":
		return "array"
	case "struct", "map":
		return "object"
	}
	return "number"
}

// ValidateUsername applies the same rule as the MQTTUser CRD: no '/', '+',
// '#', '%', whitespace or control characters, 1-128 bytes.
func ValidateUsername(u string) error {
	if u == "" || len(u) > 128 {
		return fmt.Errorf("username %q must be 1-128 bytes", u)
	}
	for _, r := range u {
		if strings.ContainsRune("/+#%", r) || r <= ' ' || r == 0x7f {
			return fmt.Errorf("username %q contains %q", u, r)
		}
	}
	return nil
}

// ValidateTopicFilter applies the same rules as the TopicACL CRD.
func ValidateTopicFilter(f string) error {
	if f == "" {
		return errors.New("topic must not be empty")
	}
	if len(f) > 1024 {
		return errors.New("topic is longer than 1024 bytes")
	}
	if strings.ContainsRune(f, 0) {
		return errors.New("topic contains a NUL character")
	}
	levels := strings.Split(f, "/")
	for i, l := range levels {
		switch {
		case strings.Contains(l, "#") && (l != "#" || i != len(levels)-1):
			return fmt.Errorf("topic %q: '#' must be the last level and stand alone", f)
		case strings.Contains(l, "+") && l != "+":
			return fmt.Errorf("topic %q: '+' must be a whole level", f)
		case strings.Contains(l, "%") && l != "%u" && l != "%c":
			return fmt.Errorf("topic %q: '%%' may only appear as a whole level %%u or %%c", f)
		}
	}
	return nil
}

// CertificateFingerprint is how the bundle names a certificate: the
// lowercase hex SHA-256 of its DER bytes.
func CertificateFingerprint(der []byte) string {
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:])
}

// ValidFingerprint reports whether fp is a fingerprint as CertificateFingerprint writes it.
func ValidFingerprint(fp string) bool {
	if len(fp) != 2*sha256.Size {
		return false
	}
	for _, c := range fp {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}
