package main

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mqtt-operator/mqtt-operator/test/bench/broker/mqttc"
	"github.com/mqtt-operator/mqtt-operator/test/bench/measure"
)

// scenario is one throughput measurement shape.
type scenario struct {
	qos    byte
	fanOut bool // false: N publishers -> 1 subscriber; true: 1 publisher -> N subscribers
	// batchAck gives subscribers a 256 KiB read buffer, so each read, and
	// the one write of PUBACKs that follows it, covers hundreds of messages.
	batchAck bool
}

func (s scenario) String() string {
	p := "fanin"
	if s.fanOut {
		p = "fanout"
	}
	if s.batchAck {
		p += "_batchack"
	}
	return fmt.Sprintf("qos%d_%s", s.qos, p)
}

type loadConfig struct {
	clients   int // publishers of fan-in, subscribers of fan-out
	msgs      int // per publisher
	payload   int
	window    int // QoS 1 messages in flight per publisher
	timeout   time.Duration
	quietStop time.Duration // stop this long after the last delivery once publishing is over
}

// result of one run. elapsed runs from the moment the publishers are let go
// to the last delivery.
type result struct {
	delivered, expected int64
	elapsed             time.Duration
	brokerCPU, genCPU   float64 // seconds
	note                string
}

func (r result) rate() float64 {
	if r.elapsed <= 0 {
		return 0
	}
	return float64(r.delivered) / r.elapsed.Seconds()
}

// subscriber counts the PUBLISH packets it receives and acknowledges QoS 1
// ones in batches: it flushes its PUBACKs whenever its read buffer runs dry.
type subscriber struct {
	c         *mqttc.Conn
	count     atomic.Int64
	lastNanos atomic.Int64
	done      chan struct{}
}

func (s *subscriber) loop() {
	defer close(s.done)
	pending := false
	for {
		if pending && s.c.Buffered() == 0 {
			if s.c.Flush() != nil {
				return
			}
			pending = false
		}
		typ, flags, body, err := s.c.ReadPacket()
		if err != nil {
			return
		}
		if typ != mqttc.PUBLISH {
			continue
		}
		s.count.Add(1)
		s.lastNanos.Store(time.Now().UnixNano())
		if id, ok := mqttc.PublishID(flags, body); ok {
			_ = s.c.WritePuback(id)
			pending = true
		}
	}
}

// stop ends the read loop (a past deadline wakes the blocked read) and
// disconnects.
func (s *subscriber) stop() {
	_ = s.c.SetReadDeadline(time.Now())
	<-s.done
	_ = s.c.Disconnect()
}

// publisher sends msgs messages to topic. At QoS 1 at most window are
// unacknowledged; when the window is full it flushes and waits until half
// of it is acknowledged, so writes go out in batches, not one per syscall.
type publisher struct {
	c        *mqttc.Conn
	topic    string
	qos      byte
	msgs     int
	window   int32
	inflight atomic.Int32
	acked    atomic.Int64
	wake     chan struct{}
	allAcked chan struct{}
	err      error
}

func (p *publisher) ackLoop() {
	half := p.window / 2
	closed := false
	for {
		typ, _, _, err := p.c.ReadPacket()
		if err != nil {
			if !closed {
				close(p.allAcked) // the writer must not wait forever
			}
			return
		}
		if typ != mqttc.PUBACK {
			continue
		}
		if p.inflight.Add(-1) == half {
			select {
			case p.wake <- struct{}{}:
			default:
			}
		}
		if p.acked.Add(1) == int64(p.msgs) && !closed {
			closed = true
			close(p.allAcked)
		}
	}
}

func (p *publisher) run(start <-chan struct{}, payload []byte) {
	<-start
	var id uint16
	for range p.msgs {
		if p.qos > 0 {
			if p.inflight.Load() >= p.window {
				if p.err = p.c.Flush(); p.err != nil {
					return
				}
				for p.inflight.Load() > p.window/2 {
					select {
					case <-p.wake:
					case <-p.allAcked:
						p.err = errors.New("connection lost while waiting for PUBACKs")
						return
					}
				}
			}
			p.inflight.Add(1)
			id = mqttc.NextID(id)
		}
		if p.err = p.c.WritePublish(p.topic, p.qos, id, payload); p.err != nil {
			return
		}
	}
	if p.err = p.c.Flush(); p.err != nil {
		return
	}
	if p.qos > 0 {
		<-p.allAcked
		if p.acked.Load() < int64(p.msgs) {
			p.err = fmt.Errorf("%d of %d PUBACKs before the connection ended", p.acked.Load(), p.msgs)
		}
	}
}

// runLoad runs one scenario once against t. run makes client IDs unique.
func runLoad(t *target, sc scenario, cfg loadConfig, run int) (result, error) {
	on := func(int) *target { return t }
	return runLoadAt(placement{pub: on, sub: on}, sc, cfg, run)
}

// placement says which broker (pod of a cluster) the i-th publisher and
// the i-th subscriber of a run connect to.
type placement struct{ pub, sub func(i int) *target }

// brokers are the distinct brokers of the first n publishers and
// subscribers.
func (pl placement) brokers(nPub, nSub int) []*target {
	var out []*target
	add := func(t *target) {
		if !slices.Contains(out, t) {
			out = append(out, t)
		}
	}
	for i := range nPub {
		add(pl.pub(i))
	}
	for i := range nSub {
		add(pl.sub(i))
	}
	return out
}

// runLoadAt runs one scenario once with its clients placed by pl; the
// broker CPU of the result is that of every broker involved.
func runLoadAt(pl placement, sc scenario, cfg loadConfig, run int) (result, error) {
	nPub, nSub := cfg.clients, 1
	if sc.fanOut {
		nPub, nSub = 1, cfg.clients
	}
	id := func(role string, i int) string { return fmt.Sprintf("%s-r%d-%s%d", sc, run, role, i) }
	// Credentials: publisher i logs in as user i, subscriber i as user 50+i.
	var subs []*subscriber
	var pubs []*publisher
	cleanup := func() {
		for _, s := range subs {
			s.stop()
		}
		for _, p := range pubs {
			_ = p.c.Close()
		}
	}
	readBuffer := 64 << 10
	if sc.batchAck {
		readBuffer = 256 << 10
	}
	for i := range nSub {
		t := pl.sub(i)
		c, err := mqttc.Dial(t.addr, t.options(50+i, id("sub", i), 60, readBuffer))
		if err != nil {
			cleanup()
			return result{}, fmt.Errorf("subscriber %d: %w", i, err)
		}
		filter := fanInFilter
		if sc.fanOut {
			filter = fanOutTopic
		}
		if err := c.Subscribe(filter, sc.qos); err != nil {
			_ = c.Close()
			cleanup()
			return result{}, err
		}
		s := &subscriber{c: c, done: make(chan struct{})}
		subs = append(subs, s)
		go s.loop()
	}
	for i := range nPub {
		t := pl.pub(i)
		opts := t.options(i, id("pub", i), 60, 64<<10)
		c, err := mqttc.Dial(t.addr, opts)
		if err != nil {
			cleanup()
			return result{}, fmt.Errorf("publisher %d: %w", i, err)
		}
		topic := fanOutTopic
		if !sc.fanOut {
			// Anonymous clients of the baselines get the same topic shape.
			name := opts.Username
			if name == "" {
				name = fmt.Sprintf("bench-%03d", i)
			}
			topic = fanInTopic(name)
		}
		p := &publisher{c: c, topic: topic, qos: sc.qos, msgs: cfg.msgs, window: int32(cfg.window),
			wake: make(chan struct{}, 1), allAcked: make(chan struct{})}
		pubs = append(pubs, p)
		if sc.qos > 0 {
			go p.ackLoop()
		}
	}
	defer cleanup()

	expected := int64(cfg.msgs) * int64(cfg.clients)
	payload := make([]byte, cfg.payload)
	for i := range payload {
		payload[i] = byte('a' + i%26)
	}
	start := make(chan struct{})
	var wg sync.WaitGroup
	for _, p := range pubs {
		wg.Add(1)
		go func() { defer wg.Done(); p.run(start, payload) }()
	}
	pubsDone := make(chan struct{})
	go func() { wg.Wait(); close(pubsDone) }()

	involved := pl.brokers(nPub, nSub)
	brokerCPU := func() (sum float64) {
		for _, t := range involved {
			sum += measure.CPUSeconds(t.PID())
		}
		return sum
	}
	cpu0, gen0 := brokerCPU(), measure.SelfCPUSeconds()
	t0 := time.Now()
	close(start)
	var res result
	res.expected = expected
	delivered := func() (n int64, last int64) {
		for _, s := range subs {
			n += s.count.Load()
			if l := s.lastNanos.Load(); l > last {
				last = l
			}
		}
		return n, last
	}
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	published := false
	var publishedAt time.Time
	for {
		<-tick.C
		n, last := delivered()
		if n >= expected {
			break
		}
		if !published {
			select {
			case <-pubsDone:
				published, publishedAt = true, time.Now()
			default:
			}
		}
		lastAt := time.Unix(0, last)
		if published && time.Since(publishedAt) > cfg.quietStop && time.Since(lastAt) > cfg.quietStop {
			res.note = "publishing finished, deliveries stopped short"
			break
		}
		if time.Since(t0) > cfg.timeout {
			res.note = fmt.Sprintf("timed out after %v", cfg.timeout)
			break
		}
		for _, t := range involved {
			if err := t.Alive(); err != nil {
				return result{}, err
			}
		}
	}
	n, last := delivered()
	res.delivered = n
	if n > 0 {
		res.elapsed = time.Unix(0, last).Sub(t0)
	}
	res.brokerCPU, res.genCPU = brokerCPU()-cpu0, measure.SelfCPUSeconds()-gen0
	// Everything may be delivered before the last PUBACKs reach the
	// publishers; give them a moment, then unblock any that still write or wait.
	select {
	case <-pubsDone:
	case <-time.After(cfg.quietStop):
		for _, p := range pubs {
			_ = p.c.Close()
		}
		<-pubsDone
	}
	if res.delivered < res.expected {
		for i, p := range pubs {
			if p.err != nil && !errors.Is(p.err, net.ErrClosed) {
				res.note += fmt.Sprintf("; publisher %d: %v", i, p.err)
			}
		}
	}
	return res, nil
}
