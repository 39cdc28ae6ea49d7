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
//
// A clustered broker's pod may not start again (a scale-in), so its
// persistent sessions go to the other pods: the offline ones first (other
// pods adopt them, up to half the period), then each client's as it logs
// in elsewhere, and at the end those whose clients did not come back.
func (b *Broker) Drain(ctx context.Context, period time.Duration) {
	deadline := time.Now().Add(period)
	// A login admitted before this (its session perhaps pulled from another
	// pod meanwhile) is in the client list once the lock is ours, or
	// joins it moments later (the late round below).
	b.admitting.Lock()
	again := b.draining.Swap(true)
	b.admitting.Unlock()
	if again {
		return
	}
	for _, l := range b.listeners {
		if s, ok := l.(stopAccepting); ok {
			s.StopAccepting()
		}
	}
	if b.cluster != nil {
		b.cluster.SetDraining()
		first := ctx
		if period > 0 {
			var cancel context.CancelFunc
			first, cancel = context.WithDeadline(ctx, time.Now().Add(period/2))
			defer cancel()
		}
		if moved, left := b.cluster.HandOver(first); moved+left > 0 {
			b.log.Info("handed offline persistent sessions over to other pods", "moved", moved, "left", left)
		}
	}
	clients := b.connected()
	b.log.Info("draining", "clients", len(clients), "period", period.String())
	var sent []string // the client IDs sent elsewhere
	if len(clients) > 0 {
		step := max(0, time.Until(deadline)) / time.Duration(len(clients)+1)
		for _, id := range clients {
			if cl, ok := b.server.Clients.Get(id); ok && !cl.Closed() {
				_ = b.server.DisconnectClient(cl, packets.ErrUseAnotherServer)
				sent = append(sent, id)
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
				sent = append(sent, id)
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	if b.cluster != nil {
		b.awaitMoves(ctx, sent, deadline)
		moved, left := b.cluster.HandOver(ctx)
		if moved > 0 {
			b.log.Info("handed the sessions of clients that did not come back over to other pods", "moved", moved)
		}
		if left > 0 {
			b.log.Warn("persistent sessions no other pod adopted end with this pod", "sessions", left)
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

// awaitMoves waits, until deadline, for the persistent sessions of the
// clients sent elsewhere to leave: each client's login on another pod pulls
// its session from this one, which must still be there to hand it over.
// Those still here then are handed over (Drain).
func (b *Broker) awaitMoves(ctx context.Context, ids []string, deadline time.Time) {
	left := func() int {
		n := 0
		for _, id := range ids {
			if _, ok := b.server.Clients.Get(id); ok {
				n++
			}
		}
		return n
	}
	for n := left(); n > 0; n = left() {
		if time.Now().After(deadline) {
			b.log.Info("drain period over with persistent sessions whose clients did not log in elsewhere", "sessions", n)
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(20 * time.Millisecond):
		}
	}
}
