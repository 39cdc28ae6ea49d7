package cluster

import (
	"sync"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// Pipelined acknowledgements of QoS 1 messages sent to other pods.
//
// mochi handles a client's packets one at a time and writes the PUBACK of a
// QoS 1 PUBLISH as soon as OnPublish returns. Waiting there for the other
// pods' answers held the publisher's next message for a round trip between
// pods: a publisher with 64 messages in flight still got one acknowledged
// per round trip (cross-pod QoS 1 ran at a tenth of same-pod).
//
// So OnPublish sends the message to the pods and lets mochi go on: it
// delivers the message to this pod's subscribers and reads the next
// packet. The client's connection takes mochi's PUBACK out of the stream
// (Node.HoldPuback, the guard's), and the bridge writes the PUBACK itself
// once every pod answered: still only then, and in the order the messages
// came ([MQTT-4.6.0-2]), so a QoS 1 message is acknowledged end to end as
// before. What a refusal does is unchanged too: an MQTT 5 publisher gets
// PUBACK 0x80, an MQTT 3.1.1 one is disconnected without the PUBACK and
// sends the message again (this pod's subscribers may then get it twice,
// which QoS 1 allows).
//
// QoS 2 and retained messages keep waiting in OnPublish: a PUBREC held
// back would need mochi's inflight record of it held back too, and a
// retained message's stamp decides what mochi stores (retained.go).

// heldAck is one PUBACK the bridge owes a publisher.
type heldAck struct {
	id    uint16
	f     *sent // what the pods answer; nil when err is the answer
	err   error
	taken <-chan struct{} // mochi's own PUBACK is out of the stream
}

// ackQueue is one publisher's owed PUBACKs, oldest first. Its writer
// goroutine runs while any is owed.
type ackQueue struct {
	cl      *mqtt.Client
	mu      sync.Mutex
	q       []*heldAck
	running bool
	room    chan struct{} // a PUBACK went out; see reserve
}

// maxHeldAcks bounds the PUBACKs owed to one publisher: the server's Receive
// Maximum, which a client may not exceed. One that does (or an MQTT 3.1.1
// client, which has no such limit) waits in OnPublish for room, which holds
// its reading back as mochi's own flow control would.
func (b *bridge) maxHeldAcks() int {
	if r := int(b.n.mq.Options.Capabilities.ReceiveMaximum); r > 0 {
		return r
	}
	return 1024
}

// queueOf returns cl's queue; create makes one if it has none.
func (b *bridge) queueOf(cl *mqtt.Client, create bool) *ackQueue {
	if q, ok := b.held.Load(cl); ok {
		return q.(*ackQueue)
	}
	if !create {
		return nil
	}
	q, _ := b.held.LoadOrStore(cl, &ackQueue{cl: cl, room: make(chan struct{}, 1)})
	return q.(*ackQueue)
}

// owes reports whether the bridge owes cl a PUBACK, and one for packet id.
func (b *bridge) owes(cl *mqtt.Client, id uint16) (any, forID bool) {
	q := b.queueOf(cl, false)
	if q == nil {
		return false, false
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, e := range q.q {
		if e.id == id {
			return true, true
		}
	}
	return len(q.q) > 0, false
}

// pipelined reports whether cl's QoS 1 messages may be acknowledged by the
// bridge: its connection can hold mochi's PUBACKs back.
func (b *bridge) pipelined(cl *mqtt.Client, pk packets.Packet) bool {
	return pk.FixedHeader.Qos == 1 && !cl.Net.Inline &&
		b.n.HoldPuback != nil && cl.Net.Conn != nil
}

// owe queues the PUBACK of packet id for cl. With hold, mochi is about to
// write its own (OnPublish lets the message through), which the connection
// takes out; without, mochi writes none (the message was refused).
func (b *bridge) owe(cl *mqtt.Client, id uint16, f *sent, err error, hold bool) {
	q := b.queueOf(cl, true)
	b.reserve(q)
	e := &heldAck{id: id, f: f, err: err}
	if hold {
		taken, ok := b.n.HoldPuback(cl.Net.Conn, id)
		if !ok {
			// Checked by pipelined; should the connection be of another
			// kind, mochi's PUBACK goes out now, which is what waiting
			// for the answer first would have given, minus the wait.
			if f != nil {
				_ = f.wait()
			}
			return
		}
		e.taken = taken
	} else {
		done := make(chan struct{})
		close(done)
		e.taken = done
	}
	q.mu.Lock()
	q.q = append(q.q, e)
	start := !q.running
	q.running = true
	q.mu.Unlock()
	if start {
		go b.writeAcks(q)
	}
}

// reserve waits until q has room for one more PUBACK.
func (b *bridge) reserve(q *ackQueue) {
	limit := b.maxHeldAcks()
	for {
		q.mu.Lock()
		n := len(q.q)
		q.mu.Unlock()
		if n < limit {
			return
		}
		select {
		case <-q.room:
		case <-b.closed:
			return
		}
	}
}

// maxAckBatch bounds the PUBACKs written in one go.
const maxAckBatch = 64

// writeAcks writes q's PUBACKs in order as their answers come, and ends
// when none is owed. The PUBACKs whose answers are already in go out
// together, in one write: a write per PUBACK cost the publisher's pod more
// CPU (a system call each) than the rest of the forward.
func (b *bridge) writeAcks(q *ackQueue) {
	var batch []byte
	for {
		q.mu.Lock()
		if len(q.q) == 0 {
			q.running = false
			q.q = nil
			q.mu.Unlock()
			return
		}
		e := q.q[0]
		q.mu.Unlock()
		<-e.taken
		err := e.err
		if e.f != nil {
			err = e.f.wait()
		}
		n := 1
		if err != nil {
			b.acknowledge(q.cl, e.id, err)
		} else {
			batch = appendPuback(batch[:0], e.id)
			q.mu.Lock()
			for n < len(q.q) && n < maxAckBatch && q.q[n].ready() {
				batch = appendPuback(batch, q.q[n].id)
				n++
			}
			q.mu.Unlock()
			b.writeRaw(q.cl, batch)
		}
		// Written before they leave the queue: a copy sent again until
		// then is known as one (OnPublish).
		q.mu.Lock()
		clear(q.q[:n])
		q.q = q.q[n:]
		q.mu.Unlock()
		select {
		case q.room <- struct{}{}:
		default:
		}
	}
}

// ready reports, without waiting, whether e is a PUBACK to write now:
// mochi's own is out of the stream and every pod took the message.
func (e *heldAck) ready() bool {
	select {
	case <-e.taken:
	default:
		return false
	}
	if e.err != nil {
		return false
	}
	if e.f == nil {
		return true
	}
	err, ok := e.f.poll()
	return ok && err == nil
}

// appendPuback appends a successful PUBACK of packet id: the same four
// bytes in MQTT 3.1.1 and 5 (reason 0x00 without properties is left out).
func appendPuback(b []byte, id uint16) []byte {
	return append(b, packets.Puback<<4, 2, byte(id>>8), byte(id))
}

// writeRaw writes whole packets to cl's connection. mochi already counted
// them, and ran its hooks, when it wrote the PUBACKs the connection took
// out; the connection orders this write with mochi's own.
func (b *bridge) writeRaw(cl *mqtt.Client, p []byte) {
	if cl.Closed() || cl.Net.Conn == nil {
		return
	}
	if _, err := cl.Net.Conn.Write(p); err != nil {
		b.n.log.Debug("cluster: could not write acknowledgements", "clientId", cl.ID, "error", err.Error())
	}
}

// acknowledge writes the PUBACK of packet id, or refuses the message.
func (b *bridge) acknowledge(cl *mqtt.Client, id uint16, err error) {
	if cl.Closed() {
		return
	}
	if err == nil {
		_ = cl.WritePacket(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: id})
		return
	}
	b.refuse(cl, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback, Qos: 1}, PacketID: id}, err)
}

// refuse tells the publisher of pk that not every pod took it: an MQTT 5
// publisher gets 0x80 in its PUBACK/PUBREC, an MQTT 3.1.1 one (whose
// acknowledgements carry no error) is disconnected, so it sends the message
// again.
func (b *bridge) refuse(cl *mqtt.Client, pk packets.Packet, err error) {
	b.n.log.Info("refused a message not every pod with subscribers took", "clientId", cl.ID, "qos", pk.FixedHeader.Qos, "reason", err.Error())
	if cl.Properties.ProtocolVersion == 5 {
		ack := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: pk.PacketID,
			ReasonCode: packets.ErrUnspecifiedError.Code, Properties: packets.Properties{ReasonString: "not every broker pod with subscribers took the message; publish it again"}}
		if pk.FixedHeader.Qos == 2 {
			ack.FixedHeader.Type = packets.Pubrec
		}
		_ = cl.WritePacket(ack)
		return
	}
	_ = b.n.mq.DisconnectClient(cl, packets.ErrUnspecifiedError)
}

// forget drops cl's queue once its connection ended; a writer still
// running finishes on its own (its writes fail).
func (b *bridge) forget(cl *mqtt.Client) { b.held.Delete(cl) }
