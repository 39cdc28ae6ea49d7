package brokerconfig

import (
	"fmt"
	"strings"
	"testing"
)

func valid() *Config {
	return &Config{
		Version:       Version,
		Listeners:     []Listener{{Name: "mqtt", Protocol: ProtocolTCP, Address: ":1883"}},
		HealthAddress: ":9090",
		AdminAddress:  ":9091",
		Limits: Limits{
			MaxConnections: 100, MaxPacketSize: 65536, MaxInflight: 10, MaxQoS: 2, RetainAvailable: true,
			SessionExpirySeconds: 60, MaxKeepaliveSeconds: 60, MaxSubscriptionsPerClient: 10,
		},
		Storage: Storage{Path: "/data"},
	}
}

func TestValidate(t *testing.T) {
	if err := valid().Validate(); err != nil {
		t.Fatalf("valid config refused: %v", err)
	}
	cases := map[string]struct {
		mutate func(*Config)
		want   string
	}{
		"version":          {func(c *Config) { c.Version = "v0" }, `version "v0" is not supported`},
		"no listeners":     {func(c *Config) { c.Listeners = nil }, "listeners: at least one is required"},
		"unknown protocol": {func(c *Config) { c.Listeners[0].Protocol = "quic" }, `unknown protocol "quic"`},
		"bad address":      {func(c *Config) { c.Listeners[0].Address = "1883" }, `address "1883"`},
		"port clash":       {func(c *Config) { c.Listeners[0].Address = ":9091" }, "port 9091 is already used by adminAddress"},
		"duplicate name": {func(c *Config) {
			c.Listeners = append(c.Listeners, Listener{Name: "mqtt", Protocol: ProtocolWebSocket, Address: ":8083", Path: "/mqtt"})
		}, `listeners[1]: name "mqtt" is already used by listeners[0]`},
		"qos":                {func(c *Config) { c.Limits.MaxQoS = 3 }, "limits.maxQoS: 3 is outside [0, 2]"},
		"packet size":        {func(c *Config) { c.Limits.MaxPacketSize = 10 }, "limits.maxPacketSize: 10 is outside"},
		"client byte budget": {func(c *Config) { c.Limits.MaxQueuedBytesPerClient = 1000 }, "limits.maxQueuedBytesPerClient: 1000 is outside"},
		"total byte budget":  {func(c *Config) { c.Limits.MaxQueuedBytesTotal = -1 }, "limits.maxQueuedBytesTotal: -1 is outside"},
		"storage path":       {func(c *Config) { c.Storage.Path = "" }, "storage.path is required"},
		"zero subscriptions": {func(c *Config) { c.Limits.MaxSubscriptionsPerClient = 0 }, "limits.maxSubscriptionsPerClient"},
	}
	for name, tc := range cases {
		c := valid()
		tc.mutate(c)
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want %q", name, err, tc.want)
		}
		if _, err := Marshal(c); err == nil {
			t.Errorf("%s: Marshal rendered an invalid config", name)
		}
	}
}

func TestParseRefusesUnknownFields(t *testing.T) {
	data, err := Marshal(valid())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Parse(data); err != nil {
		t.Fatalf("round trip refused: %v", err)
	}
	typo := strings.Replace(string(data), "maxConnections", "maxConnection", 1)
	if _, err := Parse([]byte(typo)); err == nil || !strings.Contains(err.Error(), "maxConnection") {
		t.Errorf("a misspelt field must be an error naming it, got %v", err)
	}
}

func TestRestartHashIgnoresWhatReloadsInPlace(t *testing.T) {
	a, b := valid(), valid()
	b.Limits.MaxConnections = 5
	b.Limits.MaxPacketSize = 2048
	b.Limits.MaxKeepaliveSeconds = 30
	b.Limits.PublishRatePerClient = 7
	b.Limits.MaxSubscriptionsPerClient = 3
	b.Limits.MaxQueuedBytesPerClient = 1 << 20
	b.Limits.MaxQueuedBytesTotal = 64 << 20
	b.AllowAnonymous = true
	if a.RestartHash() != b.RestartHash() {
		t.Error("a limit the broker reloads in place, or anonymous access, changed the restart hash")
	}
	for name, change := range map[string]func(*Config){
		"listener address": func(c *Config) { c.Listeners[0].Address = ":11883" },
		"maxQoS":           func(c *Config) { c.Limits.MaxQoS = 1 },
		"retainAvailable":  func(c *Config) { c.Limits.RetainAvailable = !c.Limits.RetainAvailable },
		"maxInflight":      func(c *Config) { c.Limits.MaxInflight = 3 },
		"maxQueued":        func(c *Config) { c.Limits.MaxQueuedMessages = 5 },
		"sessionExpiry":    func(c *Config) { c.Limits.SessionExpirySeconds = 7200 },
		"durable storage":  func(c *Config) { c.Storage.Persistent, c.Storage.Durable = true, true },
	} {
		c := valid()
		change(c)
		if c.RestartHash() == a.RestartHash() {
			t.Errorf("a %s change left the restart hash alone; the broker cannot apply it in place, so pods must roll", name)
		}
	}
}

// The broker-wide byte budget is set, or a quarter of the container's
// memory limit, or a default when the limit is not known.
func TestQueuedBytesTotal(t *testing.T) {
	l := Limits{}
	if got := l.QueuedBytesTotal(0); got != DefaultMaxQueuedBytesTotal {
		t.Errorf("no limit known: %d, want the default %d", got, DefaultMaxQueuedBytesTotal)
	}
	if got := l.QueuedBytesTotal(1 << 30); got != (1<<30)/4 {
		t.Errorf("1 GiB limit: %d, want a quarter of it", got)
	}
	l.MaxQueuedBytesTotal = 100 << 20
	if got := l.QueuedBytesTotal(1 << 30); got != 100<<20 {
		t.Errorf("set explicitly: %d, want 100 MiB", got)
	}
	if got := l.QueuedBytesPerClient(); got != DefaultMaxQueuedBytesPerClient {
		t.Errorf("per client unset: %d, want the default", got)
	}
}

// A bundle of thousands of users is gzipped to fit a Secret, and the broker
// reads both forms.
func TestLargeBundlesAreCompressedAndParse(t *testing.T) {
	small := &AuthBundle{Users: []User{{Username: "a", PasswordHash: "$sha256$MDEyMzQ1Njc4OWFiY2RlZg$ZGlnZXN0ZGlnZXN0ZGlnZXN0ZGlnZXN0ZGlnZXN0ZGk"}}}
	data, err := MarshalBundleCompressed(small)
	if err != nil || data[0] != '{' {
		t.Fatalf("a small bundle must stay plain JSON: %v %q", err, data[:1])
	}
	big := &AuthBundle{}
	for i := range 10000 {
		big.Users = append(big.Users, User{Username: fmt.Sprintf("device-%05d", i), PasswordHash: small.Users[0].PasswordHash})
	}
	data, err = MarshalBundleCompressed(big)
	if err != nil || data[0] != 0x1f {
		t.Fatalf("a 10,000-user bundle must be gzipped: %v", err)
	}
	parsed, err := ParseBundle(data)
	if err != nil || len(parsed.Users) != 10000 || parsed.Revision != big.Revision {
		t.Fatalf("parsing the compressed bundle: %v", err)
	}
}

// A user logs in with a password or with certificates, never both, and a
// fingerprint is exactly what CertificateFingerprint writes.
func TestCertificateUsers(t *testing.T) {
	const hash = "$sha256$MDEyMzQ1Njc4OWFiY2RlZg$ZGlnZXN0ZGlnZXN0ZGlnZXN0ZGlnZXN0ZGlnZXN0ZGk"
	fp := CertificateFingerprint([]byte("some DER bytes"))
	if len(fp) != 64 || strings.ToLower(fp) != fp {
		t.Fatalf("fingerprint %q is not 64 lowercase hex digits", fp)
	}
	bundle := func(u User) *AuthBundle {
		b := &AuthBundle{Users: []User{u}}
		b.Seal()
		return b
	}
	for name, u := range map[string]User{
		"password":        {Username: "alice", PasswordHash: hash},
		"one certificate": {Username: "sensor", CertificateSHA256: []string{fp}},
		"renewal overlap": {Username: "sensor", CertificateSHA256: []string{fp, CertificateFingerprint([]byte("the next one"))}},
	} {
		if err := bundle(u).Validate(); err != nil {
			t.Errorf("%s: refused: %v", name, err)
		}
	}
	for name, tc := range map[string]struct {
		u    User
		want string
	}{
		"both":       {User{Username: "sensor", PasswordHash: hash, CertificateSHA256: []string{fp}}, "has both a password hash and certificate fingerprints"},
		"neither":    {User{Username: "sensor"}, "users[0] (sensor)"},
		"upper case": {User{Username: "sensor", CertificateSHA256: []string{strings.ToUpper(fp)}}, "is not 64 lowercase hex digits"},
		"short":      {User{Username: "sensor", CertificateSHA256: []string{fp[:63]}}, "is not 64 lowercase hex digits"},
		"not hex":    {User{Username: "sensor", CertificateSHA256: []string{fp[:63] + "g"}}, "is not 64 lowercase hex digits"},
		"empty":      {User{Username: "sensor", CertificateSHA256: []string{""}}, "is not 64 lowercase hex digits"},
	} {
		err := bundle(tc.u).Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error with %q", name, err, tc.want)
		}
	}
	// Password users keep their JSON: the new field is omitted.
	data, err := MarshalBundle(bundle(User{Username: "alice", PasswordHash: hash}))
	if err != nil || strings.Contains(string(data), "certificateSHA256") {
		t.Errorf("a password user's bundle: %v %s", err, data)
	}
}

// A bundle that did not come through the MQTTUser schema has its users'
// limits checked against the same bounds.
func TestUserLimitsAreChecked(t *testing.T) {
	const hash = "$sha256$MDEyMzQ1Njc4OWFiY2RlZg$ZGlnZXN0ZGlnZXN0ZGlnZXN0ZGlnZXN0ZGlnZXN0ZGk"
	bundle := func(l *UserLimits) *AuthBundle {
		b := &AuthBundle{Users: []User{{Username: "alice", PasswordHash: hash, Limits: l}}}
		b.Seal()
		return b
	}
	if err := bundle(&UserLimits{MaxConnections: 10, MaxSubscriptions: 5, PublishRate: 1, PublishBytesPerSecond: 1024, MaxInflight: 65535}).Validate(); err != nil {
		t.Errorf("limits within bounds refused: %v", err)
	}
	for want, l := range map[string]*UserLimits{
		"maxConnections -1 is outside":              {MaxConnections: -1},
		"publishBytesPerSecond 10 is outside":       {PublishBytesPerSecond: 10},
		"maxInflight 70000 is outside":              {MaxInflight: 70000},
		"maxSubscriptions 1000000 is outside":       {MaxSubscriptions: 1_000_000},
		"publishRate 2000000 is outside 1..1000000": {PublishRate: 2_000_000},
	} {
		if err := bundle(l).Validate(); err == nil || !strings.Contains(err.Error(), "users[0] (alice): limits: "+want) {
			t.Errorf("%+v: %v, want an error with %q", l, err, want)
		}
	}
}

// Every mistake that would stop the broker at start (or, before, panic it in
// net/http) is refused by Validate with a message that names the field and
// says what is wrong.
func TestValidateRefusesWhatCannotStart(t *testing.T) {
	ws := func(path string) func(*Config) {
		return func(c *Config) {
			c.Listeners = append(c.Listeners, Listener{Name: "ws", Protocol: ProtocolWebSocket, Address: ":8083", Path: path})
		}
	}
	withTLS := func(c *Config) { c.TLS = &TLS{CertFile: "/tls/tls.crt", KeyFile: "/tls/tls.key"} }
	cases := map[string]struct {
		mutate func(*Config)
		want   string
	}{
		"websocket without path": {ws(""), "listeners[1]: path is required for websocket listeners"},
		"secure websocket no path": {func(c *Config) {
			withTLS(c)
			c.Listeners[0] = Listener{Name: "wss", Protocol: ProtocolSecureWebSocket, Address: ":8084"}
		}, "listeners[0]: path is required"},
		"relative path":     {ws("mqtt"), `listeners[1]: path "mqtt" must start with '/'`},
		"method in path":    {ws("/GET /mqtt"), `listeners[1]: path "/GET /mqtt" contains ' '`},
		"wildcard":          {ws("/{id}"), `path "/{id}" contains '{'`},
		"escape":            {ws("/a%20b"), `path "/a%20b" contains '%'`},
		"control character": {ws("/a\nb"), `contains '\n'`},
		"non-ascii":         {ws("/mqtt\u00e9"), `contains 'é'`},
		"double slash":      {ws("/a//b"), `path "/a//b" is not clean`},
		"dot segment":       {ws("/a/../b"), `redirects requests for it to "/b"`},
		"long path":         {ws("/" + strings.Repeat("a", 1024)), "path is 1025 bytes, at most 1024"},
		"path on tcp":       {func(c *Config) { c.Listeners[0].Path = "/mqtt" }, "listeners[0]: path is only for websocket and secureWebsocket listeners, not tcp"},
		"empty name":        {func(c *Config) { c.Listeners[0].Name = "" }, `listeners[0]: name "" must be 1-15 lowercase letters`},
		"long name":         {func(c *Config) { c.Listeners[0].Name = "a-very-long-name1" }, `name "a-very-long-name1" must be 1-15`},
		"upper-case name":   {func(c *Config) { c.Listeners[0].Name = "MQTT" }, `name "MQTT" must be`},
		"digits-only name":  {func(c *Config) { c.Listeners[0].Name = "1883" }, `name "1883" must be`},
		"same port twice": {func(c *Config) {
			c.Listeners = append(c.Listeners, Listener{Name: "ws", Protocol: ProtocolWebSocket, Address: "127.0.0.1:1883", Path: "/mqtt"})
		}, "listeners[1]: port 1883 is already used by listeners[0]"},
		"same port, leading zero": {func(c *Config) {
			c.Listeners = append(c.Listeners, Listener{Name: "ws", Protocol: ProtocolWebSocket, Address: ":01883", Path: "/mqtt"})
		}, "listeners[1]: port 1883 is already used by listeners[0]"},
		"health and admin share":   {func(c *Config) { c.AdminAddress = c.HealthAddress }, "adminAddress: port 9090 is already used by healthAddress"},
		"port too large":           {func(c *Config) { c.Listeners[0].Address = ":65536" }, `address ":65536": port must be a number 0-65535`},
		"signed port":              {func(c *Config) { c.Listeners[0].Address = ":+1883" }, `address ":+1883": port must be a number`},
		"negative port":            {func(c *Config) { c.Listeners[0].Address = ":-1" }, `address ":-1": port must be a number`},
		"named port":               {func(c *Config) { c.Listeners[0].Address = ":mqtt" }, `address ":mqtt": port must be a number`},
		"empty port":               {func(c *Config) { c.Listeners[0].Address = "127.0.0.1:" }, `port must be a number`},
		"no address":               {func(c *Config) { c.Listeners[0].Address = "" }, `listeners[0]: address "": missing port in address`},
		"health address missing":   {func(c *Config) { c.HealthAddress = "" }, `healthAddress: address ""`},
		"host with a space":        {func(c *Config) { c.Listeners[0].Address = "my host:1883" }, `host "my host" is neither an IP address nor a DNS name`},
		"not an IP address":        {func(c *Config) { c.Listeners[0].Address = "256.1.1.1:1883" }, `host "256.1.1.1" is neither`},
		"host with a zone":         {func(c *Config) { c.Listeners[0].Address = "[fe80::1%eth0]:1883" }, `host "fe80::1%eth0" is neither`},
		"tls listener without tls": {func(c *Config) { c.Listeners[0].Protocol = ProtocolTLS }, "listeners[0]: protocol tls needs tls.certFile and tls.keyFile"},
		"tls without key":          {func(c *Config) { c.TLS = &TLS{CertFile: "/tls/tls.crt"} }, "tls: certFile and keyFile are both required"},
		"unknown protocol lists":   {func(c *Config) { c.Listeners[0].Protocol = "ws" }, `unknown protocol "ws", want one of tcp, tls, websocket, secureWebsocket`},
		"durable not persistent":   {func(c *Config) { c.Storage.Durable = true }, "storage.durable needs storage.persistent"},
		"keepalive":                {func(c *Config) { c.Limits.MaxKeepaliveSeconds = 5 }, "limits.maxKeepaliveSeconds: 5 is outside [10, 65535]"},
		"session expiry":           {func(c *Config) { c.Limits.SessionExpirySeconds = -1 }, "limits.sessionExpirySeconds: -1 is outside"},
		"inflight":                 {func(c *Config) { c.Limits.MaxInflight = 70000 }, "limits.maxInflight: 70000 is outside [1, 65535]"},
	}
	for name, tc := range cases {
		c := valid()
		tc.mutate(c)
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want %q", name, err, tc.want)
		}
	}
	for name, mutate := range map[string]func(*Config){
		"root path":        ws("/"),
		"subtree path":     ws("/mqtt/"),
		"sub-delims":       ws("/a-b_c.d~e!$&'()*+,;=:@"),
		"dns host":         func(c *Config) { c.Listeners[0].Address = "broker.example.com:1883" },
		"ipv6 host":        func(c *Config) { c.Listeners[0].Address = "[::1]:1883" },
		"free ports twice": func(c *Config) { c.HealthAddress, c.AdminAddress = "127.0.0.1:0", "127.0.0.1:0" },
		"tls listeners":    func(c *Config) { withTLS(c); c.Listeners[0].Protocol = ProtocolTLS },
	} {
		c := valid()
		mutate(c)
		if err := c.Validate(); err != nil {
			t.Errorf("%s: refused: %v", name, err)
		}
	}
}

// A file of just the version is a whole configuration: every field left out
// takes its documented default, one set to zero or false keeps it, and the
// operator's fully written file means the same as before.
func TestParseFillsDefaults(t *testing.T) {
	minimal, err := Parse([]byte("version: " + Version + "\n"))
	if err != nil {
		t.Fatalf("a file of just the version is refused: %v", err)
	}
	want := Defaults()
	if minimal.RestartHash() != want.RestartHash() || minimal.Limits != want.Limits || minimal.AllowAnonymous {
		t.Errorf("minimal file: got %+v, want the defaults %+v", minimal, want)
	}
	if len(minimal.Listeners) != 1 || minimal.Listeners[0] != DefaultListener() {
		t.Errorf("minimal file listeners: %+v", minimal.Listeners)
	}
	out, err := Marshal(minimal)
	if err != nil {
		t.Fatal(err)
	}
	again, err := Parse(out)
	if err != nil || again.RestartHash() != minimal.RestartHash() || again.Limits != minimal.Limits {
		t.Errorf("defaults written out do not parse back the same: %v", err)
	}

	explicit, err := Parse([]byte("version: " + Version + `
listeners: [{name: ws, protocol: websocket, address: ":8083", path: /mqtt}]
storage: {path: /srv/mqtt}
limits: {maxQoS: 0, retainAvailable: false, sessionExpirySeconds: 0, maxConnections: 5}
`))
	if err != nil {
		t.Fatal(err)
	}
	l := explicit.Limits
	if l.MaxQoS != 0 || l.RetainAvailable || l.SessionExpirySeconds != 0 || l.MaxConnections != 5 {
		t.Errorf("explicit zero, false and values were replaced by defaults: %+v", l)
	}
	if l.MaxPacketSize != DefaultMaxPacketSize || l.MaxKeepaliveSeconds != DefaultMaxKeepaliveSeconds {
		t.Errorf("limits the file left out have no default: %+v", l)
	}
	if len(explicit.Listeners) != 1 || explicit.Listeners[0].Address != ":8083" || explicit.Storage.Path != "/srv/mqtt" {
		t.Errorf("listeners or storage: %+v %+v", explicit.Listeners, explicit.Storage)
	}
	// The default listener lends nothing to a listener the file names.
	if _, err := Parse([]byte("version: " + Version + "\nlisteners: [{name: ws, protocol: websocket, path: /mqtt}]\n")); err == nil ||
		!strings.Contains(err.Error(), `listeners[0]: address ""`) {
		t.Errorf("a listener without an address took one from the default listener: %v", err)
	}
	if _, err := Parse([]byte("version: " + Version + "\nlisteners: []\n")); err == nil || !strings.Contains(err.Error(), "at least one") {
		t.Errorf("an explicitly empty listener list must be refused, got %v", err)
	}
	if _, err := Parse([]byte("listeners: []\n")); err == nil || !strings.Contains(err.Error(), `version "" is not supported`) {
		t.Errorf("the version has no default: %v", err)
	}
	// What the operator writes (every field) is unchanged by the defaults.
	full, err := Marshal(valid())
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := Parse(full)
	if err != nil || parsed.RestartHash() != valid().RestartHash() || parsed.Limits != valid().Limits {
		t.Errorf("a fully written file parses differently: %v", err)
	}
}

// A refused bundle says what is wrong and where: the revision it should
// have, the byte a JSON error is at, the field of the wrong type.
func TestParseBundleErrorsSayWhatIsWrong(t *testing.T) {
	const hash = "$sha256$MDEyMzQ1Njc4OWFiY2RlZg$ZGlnZXN0ZGlnZXN0ZGlnZXN0ZGlnZXN0ZGlnZXN0ZGk"
	b := &AuthBundle{Users: []User{{Username: "alice", PasswordHash: hash}}}
	good, err := MarshalBundle(b)
	if err != nil {
		t.Fatal(err)
	}
	rev := b.Revision
	for name, tc := range map[string]struct{ data, want string }{
		"revision": {strings.Replace(string(good), rev, "0000000000000000", 1),
			`auth bundle revision mismatch: file says "0000000000000000", content hashes to "` + rev + `"`},
		"no revision":   {strings.Replace(string(good), rev, "", 1), `file says "", content hashes to "` + rev + `"`},
		"syntax":        {strings.Replace(string(good), `"users":`, `"users";`, 1), "parsing auth bundle: at byte " + fmt.Sprint(strings.Index(string(good), `"users":`)+8) + ": invalid character ';'"},
		"truncated":     {string(good[:40]), "parsing auth bundle: the JSON ends early (a truncated file?)"},
		"type":          {strings.Replace(string(good), `"generation":0`, `"generation":"1"`, 1), "field generation must be a JSON number, not string"},
		"acls type":     {strings.Replace(string(good), `"acls":null`, `"acls":{}`, 1), "field acls must be a JSON array, not object"},
		"unknown field": {strings.Replace(string(good), `"username"`, `"user"`, 1), `unknown field "user"`},
		"trailing":      {string(good) + `{}`, "more than one JSON value"},
		"bad hash":      {strings.Replace(string(good), hash, "plain", 1), "users[0] (alice): unknown password hash format"},
	} {
		_, err := ParseBundle([]byte(tc.data))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want %q", name, err, tc.want)
		}
	}
}
