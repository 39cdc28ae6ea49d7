package main

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mqtt-operator/mqtt-operator/test/bench/broker/mqttc"
	"github.com/mqtt-operator/mqtt-operator/test/bench/measure"
)

type stormResult struct {
	cycles, failures int64
	elapsed          time.Duration
	brokerCPU        float64
}

// authStorm runs n CONNECT/CONNACK/DISCONNECT cycles against t from
// concurrency workers, worker w logging in as the w-th benchmark user (so
// with credentials each cycle is a real password check). A warm-up of
// `warmup` cycles first lets every worker's credentials reach our broker's
// verified-credential cache, as they would in a reconnect storm of known
// devices.
func authStorm(t *target, n, warmup, concurrency int, label string) (stormResult, error) {
	if _, err := stormCycles(t, warmup, concurrency, label+"-warm"); err != nil {
		return stormResult{}, fmt.Errorf("warm-up: %w", err)
	}
	cpu0 := measure.CPUSeconds(t.PID())
	res, err := stormCycles(t, n, concurrency, label)
	res.brokerCPU = measure.CPUSeconds(t.PID()) - cpu0
	return res, err
}

func stormCycles(t *target, n, concurrency int, label string) (stormResult, error) {
	var next, failures atomic.Int64
	var firstErr atomic.Pointer[error]
	var wg sync.WaitGroup
	t0 := time.Now()
	for w := range concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= int64(n) {
					return
				}
				c, err := mqttc.Dial(t.addr, t.options(w, fmt.Sprintf("%s-%d-%d", label, w, i), 60, 256))
				if err == nil {
					err = c.Disconnect()
				}
				if err != nil {
					failures.Add(1)
					firstErr.CompareAndSwap(nil, &err)
				}
			}
		}()
	}
	wg.Wait()
	res := stormResult{cycles: int64(n), failures: failures.Load(), elapsed: time.Since(t0)}
	if e := firstErr.Load(); e != nil {
		if err := t.Alive(); err != nil {
			return res, err
		}
		if res.failures*100 > int64(n) { // more than 1%: not a measurement
			return res, fmt.Errorf("%d of %d cycles failed, first: %w", res.failures, n, *e)
		}
	}
	return res, nil
}

// stormPhase measures reconnect storms: ours with generated-password users
// (cached after the warm-up), mosquitto with a password file, and plain
// mochi with no authentication at all as the floor.
func stormPhase(s *setup, f *flags, out *report) error {
	logf("storm: %d CONNECT/CONNACK/DISCONNECT cycles, %d concurrent, after %d warm-up cycles", f.storm, f.stormConc, f.stormWarmup)
	starters := []struct {
		name, suffix string
		start        func() (*target, error)
	}{
		{ours, "", func() (*target, error) { return s.startOurs(ours+"-storm", smallBundle(s.users, 1)) }},
		{mosquitto, "_mosquitto", func() (*target, error) { return s.startMosquitto(mosquitto+"-storm", true) }},
		{mochi, "_mochi_noauth", func() (*target, error) { return s.startMochi(mochi + "-storm") }},
	}
	for _, st := range starters {
		t, err := st.start()
		if err != nil {
			return err
		}
		res, err := authStorm(t, f.storm, f.stormWarmup, f.stormConc, "storm")
		if err == nil && st.name == ours {
			var m promSamples
			if m, err = scrapeMetrics(t.healthAddr); err == nil {
				hits, _ := m.Sum("mqtt_auth_cache_hits_total")
				okTotal, _ := m.Sum("mqtt_auth_total", `result="success"`)
				out.add("ours_storm_auth_success_total", "%.0f", okTotal)
				out.add("ours_storm_auth_cache_hits_total", "%.0f", hits)
			}
		}
		t.Stop()
		if err != nil {
			return fmt.Errorf("%s storm: %w", st.name, err)
		}
		logf("storm %-9s %d cycles in %v (%.0f/s), %d failed, broker cpu %.2fs",
			st.name, res.cycles, res.elapsed.Round(1e6), float64(res.cycles)/res.elapsed.Seconds(), res.failures, res.brokerCPU)
		out.add("auth_storm_10k_reconnects_s"+st.suffix, "%.2f", res.elapsed.Seconds())
		if st.name == ours {
			out.add("auth_storm_10k_reconnects_s_ours", "%.2f", res.elapsed.Seconds())
		}
		out.add("auth_storm_failures"+st.suffix, "%d", res.failures)
	}
	return nil
}
