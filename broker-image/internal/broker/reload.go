package broker

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/mqtt-operator/mqtt-operator/broker-image/internal/guard"
	"github.com/mqtt-operator/mqtt-operator/broker-image/internal/policy"
	"github.com/mqtt-operator/mqtt-operator/internal/brokerconfig"
)

// ErrStale means a bundle older than the one in force was offered and ignored.
var ErrStale = fmt.Errorf("auth bundle is older than the one in force")

// ApplyBundle parses, validates and applies an auth bundle. A bundle that
// fails validation is refused and the last good one stays in force. A bundle
// with a lower generation than the one in force is ignored (ErrStale), so a
// late file sync cannot undo a newer push from the operator.
func (b *Broker) ApplyBundle(data []byte, source string) (string, error) {
	bundle, err := brokerconfig.ParseBundle(data)
	if err != nil {
		b.reloadFailed.Add(1)
		b.log.Error("refused auth bundle; keeping the one in force", "source", source, "error", err.Error(), "revision", b.Revision())
		return "", err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.bundle != nil && bundle.Generation < b.generation {
		// Normal for a file the kubelet syncs after a newer push, so not an
		// error; but never silent: a broker stuck on a bundle from the
		// future shows here.
		b.reloadStale.Add(1)
		b.log.Info("ignored an auth bundle older than the one in force", "source", source,
			"generation", bundle.Generation, "inForceGeneration", b.generation, "revision", b.bundle.Revision)
		return b.bundle.Revision, ErrStale
	}
	if b.bundle != nil && bundle.Revision == b.bundle.Revision {
		b.generation = bundle.Generation
		return bundle.Revision, nil
	}
	b.bundle, b.generation = bundle, bundle.Generation
	revoked := b.Policy.Apply(policy.NewSnapshot(bundle, b.cfg.AllowAnonymous, quotasOf(b.cfg)))
	b.cacheBundle(data)
	b.reloadOK.Add(1)
	b.log.Info("auth bundle applied", "source", source, "revision", bundle.Revision, "generation", bundle.Generation,
		"users", len(bundle.Users), "acls", len(bundle.ACLs), "sessionsRevoked", revoked)
	return bundle.Revision, nil
}

// ApplyConfig applies a changed configuration in place. Changes that need a
// restart (listeners, addresses, storage, and the limits mochi fixes at
// start) are refused: the operator rolls the pod for those.
func (b *Broker) ApplyConfig(data []byte) error {
	cfg, err := brokerconfig.Parse(data)
	if err != nil {
		b.reloadFailed.Add(1)
		b.log.Error("refused configuration; keeping the one in force", "error", err.Error())
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if cfg.RestartHash() != b.cfg.RestartHash() {
		b.log.Warn("configuration changes need a restart; the pod will be rolled, keeping the running configuration until then")
		return fmt.Errorf("configuration change needs a restart")
	}
	if b.cluster != nil {
		if err := b.cluster.SetPeers(cfg.Cluster.Peers); err != nil {
			b.reloadFailed.Add(1)
			b.log.Error("refused new cluster peers; keeping the ones in force", "error", err.Error())
			return err
		}
	}
	b.cfg = cfg
	b.applyQuotas(cfg)
	if b.bundle != nil {
		b.Policy.Apply(policy.NewSnapshot(b.bundle, cfg.AllowAnonymous, quotasOf(cfg)))
	}
	b.reloadOK.Add(1)
	b.log.Info("configuration reloaded in place", "maxConnections", cfg.Limits.MaxConnections, "maxPacketSize", cfg.Limits.MaxPacketSize,
		"allowAnonymous", cfg.AllowAnonymous)
	return nil
}

func (b *Broker) applyQuotas(cfg *brokerconfig.Config) {
	l := &cfg.Limits
	b.guard.Limits.Set(uint32(l.MaxPacketSize), int64(l.MaxConnections), ConnectTimeout)
	b.guard.Limits.SetPreauth(guard.Preauth{
		MaxPending: int64(l.MaxPendingConnections), MaxPendingPerAddress: int64(l.MaxPendingConnectionsPerAddress),
		ConnectRatePerAddress: int64(l.ConnectRatePerAddress), MaxConnectPacketSize: uint32(l.MaxConnectPacketSize),
	})
	b.Policy.Flow.SetBudget(cfg.Limits.QueuedBytesPerClient(), cfg.Limits.QueuedBytesTotal(memoryLimit()))
}

// memoryLimit is the container's memory limit in bytes, from the pod's
// resourceFieldRef (MQTT_BROKER_MEMORY_LIMIT); 0 when not known.
func memoryLimit() int64 {
	n, err := strconv.ParseInt(os.Getenv("MQTT_BROKER_MEMORY_LIMIT"), 10, 64)
	if err != nil || n < 0 {
		return 0
	}
	return n
}

func quotasOf(cfg *brokerconfig.Config) policy.Quotas {
	return policy.Quotas{
		MaxKeepaliveSeconds:       uint16(cfg.Limits.MaxKeepaliveSeconds),
		PublishRatePerClient:      cfg.Limits.PublishRatePerClient,
		MaxSubscriptionsPerClient: cfg.Limits.MaxSubscriptionsPerClient,
		MaxQoS:                    byte(cfg.Limits.MaxQoS),
		RetainAvailable:           cfg.Limits.RetainAvailable,
		MaxRetainedMessages:       cfg.Limits.RetainedMessages(),
		MaxRetainedBytes:          cfg.Limits.RetainedBytes(),
		MaxTopicLength:            cfg.Limits.TopicLength(),
		MaxTopicLevels:            cfg.Limits.TopicLevels(),
		MaxPacketSize:             uint32(cfg.Limits.MaxPacketSize),
		TopicAliasMaximum:         uint16(cfg.Limits.TopicAliases()),
	}
}

// BundleCacheFile is where, under the storage path, the broker keeps a copy
// of the bundle in force, when it runs without an incarnation (standalone).
const BundleCacheFile = "auth-bundle.cache"

// BundleCachePath is the cache file of one broker incarnation (the
// MQTTBroker's UID) under the storage directory dir. A volume outlives its
// broker: a broker deleted and created again under the same name gets the
// old one's volume, and the old bundle cached there carries a higher
// generation than the new broker's first bundle. Started from that cache,
// the new broker would let in the users of the old one (deleted ones
// included) and refuse its own bundle as stale. So each incarnation has
// its own file, and the files of other incarnations are deleted
// (RemoveForeignBundleCaches).
func BundleCachePath(dir, incarnation string) string {
	if incarnation == "" {
		return filepath.Join(dir, BundleCacheFile)
	}
	return filepath.Join(dir, "auth-bundle."+incarnation+".cache")
}

// RemoveForeignBundleCaches deletes the cached bundles under dir that are
// not keep's (other incarnations', and the file of a broker version that
// cached without one), and returns how many it deleted.
func RemoveForeignBundleCaches(dir, keep string) (int, error) {
	matches, err := filepath.Glob(filepath.Join(dir, "auth-bundle*.cache"))
	if err != nil {
		return 0, err
	}
	removed := 0
	for _, m := range matches {
		if m == keep {
			continue
		}
		if err := os.Remove(m); err != nil && !os.IsNotExist(err) {
			return removed, fmt.Errorf("removing the bundle cache of another broker: %w", err)
		}
		removed++
	}
	return removed, nil
}

// cacheBundle keeps the bundle in force on the pod's volume (atomically), so
// a restarted container starts from it rather than from an older mounted
// file. A failure only costs that shortcut.
func (b *Broker) cacheBundle(data []byte) {
	if b.BundleCache == "" {
		return
	}
	tmp := b.BundleCache + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		b.log.Warn("could not cache the auth bundle on the volume", "error", err.Error())
		return
	}
	if err := os.Rename(tmp, b.BundleCache); err != nil {
		b.log.Warn("could not cache the auth bundle on the volume", "error", err.Error())
	}
}

// LoadCachedBundle applies the bundle cached before a restart, if any, and
// returns its revision.
func (b *Broker) LoadCachedBundle() (string, error) {
	data, err := os.ReadFile(b.BundleCache)
	if err != nil {
		return "", err
	}
	return b.ApplyBundle(data, "cache")
}
