package brokerconfig

import (
	"errors"
	"fmt"
	"regexp"
)

// Cluster makes the broker one pod of a clustered MQTTBroker (replicas > 1):
// an embedded NATS server routes messages, sessions and retained messages
// between the pods, so clients see one logical broker. Absent on a single
// pod, which then pays nothing for clustering.
type Cluster struct {
	// Name identifies the cluster. Every pod of one MQTTBroker has the same
	// one, derived from the broker's UID, so pods of another broker (even a
	// recreated one of the same name) cannot join; the operator renders it.
	Name string `json:"name"`
	// NodeName is this pod's name within the cluster, unique among the
	// peers (the pod name). The broker reads it from the environment
	// variable named by NodeNameEnv when the file leaves it empty, as the
	// operator does: all pods share one ConfigMap.
	NodeName string `json:"nodeName,omitempty"`
	// Address is the host:port the cluster port binds (routes between the
	// pods). Default ":6222" when Cluster is present.
	Address string `json:"address"`
	// Peers are the cluster addresses (host:port) of every pod of the
	// cluster, this one included (a route to itself is ignored): the
	// headless Service's per-pod DNS names. 1 to MaxClusterPeers.
	Peers []string `json:"peers"`
	// PasswordFile holds the secret routes authenticate with, generated
	// by the operator per broker. Required.
	PasswordFile string `json:"passwordFile"`
	// TLS encrypts the routes and makes each side prove itself with a
	// certificate from the broker's own CA. The operator always sets it.
	TLS *ClusterTLS `json:"tls,omitempty"`
}

// ClusterTLS names the PEM files of a pod's cluster certificate and of the
// CA every peer's certificate must chain to. Reloaded in place.
type ClusterTLS struct {
	CertFile string `json:"certFile"`
	KeyFile  string `json:"keyFile"`
	CAFile   string `json:"caFile"`
}

const (
	// DefaultClusterAddress is where the cluster port binds by default.
	DefaultClusterAddress = ":6222"
	// MaxClusterPeers is the most pods of one clustered MQTTBroker.
	MaxClusterPeers = 16
	// NodeNameEnv names the environment variable that gives NodeName
	// when the file leaves it empty (the pod name, by the downward API).
	NodeNameEnv = "MQTT_CLUSTER_NODE_NAME"
)

var clusterName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$`)

// restartOnly is c without what reloads in place (the peers), or nil.
func (c *Cluster) restartOnly() *Cluster {
	if c == nil {
		return nil
	}
	r := *c
	r.Peers = nil
	return &r
}

func (c *Cluster) validate(usePort func(where, addr string)) []error {
	var errs []error
	if !clusterName.MatchString(c.Name) {
		errs = append(errs, fmt.Errorf("cluster.name %q: want 1-63 letters, digits, '-', '_' or '.', starting with a letter or digit", c.Name))
	}
	if c.NodeName != "" && !clusterName.MatchString(c.NodeName) {
		errs = append(errs, fmt.Errorf("cluster.nodeName %q: want 1-63 letters, digits, '-', '_' or '.', starting with a letter or digit", c.NodeName))
	}
	usePort("cluster.address", c.Address)
	if n := len(c.Peers); n < 1 || n > MaxClusterPeers {
		errs = append(errs, fmt.Errorf("cluster.peers: %d given, want 1 to %d", n, MaxClusterPeers))
	}
	seen := map[string]bool{}
	for i, p := range c.Peers {
		if _, err := validAddress(p); err != nil {
			errs = append(errs, fmt.Errorf("cluster.peers[%d]: %w", i, err))
		} else if seen[p] {
			errs = append(errs, fmt.Errorf("cluster.peers[%d]: %q is listed twice", i, p))
		}
		seen[p] = true
	}
	if c.PasswordFile == "" {
		errs = append(errs, errors.New("cluster.passwordFile is required: routes between pods authenticate"))
	}
	if t := c.TLS; t != nil && (t.CertFile == "" || t.KeyFile == "" || t.CAFile == "") {
		errs = append(errs, errors.New("cluster.tls: certFile, keyFile and caFile are all required"))
	}
	return errs
}

// ClusterStatus is what GET /v1/cluster on the admin port returns: the
// pod's view of the mesh. The operator reports it in the MQTTBroker's
// status.
type ClusterStatus struct {
	// Name and Node are the cluster's and this pod's names.
	Name string `json:"name"`
	Node string `json:"node"`
	// Joined is true once this pod has a route to every peer it was given
	// and the cluster state it needs is loaded; /readyz fails until then.
	Joined bool `json:"joined"`
	// Peers are the other pods: their addresses as configured, their node
	// names once a route is up, and whether it is.
	Peers []PeerStatus `json:"peers"`
	// Clients is the number of clients connected to this pod; Draining and
	// Shedding say whether it is sending all of them, or some (a
	// rebalance), elsewhere. The operator rebalances from these.
	Clients  int  `json:"clients"`
	Draining bool `json:"draining,omitempty"`
	Shedding bool `json:"shedding,omitempty"`
}

// PeerStatus is one peer as a pod sees it.
type PeerStatus struct {
	Address   string `json:"address"`
	Node      string `json:"node,omitempty"`
	Connected bool   `json:"connected"`
}

// ShedRequest asks a pod to send clients to other pods, spread over a
// period (POST /v1/shed on the admin API).
type ShedRequest struct {
	Clients       int     `json:"clients"`
	PeriodSeconds float64 `json:"periodSeconds"`
}

// ShedResponse says how many clients the pod is sending elsewhere: fewer
// than asked when it has fewer.
type ShedResponse struct {
	Moving int `json:"moving"`
}
