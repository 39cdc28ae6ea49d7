package main

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/mqtt-operator/mqtt-operator/test/bench/broker/mqttc"
)

type idleResult struct {
	conns                   int
	before, after           int64 // KiB
	connectTime, settleTime time.Duration
}

func (r idleResult) perConn() float64 {
	if r.conns == 0 {
		return 0
	}
	return float64(r.after-r.before) / float64(r.conns)
}

// measureIdle opens n clients that each CONNECT (keepalive 300 s) and
// SUBSCRIBE to a topic of their own, then compares the broker's resident
// memory with what it was before. t must be freshly started. atPeak, if
// set, runs while all clients are still connected.
func measureIdle(t *target, n, concurrency int, atPeak func()) (res idleResult, err error) {
	time.Sleep(time.Second) // let start-up allocations settle
	if res.before, err = rssKiB(t.PID()); err != nil {
		return res, err
	}
	conns := make([]*mqttc.Conn, n)
	defer func() {
		closeAll(conns)
	}()
	t0 := time.Now()
	err = forEach(n, concurrency, func(i int) error {
		id := fmt.Sprintf("idle-%05d", i)
		c, err := mqttc.Dial(t.addr, t.options(i, id, 300, 256))
		if err == nil {
			if err = c.Subscribe(idleTopic(id), 1); err != nil {
				_ = c.Close()
			}
		}
		if err != nil {
			return fmt.Errorf("idle client %d: %w", i, err)
		}
		c.Shrink()
		conns[i] = c
		return nil
	})
	res.connectTime = time.Since(t0)
	if err != nil {
		return res, err
	}
	if err := t.Alive(); err != nil {
		return res, err
	}
	res.conns = n

	// Every SUBACK has arrived; wait for the resident size to stop moving
	// (three samples 250 ms apart within 0.5%), at most 10 s.
	t1 := time.Now()
	var samples []int64
	for time.Since(t1) < 10*time.Second {
		rss, err := rssKiB(t.PID())
		if err != nil {
			return res, err
		}
		samples = append(samples, rss)
		if k := len(samples); k >= 3 {
			lo, hi := min(samples[k-1], samples[k-2], samples[k-3]), max(samples[k-1], samples[k-2], samples[k-3])
			if float64(hi-lo) <= 0.005*float64(hi) {
				break
			}
		}
		time.Sleep(250 * time.Millisecond)
	}
	res.after = samples[len(samples)-1]
	res.settleTime = time.Since(t1)

	// Prove the connections are alive, not half-closed by the broker: a
	// round trip on a sample of them.
	for range 50 {
		c := conns[rand.IntN(n)]
		if err := c.Ping(5 * time.Second); err != nil {
			return res, fmt.Errorf("idle connection no longer answers: %w", err)
		}
	}
	if atPeak != nil {
		atPeak()
	}
	return res, nil
}

func closeAll(conns []*mqttc.Conn) {
	var wg sync.WaitGroup
	const workers = 16
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < len(conns); i += workers {
				if conns[i] != nil {
					_ = conns[i].Close()
				}
			}
		}()
	}
	wg.Wait()
}

// idlePhase starts each broker afresh and measures its memory per idle client.
func idlePhase(s *setup, f *flags, out *report) error {
	logf("idle: %d connected and subscribed clients per broker", f.idleConns)
	starters := []struct {
		name  string
		start func() (*target, error)
	}{
		{ours, func() (*target, error) { return s.startOurs(ours+"-idle", smallBundle(s.users, 1)) }},
		{mochi, func() (*target, error) { return s.startMochi(mochi + "-idle") }},
		{mosquitto, func() (*target, error) { return s.startMosquitto(mosquitto+"-idle", false) }},
	}
	for _, st := range starters {
		t, err := st.start()
		if err != nil {
			return err
		}
		// For ours, the Go runtime's view too: heap and goroutines per client.
		var before, after promSamples
		var atPeak func()
		if st.name == ours {
			before, _ = scrapeMetrics(t.healthAddr)
			atPeak = func() { after, _ = scrapeMetrics(t.healthAddr) }
		}
		res, err := measureIdle(t, f.idleConns, f.idleConcurrency, atPeak)
		t.Stop()
		if err != nil {
			return fmt.Errorf("%s idle: %w", st.name, err)
		}
		logf("idle %-9s rss %d KiB -> %d KiB for %d clients: %.1f KiB each (connected in %v, settled in %v)",
			st.name, res.before, res.after, res.conns, res.perConn(), res.connectTime.Round(1e6), res.settleTime.Round(1e6))
		if st.name == ours {
			out.add("rss_kib_per_idle_conn", "%.1f", res.perConn())
			if before != nil && after != nil && res.conns > 0 {
				perConn := func(metric string, scale float64) float64 {
					b, _ := before.Sum(metric)
					a, _ := after.Sum(metric)
					return (a - b) / scale / float64(res.conns)
				}
				out.add("ours_idle_heap_inuse_kib_per_conn", "%.1f", perConn("go_memstats_heap_inuse_bytes", 1024))
				out.add("ours_idle_stack_inuse_kib_per_conn", "%.1f", perConn("go_memstats_stack_inuse_bytes", 1024))
				out.add("ours_idle_goroutines_per_conn", "%.2f", perConn("go_goroutines", 1))
			}
		}
		out.add("rss_kib_per_idle_conn_"+st.name, "%.1f", res.perConn())
	}
	return nil
}
