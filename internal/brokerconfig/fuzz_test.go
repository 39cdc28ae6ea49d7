package brokerconfig

import (
	"bytes"
	"encoding/json"
	"net"
	"net/http"
	"strconv"
	"testing"

	"sigs.k8s.io/yaml"
)

// The broker reads its configuration and auth bundle from files a tenant's
// objects are rendered into, and bundles from the admin API: whatever the
// bytes, parsing must return an error or a value, never panic, and a value
// that validates must render and parse back to the same thing (what the
// operator renders, the broker accepts).
//
//	go test ./internal/brokerconfig -run '^$' -fuzz FuzzConfigParse -fuzztime 10m
//	go test ./internal/brokerconfig -run '^$' -fuzz FuzzBundleParse -fuzztime 10m

func FuzzConfigParse(f *testing.F) {
	c := valid()
	c.Listeners = append(c.Listeners, Listener{Name: "ws", Protocol: ProtocolWebSocket, Address: ":8083", Path: "/mqtt"})
	c.TLS = &TLS{CertFile: "/tls/tls.crt", KeyFile: "/tls/tls.key"}
	for _, seed := range []*Config{valid(), c} {
		data, err := Marshal(seed)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte("version: x\nlisteners: [{name: a}]\nlimits: {maxQoS: 9}\n"))
	for _, path := range []string{"", "/{x}", "GET /mqtt", "/a//b", "/a/"} {
		c := valid()
		c.Listeners = append(c.Listeners, Listener{Name: "ws", Protocol: ProtocolWebSocket, Address: ":8083", Path: path})
		data, _ := yaml.Marshal(c)
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if c, err := Parse(data); err == nil {
			configRoundTrip(t, c)
			listenersConstructible(t, c)
		}
		// Lenient decoding reaches far more valid configurations than
		// strict parsing of mutated bytes does.
		var lenient Config
		if yaml.Unmarshal(data, &lenient) == nil && lenient.Validate() == nil {
			configRoundTrip(t, &lenient)
			listenersConstructible(t, &lenient)
		}
	})
}

// listenersConstructible checks, without binding anything, what the broker
// needs of a valid configuration to set up its listeners: every WebSocket
// path registers in a ServeMux (which panics otherwise), and no two sockets
// want the same port. The broker package's FuzzConfigStart starts them.
func listenersConstructible(t *testing.T, c *Config) {
	ports := map[int]bool{}
	addrs := []string{c.HealthAddress, c.AdminAddress}
	for _, l := range c.Listeners {
		addrs = append(addrs, l.Address)
		if l.Protocol == ProtocolWebSocket || l.Protocol == ProtocolSecureWebSocket {
			func() {
				defer func() {
					if r := recover(); r != nil {
						t.Fatalf("valid path %q panics net/http: %v", l.Path, r)
					}
				}()
				http.NewServeMux().Handle(l.Path, http.NotFoundHandler())
			}()
		}
	}
	for _, a := range addrs {
		_, p, err := net.SplitHostPort(a)
		n, err2 := strconv.Atoi(p)
		if err != nil || err2 != nil {
			t.Fatalf("valid address %q does not split: %v %v", a, err, err2)
		}
		if n != 0 && ports[n] {
			t.Fatalf("port %d is used twice in a valid configuration", n)
		}
		ports[n] = true
	}
}

func configRoundTrip(t *testing.T, c *Config) {
	out, err := Marshal(c)
	if err != nil {
		t.Fatalf("a valid configuration does not render: %v", err)
	}
	again, err := Parse(out)
	if err != nil {
		t.Fatalf("the rendered configuration does not parse: %v\n%s", err, out)
	}
	out2, err := Marshal(again)
	if err != nil || !bytes.Equal(out, out2) || again.RestartHash() != c.RestartHash() {
		t.Fatalf("the configuration changed on a round trip (%v):\n%s\n%s", err, out, out2)
	}
}

func FuzzBundleParse(f *testing.F) {
	const hash = "$sha256$MDEyMzQ1Njc4OWFiY2RlZg$ZGlnZXN0ZGlnZXN0ZGlnZXN0ZGlnZXN0ZGlnZXN0ZGk"
	b := &AuthBundle{
		Generation: 3,
		Users: []User{
			{Username: "bob", PasswordHash: hash},
			{Username: "sensor", CertificateSHA256: []string{CertificateFingerprint([]byte("der"))}},
		},
		ACLs: []ACL{{Name: "ns/acl", Subjects: Subjects{Users: []string{"bob"}, AllAuthenticated: true}, Rules: []Rule{
			{Topic: "devices/%u/#", Access: AccessPublish, Effect: EffectAllow},
			{Topic: "+/status", Access: AccessPublishSubscribe, Effect: EffectDeny},
		}}},
	}
	data, err := MarshalBundle(b)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(data)
	f.Add([]byte(`{"version":"broker.mqtt-operator.io/auth-v1","users":[{"username":"a","passwordHash":"$2a$04$x"}],"acls":[]}`))
	f.Add([]byte{0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff})
	f.Fuzz(func(t *testing.T, data []byte) {
		if b, err := ParseBundle(data); err == nil {
			bundleRoundTrip(t, b)
		}
		// A mutated revision never matches: seal what decodes to reach
		// the bundles that validate.
		var lenient AuthBundle
		if json.Unmarshal(data, &lenient) == nil {
			lenient.Seal()
			if lenient.Validate() == nil {
				bundleRoundTrip(t, &lenient)
			}
		}
	})
}

func bundleRoundTrip(t *testing.T, b *AuthBundle) {
	out, err := MarshalBundle(b)
	if err != nil {
		t.Fatalf("a valid bundle does not render: %v", err)
	}
	again, err := ParseBundle(out)
	if err != nil {
		t.Fatalf("the rendered bundle does not parse: %v\n%s", err, out)
	}
	out2, err := MarshalBundle(again)
	if err != nil || !bytes.Equal(out, out2) || again.Revision != b.Revision {
		t.Fatalf("the bundle changed on a round trip (%v):\n%s\n%s", err, out, out2)
	}
}
