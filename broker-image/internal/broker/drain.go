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
	clients := b.connected()
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
	// A login that passed admit just before the drain began joined the
	// client list after it was taken: it is sent elsewhere too, not cut
	// off by the close (its persistent session would go with this pod).
	for range 3 {
		late := b.connected()
		if len(late) == 0 {
			break
		}
		b.log.Info("draining clients that logged in as the drain began", "clients", len(late))
		for _, id := range late {
			if cl, ok := b.server.Clients.Get(id); ok && !cl.Closed() {
				_ = b.server.DisconnectClient(cl, packets.ErrUseAnotherServer)
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	b.closeOnce.Do(func() {
		_ = b.server.Close() // mochi panics on a second Close
		if b.cluster != nil {
			b.cluster.Close()
		}
	})
	b.log.Info("drained")
}

// connected lists the client IDs of the live network connections.
func (b *Broker) connected() []string {
	var ids []string
	for id, cl := range b.server.Clients.GetAll() {
		if !cl.Net.Inline && !cl.Closed() {
			ids = append(ids, id)
		}
	}
	return ids
}
