package brokerconfig

import (
	"strings"
	"testing"
)

func TestClusterSection(t *testing.T) {
	c, err := Parse([]byte("version: " + Version + `
cluster:
  name: b-0123
  peers: ["telemetry-0.telemetry-cluster:6222", "telemetry-1.telemetry-cluster:6222"]
  passwordFile: /etc/mqtt/cluster/password
`))
	if err != nil {
		t.Fatal(err)
	}
	if c.Cluster.Address != DefaultClusterAddress {
		t.Errorf("cluster.address defaulted to %q, want %q", c.Cluster.Address, DefaultClusterAddress)
	}
	if Defaults().Cluster != nil {
		t.Error("a configuration without a cluster section must not be clustered")
	}

	// Peers reload in place; identity, port and files roll the pod.
	before := c.RestartHash()
	c.Cluster.Peers = append(c.Cluster.Peers, "telemetry-2.telemetry-cluster:6222")
	if c.RestartHash() != before {
		t.Error("adding a peer changed the restart hash: scaling would roll every pod")
	}
	c.Cluster.Name = "b-other"
	if c.RestartHash() == before {
		t.Error("a new cluster name did not change the restart hash")
	}
	single := Defaults()
	clustered := Defaults()
	clustered.Cluster = &Cluster{Name: "x", Address: ":6222", Peers: []string{"a:6222"}, PasswordFile: "/p"}
	if single.RestartHash() == clustered.RestartHash() {
		t.Error("turning clustering on did not change the restart hash")
	}

	for name, tc := range map[string]struct {
		mutate func(*Cluster)
		want   string
	}{
		"empty name":       {func(c *Cluster) { c.Name = "" }, "cluster.name"},
		"name with slash":  {func(c *Cluster) { c.Name = "a/b" }, "cluster.name"},
		"bad node name":    {func(c *Cluster) { c.NodeName = "pod 0" }, "cluster.nodeName"},
		"no peers":         {func(c *Cluster) { c.Peers = nil }, "cluster.peers: 0 given"},
		"too many peers":   {func(c *Cluster) { c.Peers = make([]string, 17) }, "want 1 to 16"},
		"peer not an addr": {func(c *Cluster) { c.Peers = []string{"telemetry-0"} }, "cluster.peers[0]"},
		"peer twice":       {func(c *Cluster) { c.Peers = []string{"a:1", "a:1"} }, "listed twice"},
		"no password":      {func(c *Cluster) { c.PasswordFile = "" }, "cluster.passwordFile"},
		"port clash":       {func(c *Cluster) { c.Address = ":1883" }, "port 1883 is already used"},
		"partial tls":      {func(c *Cluster) { c.TLS = &ClusterTLS{CertFile: "c", KeyFile: "k"} }, "cluster.tls"},
	} {
		cfg := Defaults()
		cl := Cluster{Name: "b-1", Address: ":6222", Peers: []string{"a:6222"}, PasswordFile: "/p"}
		tc.mutate(&cl)
		cfg.Cluster = &cl
		err := cfg.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one containing %q", name, err, tc.want)
		}
	}
}
