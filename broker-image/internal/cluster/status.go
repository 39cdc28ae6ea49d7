package cluster

import (
	"net"
	"strconv"
	"strings"

	"github.com/mqtt-operator/mqtt-operator/internal/brokerconfig"
)

// Status is what GET /v1/cluster reports. A configured peer is matched to
// a route by its pod name (the operator's peers are
// <pod>.<headless service>:port) or by the address this pod dialled; a
// route matching no configured peer is listed by its node name alone.
func (n *Node) Status() brokerconfig.ClusterStatus {
	st := brokerconfig.ClusterStatus{Name: n.name, Node: n.node, Joined: n.meshComplete() == nil, Peers: []brokerconfig.PeerStatus{}}
	connected, dialled := map[string]bool{}, map[string]string{}
	if rz, err := n.srv.Routez(nil); err == nil {
		for _, r := range rz.Routes {
			if r.RemoteName == "" {
				continue
			}
			connected[r.RemoteName] = true
			if r.DidSolicit {
				dialled[net.JoinHostPort(r.IP, strconv.Itoa(r.Port))] = r.RemoteName
			}
		}
	}
	n.peersMu.Lock()
	peers := append([]string(nil), n.peers...)
	n.peersMu.Unlock()
	matched := map[string]bool{}
	for _, p := range peers {
		host, _, _ := net.SplitHostPort(p)
		first, _, _ := strings.Cut(host, ".")
		if first == n.node || p == n.cfg.Address {
			continue // this pod
		}
		ps := brokerconfig.PeerStatus{Address: p}
		switch {
		case connected[first]:
			ps.Node = first
		case dialled[p] != "":
			ps.Node = dialled[p]
		}
		if ps.Node != "" && !matched[ps.Node] {
			ps.Connected, matched[ps.Node] = true, true
		}
		st.Peers = append(st.Peers, ps)
	}
	var unmatchedPeers []int
	for i, p := range st.Peers {
		if !p.Connected {
			unmatchedPeers = append(unmatchedPeers, i)
		}
	}
	var unmatchedNodes []string
	for name := range connected {
		if !matched[name] {
			unmatchedNodes = append(unmatchedNodes, name)
		}
	}
	if len(unmatchedNodes) == len(unmatchedPeers) {
		// Every peer is connected, only which is which is not known (an
		// accepted route shows no address of the peer's to match).
		for _, i := range unmatchedPeers {
			st.Peers[i].Connected = true
		}
		return st
	}
	for _, name := range unmatchedNodes {
		st.Peers = append(st.Peers, brokerconfig.PeerStatus{Node: name, Connected: true})
	}
	return st
}
