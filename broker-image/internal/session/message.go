package session

import (
	"github.com/mochi-mqtt/server/v2/hooks/storage"
	"github.com/mochi-mqtt/server/v2/packets"
)

// StoredMessage is a queued or retained message as mochi's storage types
// hold it: what the durable store writes and what a session moving to
// another pod carries.
func StoredMessage(pk packets.Packet) *storage.Message {
	p := pk.Properties.Copy(false)
	return &storage.Message{
		FixedHeader: pk.FixedHeader, PacketID: pk.PacketID, TopicName: pk.TopicName, Payload: pk.Payload,
		Origin: pk.Origin, Created: pk.Created,
		Properties: storage.MessageProperties{
			PayloadFormat: p.PayloadFormat, PayloadFormatFlag: p.PayloadFormatFlag,
			MessageExpiryInterval: p.MessageExpiryInterval, ContentType: p.ContentType,
			ResponseTopic: p.ResponseTopic, CorrelationData: p.CorrelationData,
			SubscriptionIdentifier: p.SubscriptionIdentifier, TopicAlias: p.TopicAlias, User: p.User,
		},
	}
}
