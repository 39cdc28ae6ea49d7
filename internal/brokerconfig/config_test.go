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

func TestRestartHashIgnoresLimits(t *testing.T) {
	a, b := valid(), valid()
	b.Limits.MaxConnections = 5
	b.AllowAnonymous = true
	if a.RestartHash() != b.RestartHash() {
		t.Error("limits or anonymous access changed the restart hash; they reload in place")
	}
	b.Listeners[0].Address = ":11883"
	if a.RestartHash() == b.RestartHash() {
		t.Error("a listener change left the restart hash alone; pods would never bind the new port")
	}
}
