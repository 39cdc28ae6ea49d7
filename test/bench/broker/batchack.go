package main

import "fmt"

// batchAckPhase is #10 item 4 as found: our broker with the MQTTBroker's
// default maxQueuedMessages (1,000, not the throughput phase's 65,535),
// --clients QoS 1 publishers with --qos1-window messages in flight each,
// and one subscriber on the fan-in wildcard that reads 256 KiB at a time
// and acknowledges everything one read brought in one write, as buffered
// clients do. It holds more messages unacknowledged than the queue bound;
// every message the broker acknowledged must still reach it, and nothing
// may be dropped. Reports ours_qos1_fanin_batchack_{msgs_per_s,delivered}
// (median of --runs) and ours_qos1_fanin_batchack_dropped (all runs).
func batchAckPhase(s *setup, f *flags, out *report) error {
	saved := s.oursMaxQueued
	s.oursMaxQueued = 0 // the MQTTBroker default
	t, err := s.startOurs("ours-batchack", smallBundle(s.users, 1))
	s.oursMaxQueued = saved
	if err != nil {
		return err
	}
	defer t.Stop()
	sc := scenario{qos: 1, batchAck: true}
	var runs []result
	for r := range f.runs {
		res, err := runLoad(t, sc, f.load, r+1)
		if err != nil {
			return fmt.Errorf("%s: %w", sc, err)
		}
		logf("run %d ours %s %9.0f msg/s  delivered %d/%d in %v %s", r+1, sc, res.rate(), res.delivered, res.expected, res.elapsed.Round(1e6), res.note)
		runs = append(runs, res)
	}
	m, err := scrapeMetrics(t.healthAddr)
	if err != nil {
		return fmt.Errorf("scraping our broker's metrics: %w", err)
	}
	dropped, _ := m.Sum("mqtt_messages_dropped_total")
	med := medianRun(runs)
	out.add("ours_"+sc.String()+"_msgs_per_s", "%.0f", med.rate())
	out.add("ours_"+sc.String()+"_delivered", "%d/%d", med.delivered, med.expected)
	out.add("ours_"+sc.String()+"_dropped", "%.0f", dropped)
	return nil
}
