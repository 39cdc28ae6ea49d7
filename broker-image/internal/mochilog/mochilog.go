// Package mochilog is the slog handler mochi logs through. mochi logs whole
// packets, wills and byte slices as attributes (a second CONNECT on a live
// connection logged its password, a refused PUBLISH its payload of up to the
// maximum packet size), and a JSON handler prints every exported field,
// []byte in base64. The handler keeps what is safe to log (strings, numbers,
// times, errors) and replaces every other value with a summary of sizes and
// flags, or with its type name: an attribute type mochi starts logging in a
// later version is withheld until someone decides it is safe.
package mochilog

import (
	"context"
	"fmt"
	"log/slog"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// Handler wraps the broker's handler for mochi.
type Handler struct{ next slog.Handler }

// New returns a handler that writes to next what is safe of each record.
func New(next slog.Handler) *Handler { return &Handler{next: next} }

// Enabled reports whether next logs at level.
func (h *Handler) Enabled(ctx context.Context, level slog.Level) bool {
	return h.next.Enabled(ctx, level)
}

// Handle writes r to next with each attribute made safe.
func (h *Handler) Handle(ctx context.Context, r slog.Record) error {
	out := slog.NewRecord(r.Time, r.Level, r.Message, r.PC)
	r.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(safeAttr(a))
		return true
	})
	return h.next.Handle(ctx, out)
}

// WithAttrs makes attrs safe: mochi adds some with Logger.With.
func (h *Handler) WithAttrs(attrs []slog.Attr) slog.Handler {
	safe := make([]slog.Attr, len(attrs))
	for i, a := range attrs {
		safe[i] = safeAttr(a)
	}
	return &Handler{next: h.next.WithAttrs(safe)}
}

// WithGroup opens a group on next.
func (h *Handler) WithGroup(name string) slog.Handler {
	return &Handler{next: h.next.WithGroup(name)}
}

func safeAttr(a slog.Attr) slog.Attr {
	v := a.Value.Resolve() // a LogValuer's value is checked like any other
	switch v.Kind() {
	case slog.KindGroup:
		group := v.Group()
		safe := make([]slog.Attr, len(group))
		for i, g := range group {
			safe[i] = safeAttr(g)
		}
		return slog.Attr{Key: a.Key, Value: slog.GroupValue(safe...)}
	case slog.KindAny:
		return slog.Attr{Key: a.Key, Value: summary(v.Any())}
	default: // strings, numbers, booleans, times, durations
		return slog.Attr{Key: a.Key, Value: v}
	}
}

// summary describes x without its contents. Client IDs and usernames are
// not secret and mochi logs them as strings of their own; topics can carry
// tenant data and are summarised by length.
func summary(x any) slog.Value {
	switch x := x.(type) {
	case nil:
		return slog.AnyValue(nil)
	case error:
		// mochi's errors are fixed reason codes and I/O errors; none
		// carries packet contents.
		return slog.StringValue(x.Error())
	case packets.Packet:
		return packetSummary(&x)
	case *packets.Packet:
		if x == nil {
			return slog.AnyValue(nil)
		}
		return packetSummary(x)
	case mqtt.Will:
		return willSummary(&x)
	case *mqtt.Will:
		if x == nil {
			return slog.AnyValue(nil)
		}
		return willSummary(x)
	case *mqtt.Client:
		if x == nil {
			return slog.AnyValue(nil)
		}
		return slog.GroupValue(slog.String("id", x.ID), slog.String("listener", x.Net.Listener))
	case []byte:
		return slog.GroupValue(slog.Int("bytes", len(x)))
	default:
		return slog.StringValue(fmt.Sprintf("(%T withheld)", x))
	}
}

func packetSummary(pk *packets.Packet) slog.Value {
	attrs := []slog.Attr{
		slog.String("type", packets.PacketNames[pk.FixedHeader.Type]),
		slog.Int("qos", int(pk.FixedHeader.Qos)),
		slog.Bool("retain", pk.FixedHeader.Retain),
		slog.Int("packetId", int(pk.PacketID)),
		slog.Int("remainingLength", pk.FixedHeader.Remaining),
	}
	if pk.TopicName != "" {
		attrs = append(attrs, slog.Int("topicBytes", len(pk.TopicName)))
	}
	if len(pk.Payload) > 0 {
		attrs = append(attrs, slog.Int("payloadBytes", len(pk.Payload)))
	}
	if len(pk.Filters) > 0 {
		attrs = append(attrs, slog.Int("filters", len(pk.Filters)))
	}
	return slog.GroupValue(attrs...)
}

func willSummary(w *mqtt.Will) slog.Value {
	return slog.GroupValue(
		slog.Int("topicBytes", len(w.TopicName)), slog.Int("payloadBytes", len(w.Payload)),
		slog.Int("qos", int(w.Qos)), slog.Bool("retain", w.Retain),
	)
}
