package broker

import (
	"bytes"
	"sync/atomic"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// messageStats counts messages by direction and QoS with plain atomics; the
// metrics endpoint reads them, the hot path never touches Prometheus.
type messageStats struct {
	in, out [3]atomic.Uint64
	dropped atomic.Uint64
}

type statsHook struct {
	mqtt.HookBase
	stats *messageStats
}

func (h *statsHook) ID() string { return "mqtt-operator-stats" }

func (h *statsHook) Provides(b byte) bool {
	return bytes.Contains([]byte{mqtt.OnPublished, mqtt.OnPacketSent, mqtt.OnPublishDropped}, []byte{b})
}

func (h *statsHook) OnPublished(_ *mqtt.Client, pk packets.Packet) {
	h.stats.in[pk.FixedHeader.Qos%3].Add(1)
}

func (h *statsHook) OnPacketSent(_ *mqtt.Client, pk packets.Packet, _ []byte) {
	if pk.FixedHeader.Type == packets.Publish {
		h.stats.out[pk.FixedHeader.Qos%3].Add(1)
	}
}

func (h *statsHook) OnPublishDropped(_ *mqtt.Client, _ packets.Packet) {
	h.stats.dropped.Add(1)
}
