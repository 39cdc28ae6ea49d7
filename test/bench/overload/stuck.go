package main

import (
	"encoding/binary"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mqtt-operator/mqtt-operator/internal/brokerconfig"
	"github.com/mqtt-operator/mqtt-operator/test/bench/broker/mqttc"
	"github.com/mqtt-operator/mqtt-operator/test/bench/measure"
)

// stuckSubscribers measures what subscribers that stop reading cost: the
// broker's memory under a flood of large messages, and a paced publisher's
// rate and a reading subscriber's latency.
func stuckSubscribers(e *env, f *flags, out *report) error {
	if err := stuckMemory(e, f, out); err != nil {
		return err
	}
	base, err := pacedRun(e, f, 0)
	if err != nil {
		return err
	}
	with, err := pacedRun(e, f, f.ratioStuck)
	if err != nil {
		return err
	}
	logf("paced publisher, none stuck: %.0f msg/s, p99 %.1f ms; %d stuck: %.0f msg/s, p99 %.1f ms",
		base.rate, base.p99ms, f.ratioStuck, with.rate, with.p99ms)
	out.add("stuck_subscribers_publisher_ratio", "%.2f", with.rate/base.rate)
	out.add("stuck_subscribers_healthy_latency_ms_p99", "%.1f", with.p99ms)
	out.add("stuck_subscribers_healthy_latency_ms_p99_baseline", "%.1f", base.p99ms)
	out.add("stuck_subscribers_publisher_msgs_per_s", "%.0f", with.rate)
	out.add("stuck_subscribers_publisher_msgs_per_s_baseline", "%.0f", base.rate)
	// The mechanism: how long the publisher waited while the subscribers
	// were being judged stuck and after, and how often one was judged
	// stuck (once each while it stays stuck).
	out.add("stuck_subscribers_detection_wait_s", "%.2f", with.warmWaitS)
	out.add("stuck_subscribers_publisher_wait_s", "%.2f", with.waitedS)
	out.add("stuck_subscribers_judged_stuck", "%.0f", with.judged)
	return nil
}

// stuckClients logs n subscribers to benchFilter in that never read.
func stuckClients(b *broker, n int) ([]*mqttc.Conn, error) {
	conns := make([]*mqttc.Conn, 0, n)
	for i := range n {
		c, err := b.dial(fmt.Sprintf("stuck-%d", i), 4096, 4096)
		if err != nil {
			closeAll(conns)
			return nil, fmt.Errorf("stuck subscriber %d: %w", i, err)
		}
		conns = append(conns, c)
		if err := c.Subscribe(benchFilter, 0); err != nil {
			closeAll(conns)
			return nil, err
		}
	}
	return conns, nil
}

func closeAll(conns []*mqttc.Conn) {
	for _, c := range conns {
		_ = c.Close()
	}
}

// reader is a subscriber that reads all the time; it records the latency
// of messages whose payload starts with their send time in unix nanoseconds.
type reader struct {
	c     *mqttc.Conn
	count atomic.Int64
	mu    sync.Mutex
	lat   []float64 // milliseconds
	last  atomic.Int64
	done  chan struct{}
}

func newReader(b *broker, name string) (*reader, error) {
	c, err := b.dial(name, 256<<10, 0)
	if err != nil {
		return nil, err
	}
	if err := c.Subscribe(benchFilter, 0); err != nil {
		_ = c.Close()
		return nil, err
	}
	r := &reader{c: c, done: make(chan struct{})}
	go r.loop()
	return r, nil
}

func (r *reader) loop() {
	defer close(r.done)
	for {
		typ, _, body, err := r.c.ReadPacket()
		if err != nil {
			return
		}
		if typ != mqttc.PUBLISH {
			continue
		}
		now := time.Now().UnixNano()
		tl := int(binary.BigEndian.Uint16(body))
		if p := body[2+tl:]; len(p) >= 8 {
			r.mu.Lock()
			r.lat = append(r.lat, float64(now-int64(binary.BigEndian.Uint64(p)))/1e6)
			r.mu.Unlock()
		}
		r.last.Store(now)
		r.count.Add(1)
	}
}

// waitFor waits until the reader got n messages, or timeout.
func (r *reader) waitFor(n int64, timeout time.Duration) error {
	return measure.WaitFor(timeout, func() error {
		if got := r.count.Load(); got < n {
			return fmt.Errorf("the reading subscriber got %d of %d messages", got, n)
		}
		return nil
	})
}

// stuckMemory floods stuck subscribers with large messages and reports the
// broker's peak resident memory.
func stuckMemory(e *env, f *flags, out *report) error {
	b, err := e.start("rss", f.memoryLimit)
	if err != nil {
		return err
	}
	defer b.Stop()
	stuck, err := stuckClients(b, f.rssStuck)
	if err != nil {
		return err
	}
	defer closeAll(stuck)
	r, err := newReader(b, "reader")
	if err != nil {
		return err
	}
	defer r.c.Close()
	pub, err := b.dial("flood", 1<<20, 0)
	if err != nil {
		return err
	}
	defer pub.Close()
	payload := make([]byte, f.rssPayload)
	for range f.rssMessages {
		binary.BigEndian.PutUint64(payload, uint64(time.Now().UnixNano()))
		if err := pub.WritePublish(benchTopic, 0, 0, payload); err != nil {
			return fmt.Errorf("publishing the flood: %w", err)
		}
	}
	if err := pub.Flush(); err != nil {
		return err
	}
	if err := r.waitFor(int64(f.rssMessages), 120*time.Second); err != nil {
		return err
	}
	_, hwm, err := measure.Memory(b.PID())
	if err != nil {
		return err
	}
	disconnected, err := b.metric("mqtt_subscribers_disconnected_over_budget_total")
	if err != nil {
		return err
	}
	budget := (&brokerconfig.Limits{}).QueuedBytesTotal(f.memoryLimit)
	logf("%d stuck subscribers, %d messages of %d bytes: peak RSS %d MiB (container limit %d MiB, queue budget %d MiB), %0.f disconnected",
		f.rssStuck, f.rssMessages, f.rssPayload, hwm>>10, f.memoryLimit>>20, budget>>20, disconnected)
	out.add("stuck_subscribers_rss_mib", "%d", hwm>>10)
	out.add("stuck_subscribers_queue_budget_mib", "%d", budget>>20)
	out.add("stuck_subscribers_memory_limit_mib", "%d", f.memoryLimit>>20)
	out.add("stuck_subscribers_disconnected", "%.0f", disconnected)
	return nil
}

// stallSubscribers publishes messages of size bytes flat out until the n
// stuck subscribers are judged stuck (their socket buffers and queues are
// full, as a client that stopped reading long ago has them), and the
// reading subscriber got them all. It returns how many it sent and how
// long the publisher waited for subscribers meanwhile (the one-off cost of
// judging them).
func stallSubscribers(b *broker, pub *mqttc.Conn, r *reader, n, size int) (sent int, waited float64, err error) {
	if n == 0 {
		return 0, 0, nil
	}
	payload := make([]byte, size)
	deadline := time.Now().Add(120 * time.Second)
	for {
		judged, err := b.metric("mqtt_flow_slow_subscribers_total")
		if err != nil {
			return 0, 0, err
		}
		if int(judged) >= n {
			break
		}
		if time.Now().After(deadline) {
			return 0, 0, fmt.Errorf("only %.0f of %d stuck subscribers judged stuck after 120 s", judged, n)
		}
		for range 1000 {
			if err := pub.WritePublish(benchTopic, 0, 0, payload); err != nil {
				return 0, 0, fmt.Errorf("filling the stuck subscribers: %w", err)
			}
		}
		if err := pub.Flush(); err != nil {
			return 0, 0, err
		}
		sent += 1000
	}
	if err := r.waitFor(int64(sent), 60*time.Second); err != nil {
		return 0, 0, err
	}
	waited, err = b.metric("mqtt_flow_wait_seconds_total")
	logf("%d stuck: %d messages until all were judged stuck; the publisher waited %.2f s for them meanwhile", n, sent, waited)
	return sent, waited, err
}

// pacedResult is one paced run: the publisher's messages delivered per
// second at the reading subscriber, and that subscriber's p99 latency.
type pacedResult struct{ rate, p99ms, waitedS, judged, warmWaitS float64 }

// pacedRun publishes --rate messages a second for --duration to a reading
// subscriber, with stuck subscribers of the same messages.
func pacedRun(e *env, f *flags, stuckN int) (pacedResult, error) {
	b, err := e.start(fmt.Sprintf("paced-%d", stuckN), f.memoryLimit)
	if err != nil {
		return pacedResult{}, err
	}
	defer b.Stop()
	stuck, err := stuckClients(b, stuckN)
	if err != nil {
		return pacedResult{}, err
	}
	defer closeAll(stuck)
	r, err := newReader(b, "reader")
	if err != nil {
		return pacedResult{}, err
	}
	defer r.c.Close()
	pub, err := b.dial("paced", 256<<10, 0)
	if err != nil {
		return pacedResult{}, err
	}
	defer pub.Close()
	warmup, warmWait, err := stallSubscribers(b, pub, r, stuckN, f.payload)
	if err != nil {
		return pacedResult{}, err
	}
	r.mu.Lock()
	r.lat = r.lat[:0]
	r.mu.Unlock()
	total := int(float64(f.rate) * f.duration.Seconds())
	payload := make([]byte, f.payload)
	start := time.Now()
	const batch = 20
	for i := 0; i < total; i++ {
		if i%batch == 0 {
			if err := pub.Flush(); err != nil {
				return pacedResult{}, err
			}
			time.Sleep(time.Until(start.Add(time.Duration(i) * time.Second / time.Duration(f.rate))))
		}
		binary.BigEndian.PutUint64(payload, uint64(time.Now().UnixNano()))
		if err := pub.WritePublish(benchTopic, 0, 0, payload); err != nil {
			return pacedResult{}, fmt.Errorf("publishing: %w", err)
		}
	}
	if err := pub.Flush(); err != nil {
		return pacedResult{}, err
	}
	if err := r.waitFor(int64(warmup+total), f.duration+60*time.Second); err != nil {
		return pacedResult{}, err
	}
	elapsed := time.Unix(0, r.last.Load()).Sub(start)
	waited, err := b.metric("mqtt_flow_wait_seconds_total")
	if err != nil {
		return pacedResult{}, err
	}
	waited -= warmWait
	judged, err := b.metric("mqtt_flow_slow_subscribers_total")
	if err != nil {
		return pacedResult{}, err
	}
	cpu := measure.CPUSeconds(b.PID())
	logf("%d stuck: the publisher waited %.2f s for subscribers while they got stuck, %.2f s after; %0.f times a subscriber was judged stuck, broker CPU %.1f s",
		stuckN, warmWait, waited, judged, cpu)
	r.mu.Lock()
	defer r.mu.Unlock()
	slices.Sort(r.lat)
	return pacedResult{rate: float64(total) / elapsed.Seconds(), p99ms: measure.Percentile(r.lat, 0.99), waitedS: waited, judged: judged, warmWaitS: warmWait}, nil
}
