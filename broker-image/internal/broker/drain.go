package broker

import (
	"context"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// stopAccepting is implemented by the guard's listeners.
type stopAccepting interface{ StopAccepting() }

// Drain takes the broker out of service within period: it stops accepting
// connections and turns not-ready at once, then disconnects the clients
// spread evenly over the period (MQTT 5 clients get reason 0x9C, "use another
// server", so they reconnect elsewhere rather than back here), and finally
// closes the server. Persistent sessions stay in the store for the next start.
func (b *Broker) Drain(ctx context.Context, period time.Duration) {
	if b.draining.Swap(true) {
		return
	}
	for _, l := range b.listeners {
		if s, ok := l.(stopAccepting); ok {
			s.StopAccepting()
		}
	}
	var clients []string
	for id, cl := range b.server.Clients.GetAll() {
		if !cl.Net.Inline && !cl.Closed() {
			clients = append(clients, id)
		}
	}
	b.log.Info("draining", "clients", len(clients), "period", period.String())
	if len(clients) > 0 {
		step := period / time.Duration(len(clients)+1)
		for _, id := range clients {
			if cl, ok := b.server.Clients.Get(id); ok && !cl.Closed() {
				_ = b.server.DisconnectClient(cl, packets.ErrUseAnotherServer)
			}
			select {
			case <-ctx.Done():
				step = 0
			case <-time.After(step):
			}
		}
	}
	b.closeOnce.Do(func() {
		_ = b.server.Close() // mochi panics on a second Close
		if b.cluster != nil {
			b.cluster.Close()
		}
	})
	b.log.Info("drained")
}
