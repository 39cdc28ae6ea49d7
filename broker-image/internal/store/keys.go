package store

import (
	"crypto/sha256"
	"encoding/binary"

	"go.etcd.io/bbolt"
)

// Keys are built from client IDs, topic filters and topic names, which MQTT
// lets be 64 KiB long, while bbolt refuses keys over bbolt.MaxKeySize
// (32 KiB). A part that would not fit is stored as hashedMark followed by its
// SHA-256. Keys that fit are stored as they always were, so a database
// written before this change reads and deletes the same. Nothing reads a
// stored key back: every record holds its client ID, filter or topic in its
// value, and that is what a restart restores.
//
// hashedMark (0xFF) never occurs in UTF-8 text, which MQTT requires of every
// one of these strings; a real part could match a hashed one only by being
// 0xFF followed by a SHA-256 preimage of another part.
const hashedMark = 0xFF

// hashedPart is the stored form of a part too long for its key.
func hashedPart(dst []byte, part string) []byte {
	sum := sha256.Sum256([]byte(part))
	return append(append(dst, hashedMark), sum[:]...)
}

// fitKey appends part to prefix, or its hash when the key would exceed
// bbolt's limit.
func fitKey(prefix []byte, part string) []byte {
	if len(prefix)+len(part) <= bbolt.MaxKeySize {
		return append(prefix, part...)
	}
	return hashedPart(prefix, part)
}

// longIDPrefix marks the prefix of a client ID that is stored hashed. A
// plain prefix starts with the ID's length, and an ID 65,535 bytes long is
// always hashed, so no plain prefix starts with it.
const longIDPrefix = 0xFFFF

// maxPlainID leaves room after a client prefix for a hashed filter or a
// packet ID within bbolt's key limit.
const maxPlainID = bbolt.MaxKeySize - 2 - 1 - sha256.Size

// clientPrefix is the key prefix of everything stored for one client. The
// length in front keeps one client ID from being a prefix of another's keys.
// It depends on the ID alone, so deleting a client's records by prefix finds
// them all.
func clientPrefix(id string) []byte {
	if len(id) > maxPlainID {
		k := binary.BigEndian.AppendUint16(make([]byte, 0, 2+1+sha256.Size+2), longIDPrefix)
		return hashedPart(k, id)
	}
	k := make([]byte, 2, 2+len(id)+2)
	binary.BigEndian.PutUint16(k, uint16(len(id)))
	return append(k, id...)
}

func packetKey(id string, packetID uint16) []byte {
	return binary.BigEndian.AppendUint16(clientPrefix(id), packetID)
}

// clientKey is the key of a client's session record.
func clientKey(id string) []byte { return fitKey(nil, id) }

// subscriptionKey is the key of one of a client's subscriptions.
func subscriptionKey(id, filter string) []byte { return fitKey(clientPrefix(id), filter) }

// retainedKey is the key of the message retained on topic.
func retainedKey(topic string) []byte { return fitKey(nil, topic) }
