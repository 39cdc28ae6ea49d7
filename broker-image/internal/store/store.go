// Package store keeps broker state on the pod's volume: sessions,
// subscriptions, inflight QoS 1/2 messages and retained messages, so they
// survive a restart. It replaces mochi's bolt hook, which loses the packet ID
// of stored inflight messages (so a restored session fails on its first
// resend), stores refused subscriptions, and leaves the subscriptions and
// inflight messages of expired sessions behind.
//
// Two modes:
//
//   - Buffered (default): changes are committed in the background in batches,
//     without fsync. They survive the broker process crashing or the pod
//     being deleted (the data is in the kernel's page cache), but not the node
//     losing power in the moment after a change.
//   - Durable: a QoS 1/2 PUBLISH is committed and fsynced before the broker
//     acknowledges it. A crash after the PUBACK but before the message reached
//     the subscribers' stored sessions replays it at the next start, so an
//     acknowledged message is delivered at least once. The cost is one fsync
//     per batch of concurrent publishes (see docs/benchmarks.md).
//
// Sessions that end when the client disconnects (MQTT 5 session expiry 0,
// MQTT 3.1.1 clean session) are never written: they cannot be resumed, so
// storing them would only cost I/O.
package store

import (
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/storage"
	"github.com/mochi-mqtt/server/v2/packets"
	"go.etcd.io/bbolt"

	"github.com/mqtt-operator/mqtt-operator/broker-image/internal/contain"
	"github.com/mqtt-operator/mqtt-operator/broker-image/internal/session"
)

var (
	bucketClients  = []byte("clients")
	bucketSubs     = []byte("subscriptions")
	bucketInflight = []byte("inflight")
	bucketRetained = []byte("retained")
	// bucketPending holds durable publishes that were acknowledged but whose
	// fan-out has not been committed yet.
	bucketPending = []byte("pending")
	allBuckets    = [][]byte{bucketClients, bucketSubs, bucketInflight, bucketRetained, bucketPending}
)

// Options configure the store.
type Options struct {
	// Path of the database file.
	Path string
	// Durable fsyncs every QoS 1/2 publish before it is acknowledged.
	Durable bool
	Log     *slog.Logger
	// Panics, when set, recovers a panic in the writer goroutine.
	Panics *contain.Recoverer
}

// Counters are the store's metrics.
type Counters struct {
	CommitFailures  atomic.Uint64
	WritesRefused   atomic.Uint64
	DurableWrites   atomic.Uint64
	DurableRefused  atomic.Uint64
	PendingReplayed atomic.Uint64
}

// Hook is a mochi hook that persists broker state.
type Hook struct {
	mqtt.HookBase
	db       *bbolt.DB
	w        *writer
	durable  bool
	log      *slog.Logger
	server   *mqtt.Server
	Counters Counters
	// lastRefusalLog (Unix nanoseconds) limits the refused-write log line
	// to one a minute.
	lastRefusalLog atomic.Int64
}

// Open opens (or creates) the database. server is used to disconnect MQTT
// 3.1.1 publishers whose durable write failed, since MQTT 3.1.1 has no way
// to refuse a single PUBLISH.
func Open(o Options, server *mqtt.Server) (*Hook, error) {
	db, err := bbolt.Open(o.Path, 0o600, &bbolt.Options{Timeout: 5 * time.Second, NoSync: !o.Durable, FreelistType: bbolt.FreelistMapType})
	if err != nil {
		return nil, fmt.Errorf("opening persistent store %s: %w", o.Path, err)
	}
	if err := db.Update(func(tx *bbolt.Tx) error {
		for _, b := range allBuckets {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("preparing persistent store %s: %w", o.Path, err)
	}
	h := &Hook{db: db, durable: o.Durable, log: o.Log, server: server}
	h.w = newWriter(db, func(err error) {
		h.Counters.CommitFailures.Add(1)
		h.log.Error("persistent store commit failed; broker state since the last commit may be lost on restart", "error", err.Error())
	}, h.refusedWrite, o.Panics)
	return h, nil
}

// ID names the hook.
func (h *Hook) ID() string { return "mqtt-operator-store" }

// Provides lists the events the hook handles.
func (h *Hook) Provides(b byte) bool {
	switch b { // mochi asks this for every event of every message: no allocation, no scan
	case
		mqtt.OnSessionEstablished, mqtt.OnDisconnect, mqtt.OnWillSent, mqtt.OnClientExpired,
		mqtt.OnSubscribed, mqtt.OnUnsubscribed,
		mqtt.OnQosPublish, mqtt.OnQosComplete, mqtt.OnQosDropped,
		mqtt.OnRetainMessage, mqtt.OnRetainedExpired,
		mqtt.OnPublish, mqtt.OnPublished,
		mqtt.StoredClients, mqtt.StoredSubscriptions, mqtt.StoredInflightMessages, mqtt.StoredRetainedMessages:
		return true
	}
	return false
}

// Stop commits what is queued and closes the database. mochi calls it last
// when the server closes.
func (h *Hook) Stop() error {
	h.w.close()
	return h.db.Close()
}

// persistent reports whether cl's session outlives its connection.
func persistent(cl *mqtt.Client) bool {
	if cl.Properties.ProtocolVersion == 5 {
		return cl.Properties.Props.SessionExpiryInterval > 0
	}
	return !cl.Properties.Clean
}

func (h *Hook) put(bucket, key []byte, v storage.Serializable) {
	data, err := v.MarshalBinary()
	if err != nil {
		h.log.Error("encoding broker state for the store", "error", err.Error())
		return
	}
	_ = h.w.enqueue(op{bucket: bucket, key: key, val: data})
}

func (h *Hook) del(bucket, key []byte) { _ = h.w.enqueue(op{bucket: bucket, key: key}) }

func (h *Hook) forgetClient(id string) {
	_ = h.w.enqueue(op{bucket: bucketClients, key: clientKey(id)})
	for _, b := range [][]byte{bucketSubs, bucketInflight, bucketPending} {
		_ = h.w.enqueue(op{bucket: b, key: clientPrefix(id), prefix: true})
	}
}

// OnSessionEstablished stores a resumable session, and drops what was stored
// for the client ID when the new session is a clean one.
func (h *Hook) OnSessionEstablished(cl *mqtt.Client, _ packets.Packet) {
	if !persistent(cl) {
		h.forgetClient(cl.ID)
		return
	}
	h.putClient(cl)
}

// OnWillSent stores the client without the will it no longer has.
func (h *Hook) OnWillSent(cl *mqtt.Client, _ packets.Packet) {
	if persistent(cl) {
		h.putClient(cl)
	}
}

func (h *Hook) putClient(cl *mqtt.Client) {
	p := cl.Properties.Props.Copy(false)
	h.put(bucketClients, clientKey(cl.ID), &storage.Client{
		ID: cl.ID, T: storage.ClientKey, Remote: cl.Net.Remote, Listener: cl.Net.Listener,
		Username: cl.Properties.Username, Clean: cl.Properties.Clean, ProtocolVersion: cl.Properties.ProtocolVersion,
		Properties: storage.ClientProperties{
			SessionExpiryInterval: p.SessionExpiryInterval, SessionExpiryIntervalFlag: p.SessionExpiryIntervalFlag,
			AuthenticationMethod: p.AuthenticationMethod, AuthenticationData: p.AuthenticationData,
			RequestProblemInfo: p.RequestProblemInfo, RequestProblemInfoFlag: p.RequestProblemInfoFlag,
			RequestResponseInfo: p.RequestResponseInfo, ReceiveMaximum: p.ReceiveMaximum,
			TopicAliasMaximum: p.TopicAliasMaximum, User: p.User, MaximumPacketSize: p.MaximumPacketSize,
		},
		Will: storage.ClientWill(cl.Properties.Will),
	})
}

// OnDisconnect forgets a session that ends with its connection. A session
// taken over by a new connection of the same client lives on.
func (h *Hook) OnDisconnect(cl *mqtt.Client, _ error, expire bool) {
	if expire && cl.StopCause() != packets.ErrSessionTakenOver {
		h.forgetClient(cl.ID)
	}
}

// OnClientExpired forgets a session whose expiry interval passed.
func (h *Hook) OnClientExpired(cl *mqtt.Client) { h.forgetClient(cl.ID) }

// OnSubscribed stores the granted subscriptions of a resumable session.
func (h *Hook) OnSubscribed(cl *mqtt.Client, pk packets.Packet, reasonCodes []byte) {
	if !persistent(cl) {
		return
	}
	for i, f := range pk.Filters {
		if i >= len(reasonCodes) || reasonCodes[i] >= packets.ErrUnspecifiedError.Code {
			continue // refused: nothing to restore
		}
		h.put(bucketSubs, subscriptionKey(cl.ID, f.Filter), &storage.Subscription{
			ID: f.Filter, T: storage.SubscriptionKey, Client: cl.ID, Qos: reasonCodes[i], Filter: f.Filter,
			Identifier: f.Identifier, NoLocal: f.NoLocal, RetainHandling: f.RetainHandling, RetainAsPublished: f.RetainAsPublished,
		})
	}
}

// OnUnsubscribed removes subscriptions.
func (h *Hook) OnUnsubscribed(cl *mqtt.Client, pk packets.Packet) {
	if !persistent(cl) {
		return
	}
	for _, f := range pk.Filters {
		h.del(bucketSubs, subscriptionKey(cl.ID, f.Filter))
	}
}

// OnQosPublish stores an inflight message (outgoing PUBLISH, or the PUBREC
// state of an incoming QoS 2 one) of a resumable session.
func (h *Hook) OnQosPublish(cl *mqtt.Client, pk packets.Packet, sent int64, _ int) {
	if !persistent(cl) {
		return
	}
	m := message(pk)
	m.ID, m.T, m.Client, m.Sent = pk.FormatID(), storage.InflightKey, cl.ID, sent
	h.put(bucketInflight, packetKey(cl.ID, pk.PacketID), m)
}

// OnQosComplete removes an acknowledged inflight message.
func (h *Hook) OnQosComplete(cl *mqtt.Client, pk packets.Packet) {
	if persistent(cl) {
		h.del(bucketInflight, packetKey(cl.ID, pk.PacketID))
	}
}

// OnQosDropped removes an inflight message that expired or was cleared. When
// a session is taken over, mochi clears the old client's inflight messages
// after copying them to the new one: those records now belong to the new
// session and stay.
func (h *Hook) OnQosDropped(cl *mqtt.Client, pk packets.Packet) {
	if persistent(cl) && !cl.IsTakenOver() {
		h.del(bucketInflight, packetKey(cl.ID, pk.PacketID))
	}
}

// OnRetainMessage stores or (r == -1) removes a retained message.
func (h *Hook) OnRetainMessage(_ *mqtt.Client, pk packets.Packet, r int64) {
	if r == -1 {
		h.del(bucketRetained, retainedKey(pk.TopicName))
		return
	}
	m := message(pk)
	m.ID, m.T = pk.TopicName, storage.RetainedKey
	h.put(bucketRetained, retainedKey(pk.TopicName), m)
}

// OnRetainedExpired removes an expired retained message.
func (h *Hook) OnRetainedExpired(topic string) { h.del(bucketRetained, retainedKey(topic)) }

func message(pk packets.Packet) *storage.Message { return session.StoredMessage(pk) }
