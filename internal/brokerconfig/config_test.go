package brokerconfig

import (
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
			c.Listeners = append(c.Listeners, Listener{Name: "mqtt", Protocol: ProtocolWebSocket, Address: ":8083"})
		}, `name "mqtt" is empty or used twice`},
		"qos":                {func(c *Config) { c.Limits.MaxQoS = 3 }, "limits.maxQoS: 3 is outside [0, 2]"},
		"packet size":        {func(c *Config) { c.Limits.MaxPacketSize = 10 }, "limits.maxPacketSize: 10 is outside"},
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
