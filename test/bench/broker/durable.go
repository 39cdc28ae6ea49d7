package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/mqtt-operator/mqtt-operator/internal/brokerconfig"
)

// durablePhase measures what storage.durability Fsync costs: QoS 1 fan-in on
// our broker without persistence and with durable persistence (every QoS 1
// publish committed and fsynced before its PUBACK, group-committed across
// publishers), on the same machine and disk, alternating runs.
func durablePhase(s *setup, f *flags, out *report) error {
	dataDir := filepath.Join(s.dir, "durable-data")
	if err := os.MkdirAll(dataDir, 0o755); err != nil {
		return err
	}
	memT, err := s.startOursWithStorage("ours_memory", smallBundle(s.users, 1), brokerconfig.Storage{Path: s.dir})
	if err != nil {
		return err
	}
	defer memT.Stop()
	durT, err := s.startOursWithStorage("ours_durable", smallBundle(s.users, 1),
		brokerconfig.Storage{Path: dataDir, Persistent: true, Durable: true})
	if err != nil {
		return err
	}
	defer durT.Stop()
	sc := scenario{qos: 1}
	logf("durability: %d runs of QoS 1 fan-in, in memory vs fsync before PUBACK (data on %s)", f.runs, dataDir)
	results := map[string][]result{}
	for r := range f.runs {
		for _, t := range []*target{memT, durT} {
			res, err := runLoad(t, sc, f.load, r+1)
			if err != nil {
				return fmt.Errorf("%s: %w", t.Name, err)
			}
			results[t.Name] = append(results[t.Name], res)
			logf("run %d %-12s %9.0f msg/s delivered %d/%d", r+1, t.Name, res.rate(), res.delivered, res.expected)
		}
	}
	mem, dur := medianRun(results[memT.Name]), medianRun(results[durT.Name])
	out.add("ours_durable_qos1_fanin_msgs_per_s", "%.0f", dur.rate())
	out.add("ours_durable_qos1_fanin_delivered", "%d/%d", dur.delivered, dur.expected)
	out.add("ours_memory_qos1_fanin_msgs_per_s", "%.0f", mem.rate())
	if mem.rate() > 0 {
		out.add("durable_vs_memory_qos1_fanin_ratio", "%.2f", dur.rate()/mem.rate())
	}
	m, err := scrapeMetrics(durT.healthAddr)
	if err != nil {
		return fmt.Errorf("scraping the durable broker's metrics: %w", err)
	}
	writes, _ := m.Sum("mqtt_store_durable_writes_total")
	out.add("ours_durable_writes_total", "%.0f", writes)
	return nil
}
