package store

import (
	"bytes"
	"fmt"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/storage"
	"github.com/mochi-mqtt/server/v2/packets"
	"go.etcd.io/bbolt"
)

// OnPublish, in durable mode, commits an incoming QoS 1/2 message before
// mochi acknowledges it. If the commit fails the message is not
// acknowledged: an MQTT 5 publisher gets a PUBACK/PUBREC with an error reason,
// an MQTT 3.1.1 publisher (which has no such reason) is disconnected and
// resends the message when it reconnects.
func (h *Hook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if !h.durable || pk.FixedHeader.Qos == 0 || cl.Net.Inline {
		return pk, nil
	}
	m := message(pk)
	m.ID, m.T, m.Client = pk.FormatID(), "pending", cl.ID
	data, err := m.MarshalBinary()
	if err == nil {
		err = h.w.write(op{bucket: bucketPending, key: packetKey(cl.ID, pk.PacketID), val: data})
	}
	if err == nil {
		h.Counters.DurableWrites.Add(1)
		return pk, nil
	}
	h.Counters.DurableRefused.Add(1)
	h.log.Error("could not persist a QoS message before acknowledging it; refusing it", "clientId", cl.ID, "error", err.Error())
	if cl.Properties.ProtocolVersion == 5 {
		return pk, packets.ErrImplementationSpecificError
	}
	_ = h.server.DisconnectClient(cl, packets.ErrImplementationSpecificError)
	return pk, packets.ErrRejectPacket
}

// OnPublished drops the pending record once mochi has handed the message to
// every subscriber. The subscribers' inflight records were queued before
// this delete, so they are committed no later than it.
func (h *Hook) OnPublished(cl *mqtt.Client, pk packets.Packet) {
	if h.durable && pk.FixedHeader.Qos > 0 && !cl.Net.Inline {
		h.del(bucketPending, packetKey(cl.ID, pk.PacketID))
	}
}

// ReplayPending publishes again the messages that were acknowledged but whose
// fan-out was not committed before the broker stopped, then forgets them.
// Call it after the server has loaded its stored state and before clients
// are expected. A message may reach a subscriber twice (QoS 1 semantics);
// none that was acknowledged is lost.
func (h *Hook) ReplayPending(server *mqtt.Server) (int, error) {
	var pending []storage.Message
	err := h.db.View(func(tx *bbolt.Tx) error {
		return tx.Bucket(bucketPending).ForEach(func(_, v []byte) error {
			var m storage.Message
			if err := m.UnmarshalBinary(v); err != nil {
				return err
			}
			pending = append(pending, m)
			return nil
		})
	})
	if err != nil {
		return 0, fmt.Errorf("reading pending messages: %w", err)
	}
	if len(pending) == 0 {
		return 0, nil
	}
	replayer := server.NewClient(nil, "local", "store-replay", true)
	for _, m := range pending {
		pk := m.ToPacket()
		pk.FixedHeader.Type = packets.Publish
		pk.FixedHeader.Dup = false // the stored packet ID stays: mochi validates it, the inline path ignores it
		if err := server.InjectPacket(replayer, pk); err != nil {
			return 0, fmt.Errorf("replaying a pending message: %w", err)
		}
	}
	if err := h.w.write(op{bucket: bucketPending, key: nil, prefix: true}); err != nil {
		return 0, fmt.Errorf("clearing replayed messages: %w", err)
	}
	h.Counters.PendingReplayed.Add(uint64(len(pending)))
	h.log.Info("replayed acknowledged messages whose delivery was not yet stored", "messages", len(pending))
	return len(pending), nil
}

// StoredClients returns the stored sessions.
func (h *Hook) StoredClients() ([]storage.Client, error) {
	return load[storage.Client](h, bucketClients)
}

// StoredSubscriptions returns the stored subscriptions.
func (h *Hook) StoredSubscriptions() ([]storage.Subscription, error) {
	return load[storage.Subscription](h, bucketSubs)
}

// StoredInflightMessages returns the stored inflight messages.
func (h *Hook) StoredInflightMessages() ([]storage.Message, error) {
	return load[storage.Message](h, bucketInflight)
}

// StoredRetainedMessages returns the stored retained messages.
func (h *Hook) StoredRetainedMessages() ([]storage.Message, error) {
	return load[storage.Message](h, bucketRetained)
}

// load decodes every value of a bucket. A record that does not decode is
// logged and skipped rather than failing the start: one damaged session must
// not keep the broker down.
func load[T any, P interface {
	*T
	storage.Serializable
}](h *Hook, bucket []byte) ([]T, error) {
	var out []T
	skipped := 0
	err := h.db.View(func(tx *bbolt.Tx) error {
		return tx.Bucket(bucket).ForEach(func(_, v []byte) error {
			var item T
			if P(&item).UnmarshalBinary(bytes.Clone(v)) != nil {
				skipped++
				return nil
			}
			out = append(out, item)
			return nil
		})
	})
	if skipped > 0 {
		h.log.Error("skipped stored records that do not decode", "bucket", string(bucket), "records", skipped)
	}
	return out, err
}
