package main

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mqtt-operator/mqtt-operator/test/bench/broker/mqttc"
)

// forEach runs fn(0..n-1) on concurrency goroutines and returns the first
// error (the others stop taking work then).
func forEach(n, concurrency int, fn func(i int) error) error {
	var next atomic.Int64
	var first error
	var once sync.Once
	var wg sync.WaitGroup
	for range min(n, max(1, concurrency)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := fn(i); err != nil {
					once.Do(func() { first = err })
					next.Store(int64(n))
					return
				}
			}
		}()
	}
	wg.Wait()
	return first
}

// clusterHandover measures a scale-in's cost to persistent sessions: n
// clients with a persistent session on the last pod, each subscribed and
// away, each with one QoS 1 message queued; the pod is drained (SIGTERM, as
// Kubernetes does to a pod a scale-in removes); then every client logs in
// on the pods that stay and must find its session (session present) and
// its message. The pod is started again (empty storage) afterwards.
func clusterHandover(c *benchCluster, f *flags, out *report) error {
	n := f.clusterHandover
	last := len(c.pods) - 1
	pod := c.pods[last]
	id := func(i int) string { return fmt.Sprintf("handover-%05d", i) }
	topic := func(i int) string { return "bench/cluster/handover/" + strconv.Itoa(i) }

	logf("handover: %d persistent sessions on pod %d, subscribed and away", n, last)
	err := forEach(n, f.idleConcurrency, func(i int) error {
		o := pod.options(i, id(i), 60, 512)
		o.Persistent = true
		conn, err := mqttc.Dial(pod.addr, o)
		if err != nil {
			return fmt.Errorf("session %d: %w", i, err)
		}
		defer conn.Close()
		if err := conn.Subscribe(topic(i), 1); err != nil {
			return fmt.Errorf("session %d: %w", i, err)
		}
		return conn.Disconnect()
	})
	if err != nil {
		return err
	}
	pubConn, err := mqttc.Dial(c.pods[0].addr, c.pods[0].options(90, "handover-publisher", 60, 64<<10))
	if err != nil {
		return err
	}
	pub := newFloodPublisher(pubConn, topic, "queued-", n, 64)
	acks := make(chan struct{})
	go pub.ackLoop(acks)
	pub.run(64, nil)
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		pub.mu.Lock()
		done := len(pub.acked)
		pub.mu.Unlock()
		if done == n || pub.err != nil || time.Now().After(deadline) {
			break
		}
	}
	_ = pubConn.Close()
	<-acks
	if pub.err != nil {
		return fmt.Errorf("publishing the queued messages: %w", pub.err)
	}
	acked := map[int]bool{}
	for _, seq := range pub.acked {
		acked[seq] = true
	}

	took, byItself := pod.Drain(f.clusterDrain + 15*time.Second)
	if !byItself {
		return fmt.Errorf("pod %d did not end its drain within its period and 15 s", last)
	}
	rate := float64(n) / took.Seconds()
	logf("handover: pod %d drained in %v (%.0f sessions/s)", last, took.Round(time.Millisecond), rate)

	var sessionsLost, messagesLost atomic.Int64
	var reconnect []time.Duration
	var mu sync.Mutex
	err = forEach(n, f.idleConcurrency, func(i int) error {
		to := c.pods[i%last]
		o := to.options(i, id(i), 60, 4096)
		o.Persistent = true
		t0 := time.Now()
		conn, err := mqttc.Dial(to.addr, o)
		if err != nil {
			return fmt.Errorf("session %d back: %w", i, err)
		}
		mu.Lock()
		reconnect = append(reconnect, time.Since(t0))
		mu.Unlock()
		defer conn.Close()
		if !conn.SessionPresent {
			sessionsLost.Add(1)
		}
		if !acked[i] {
			return nil
		}
		want := []byte("queued-" + strconv.Itoa(i) + ".")
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		for {
			typ, flags, body, err := conn.ReadPacket()
			if err != nil {
				messagesLost.Add(1)
				return nil
			}
			if typ != mqttc.PUBLISH {
				continue
			}
			if id, ok := mqttc.PublishID(flags, body); ok {
				_ = conn.WritePuback(id)
				_ = conn.Flush()
			}
			if bytes.HasPrefix(mqttc.PublishPayload(flags, body), want) {
				return conn.Disconnect()
			}
		}
	})
	if err != nil {
		return err
	}
	p50, p99 := percentiles(reconnect)
	out.add("cluster_handover_sessions", "%d", n)
	out.add("cluster_handover_drain_ms", "%.0f", float64(took.Microseconds())/1000)
	out.add("sessions_handed_over_per_s", "%.0f", rate)
	out.add("scale_in_sessions_lost", "%d", sessionsLost.Load())
	out.add("scale_in_acknowledged_lost", "%d", messagesLost.Load())
	out.add("cluster_handover_resume_p50_us", "%.0f", p50)
	out.add("cluster_handover_resume_p99_us", "%.0f", p99)
	logf("handover: %d sessions back on the other pods: %d without their session, %d of %d acknowledged messages missing; resume p50 %.0f us p99 %.0f us",
		n, sessionsLost.Load(), messagesLost.Load(), len(acked), p50, p99)

	if err := os.RemoveAll(c.dirs[last]); err != nil {
		return err
	}
	if err := c.launch(last); err != nil {
		return err
	}
	return c.pods[last].waitUp()
}
