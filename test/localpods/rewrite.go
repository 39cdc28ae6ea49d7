package localpods

import (
	"fmt"
	"net"
	"path"
	"path/filepath"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/mqtt-operator/mqtt-operator/internal/brokerconfig"
)

// mount maps a path inside the container to the directory the harness
// materialised for it.
type mount struct{ containerPath, hostPath string }

// mountTable resolves container paths to host paths.
type mountTable []mount

// resolve maps p when it lies under a mount. The longest mount path wins, as
// a nested mount shadows its parent inside a container.
func (t mountTable) resolve(p string) (string, bool) {
	if !path.IsAbs(p) {
		return p, false
	}
	p = path.Clean(p)
	best := -1
	for i, m := range t {
		mp := path.Clean(m.containerPath)
		if (p == mp || strings.HasPrefix(p, strings.TrimSuffix(mp, "/")+"/")) &&
			(best < 0 || len(mp) > len(path.Clean(t[best].containerPath))) {
			best = i
		}
	}
	if best < 0 {
		return p, false
	}
	rel := strings.TrimPrefix(p, path.Clean(t[best].containerPath))
	return filepath.Join(t[best].hostPath, filepath.FromSlash(rel)), true
}

// rewriteArgs maps every container path in args to its host path: a whole
// argument (the value of "--flag /path") or the value of "--flag=/path".
// Anything else passes through unchanged.
func rewriteArgs(args []string, mounts mountTable) []string {
	out := make([]string, len(args))
	for i, a := range args {
		out[i] = a
		if name, value, ok := strings.Cut(a, "="); ok && strings.HasPrefix(a, "-") {
			if host, ok := mounts.resolve(value); ok {
				out[i] = name + "=" + host
			}
			continue
		}
		if host, ok := mounts.resolve(a); ok {
			out[i] = host
		}
	}
	return out
}

// rewriteBrokerConfig is the harness's one change to what the operator
// rendered: every address binds the pod's own loopback IP instead of all
// addresses (":1883" becomes "127.0.0.N:1883"), so many brokers share one
// host without port clashes, and the storage and TLS paths point at the
// materialised volumes. A configuration that does not parse is returned as an
// error; the caller then writes it unchanged, so the broker refuses it just as
// it would in a real pod.
//
// A clustered broker's cluster port binds the pod's address too, its files
// point at the materialised cluster Secret, and each peer's DNS name under
// the headless Service ("<pod>.<service>.<namespace>.svc...", which no
// resolver here knows) becomes that pod's address, as peerAddr gives it.
func rewriteBrokerConfig(data []byte, ip string, mounts mountTable, peerAddr func(host string) (string, bool)) ([]byte, error) {
	cfg, err := brokerconfig.Parse(data)
	if err != nil {
		return nil, fmt.Errorf("rewriting broker config for %s: %w", ip, err)
	}
	rebind := func(addr string) string {
		_, port, err := net.SplitHostPort(addr)
		if err != nil {
			return addr // Parse validated it; unreachable
		}
		return net.JoinHostPort(ip, port)
	}
	for i := range cfg.Listeners {
		cfg.Listeners[i].Address = rebind(cfg.Listeners[i].Address)
	}
	cfg.HealthAddress = rebind(cfg.HealthAddress)
	cfg.AdminAddress = rebind(cfg.AdminAddress)
	cfg.Storage.Path, _ = mounts.resolve(cfg.Storage.Path)
	if cfg.TLS != nil {
		cfg.TLS.CertFile, _ = mounts.resolve(cfg.TLS.CertFile)
		cfg.TLS.KeyFile, _ = mounts.resolve(cfg.TLS.KeyFile)
		if cfg.TLS.ClientCAFile != "" {
			cfg.TLS.ClientCAFile, _ = mounts.resolve(cfg.TLS.ClientCAFile)
		}
	}
	if c := cfg.Cluster; c != nil {
		c.Address = rebind(c.Address)
		c.PasswordFile, _ = mounts.resolve(c.PasswordFile)
		if c.TLS != nil {
			c.TLS.CertFile, _ = mounts.resolve(c.TLS.CertFile)
			c.TLS.KeyFile, _ = mounts.resolve(c.TLS.KeyFile)
			c.TLS.CAFile, _ = mounts.resolve(c.TLS.CAFile)
		}
		for i, p := range c.Peers {
			host, port, err := net.SplitHostPort(p)
			if err != nil {
				continue // Parse validated it; unreachable
			}
			if addr, ok := peerAddr(host); ok {
				c.Peers[i] = net.JoinHostPort(addr, port)
			}
		}
	}
	out, err := brokerconfig.Marshal(cfg)
	if err != nil {
		return nil, fmt.Errorf("rewriting broker config for %s: %w", ip, err)
	}
	return out, nil
}

// podOfPeer reads the pod's namespace and name from a peer's DNS name under
// a headless Service: "<pod>.<service>.<namespace>.svc[.<domain>]".
func podOfPeer(host string) (namespace, pod string, ok bool) {
	labels := strings.Split(host, ".")
	if len(labels) < 4 || labels[3] != "svc" {
		return "", "", false
	}
	return labels[2], labels[0], true
}

// containerEnv is the process environment of c: its literal values and the
// fieldRef values a pod knows without a node (name, namespace, UID, IPs, node
// name). Other valueFrom sources (resourceFieldRef, Secret and ConfigMap key
// refs) are skipped, and $(VAR) references are not expanded. The process
// inherits nothing from the harness, as a container inherits nothing from the
// kubelet; TMPDIR points at the volume mounted on /tmp, if any.
func containerEnv(c *corev1.Container, pod *corev1.Pod, ip string, mounts mountTable) []string {
	var env []string
	if tmp, ok := mounts.resolve("/tmp"); ok {
		env = append(env, "TMPDIR="+tmp)
	}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			env = append(env, e.Name+"="+e.Value)
		case e.ValueFrom.FieldRef != nil:
			if v, ok := fieldValue(e.ValueFrom.FieldRef.FieldPath, pod, ip); ok {
				env = append(env, e.Name+"="+v)
			}
		}
	}
	return env
}

func fieldValue(field string, pod *corev1.Pod, ip string) (string, bool) {
	switch field {
	case "metadata.name":
		return pod.Name, true
	case "metadata.namespace":
		return pod.Namespace, true
	case "metadata.uid":
		return string(pod.UID), true
	case "spec.nodeName":
		return nodeName, true
	case "status.podIP":
		return ip, true
	case "status.hostIP":
		return hostIP, true
	}
	return "", false
}
