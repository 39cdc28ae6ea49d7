package broker

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// MaxShedPeriod bounds the period a shed may be spread over; the operator
// asks for a few seconds at a time.
const MaxShedPeriod = 10 * time.Minute

var (
	// ErrDraining: the pod is draining and sends every client elsewhere
	// already.
	ErrDraining = errors.New("this pod is draining: it sends all its clients elsewhere already")
	// ErrShedding: a shed asked for earlier is still under way.
	ErrShedding = errors.New("this pod is still moving the clients it was asked to move before")
)

// Shed moves up to n of this pod's clients to other pods, to even out the
// load after a scale-out: long-lived MQTT connections stay where they are,
// so new pods would sit idle. The oldest connections go first (the newest
// may have just moved here), spread evenly over period, each told to use
// another server (0x9C; an MQTT 3.1.1 client has its connection closed).
// Unlike a drain the pod keeps accepting: a client reconnects through the
// Service, which may send it back here; the operator looks again and asks
// for more until the pods are even. A persistent session follows its client
// to the pod it logs in on.
//
// It returns how many clients it is moving; the moves happen after it
// returns. One shed at a time, none while draining.
func (b *Broker) Shed(n int, period time.Duration) (int, error) {
	if n < 1 || period < 0 || period > MaxShedPeriod {
		return 0, fmt.Errorf("clients must be at least 1 and the period between 0 and %s (got %d over %s)", MaxShedPeriod, n, period)
	}
	if b.draining.Load() {
		return 0, ErrDraining
	}
	if !b.shedding.CompareAndSwap(false, true) {
		return 0, ErrShedding
	}
	ids := b.oldestConnected(n)
	if len(ids) == 0 {
		b.shedding.Store(false)
		return 0, nil
	}
	b.log.Info("moving clients to other pods to even out the load", "clients", len(ids), "period", period.String())
	go b.shed(ids, period)
	return len(ids), nil
}

func (b *Broker) shed(ids []string, period time.Duration) {
	defer b.shedding.Store(false)
	step := period / time.Duration(len(ids))
	moved := 0
	for i, id := range ids {
		if b.draining.Load() {
			break // the drain sends every client elsewhere
		}
		if cl, ok := b.server.Clients.Get(id); ok && !cl.Closed() && !cl.Net.Inline {
			_ = b.server.DisconnectClient(cl, packets.ErrUseAnotherServer)
			b.shedTotal.Add(1)
			moved++
		}
		if i < len(ids)-1 && step > 0 {
			time.Sleep(step)
		}
	}
	b.log.Info("moved clients to other pods to even out the load", "clients", moved)
}

// oldestConnected lists the client IDs of up to n live network
// connections, the longest connected first.
func (b *Broker) oldestConnected(n int) []string {
	type conn struct {
		id    string
		since time.Time
	}
	var conns []conn
	for id, cl := range b.server.Clients.GetAll() {
		if cl.Net.Inline || cl.Closed() {
			continue
		}
		since, ok := b.Policy.ConnectedAt(cl)
		if !ok {
			continue // not logged in yet, or ending
		}
		conns = append(conns, conn{id, since})
	}
	slices.SortFunc(conns, func(a, b conn) int { return a.since.Compare(b.since) })
	ids := make([]string, 0, min(n, len(conns)))
	for _, c := range conns[:min(n, len(conns))] {
		ids = append(ids, c.id)
	}
	return ids
}

// Clients is the number of live network connections logged in on this pod.
func (b *Broker) Clients() int {
	n := 0
	for _, cl := range b.server.Clients.GetAll() {
		if !cl.Net.Inline && !cl.Closed() {
			n++
		}
	}
	return n
}
