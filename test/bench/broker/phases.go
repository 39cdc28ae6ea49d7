package main

import (
	"fmt"
	"math"
	"slices"
	"strings"
)

var scenarios = []scenario{{qos: 0}, {qos: 0, fanOut: true}, {qos: 1}, {qos: 1, fanOut: true}}

// selectScenarios keeps the throughput scenarios named in list (qos0_fanin, ...).
func selectScenarios(list string) error {
	var kept []scenario
	for _, name := range strings.Split(list, ",") {
		i := slices.IndexFunc(scenarios, func(sc scenario) bool { return sc.String() == strings.TrimSpace(name) })
		if i < 0 {
			return fmt.Errorf("--scenarios: unknown scenario %q (known: qos0_fanin, qos0_fanout, qos1_fanin, qos1_fanout)", name)
		}
		kept = append(kept, scenarios[i])
	}
	scenarios = kept
	return nil
}

// throughputPhases runs the comparison of the three brokers and then, on the
// same instance of ours, the ACL-size comparison.
func throughputPhases(s *setup, f *flags, phases map[string]bool, out *report) error {
	logf("starting brokers")
	oursT, err := s.startOurs(ours, smallBundle(s.users, 1))
	if err != nil {
		return err
	}
	defer oursT.Stop()
	var targets []*target
	if phases["throughput"] {
		mochiT, err := s.startMochi(mochi)
		if err != nil {
			return err
		}
		defer mochiT.Stop()
		mosqT, err := s.startMosquitto(mosquitto, false)
		if err != nil {
			return err
		}
		defer mosqT.Stop()
		targets = []*target{oursT, mochiT, mosqT}
	} else {
		targets = []*target{oursT}
	}

	// A short warm-up run each, so no measured run pays for a cold heap.
	warm := f.load
	warm.msgs = max(1, f.load.msgs/10)
	var countedOurs int64
	for _, t := range targets {
		for _, sc := range []scenario{{qos: 0}, {qos: 1}} {
			res, err := runLoad(t, sc, warm, 0)
			if err != nil {
				return fmt.Errorf("%s warm-up: %w", t.Name, err)
			}
			if t == oursT {
				countedOurs += res.delivered
			}
		}
	}
	if !phases["throughput"] {
		return aclPhase(s, f, oursT, out)
	}

	logf("throughput: %d runs x %d scenarios x %d brokers, %d clients x %d messages of %d bytes",
		f.runs, len(scenarios), len(targets), f.load.clients, f.load.msgs, f.load.payload)
	results := map[string][]result{} // broker_scenario -> runs
	genCPUBy := map[string]float64{}
	deliveredBy := map[string]int64{}
	runID := 1
	var genCPU, brokerCPU float64
	for r := range f.runs {
		for _, sc := range scenarios {
			for k := range targets {
				// Rotate the order per run so no broker always goes first.
				t := targets[(k+r)%len(targets)]
				res, err := runLoad(t, sc, f.load, runID)
				runID++
				if err != nil {
					return fmt.Errorf("%s %s: %w", t.Name, sc, err)
				}
				key := t.Name + "_" + sc.String()
				results[key] = append(results[key], res)
				genCPU += res.genCPU
				genCPUBy[t.Name] += res.genCPU
				deliveredBy[t.Name] += res.delivered
				brokerCPU += res.brokerCPU
				if t == oursT {
					countedOurs += res.delivered
				}
				logf("run %d %-9s %-11s %9.0f msg/s  delivered %d/%d in %v  broker cpu %.2fs generator cpu %.2fs %s",
					r+1, t.Name, sc, res.rate(), res.delivered, res.expected, res.elapsed.Round(1e6), res.brokerCPU, res.genCPU, res.note)
			}
		}
	}
	for _, sc := range scenarios {
		for _, t := range targets {
			key := t.Name + "_" + sc.String()
			med := medianRun(results[key])
			out.add(key+"_msgs_per_s", "%.0f", med.rate())
			out.add(key+"_delivered", "%d/%d", med.delivered, med.expected)
			out.add(key+"_cpu_us_per_msg", "%.2f", 1e6*med.brokerCPU/math.Max(1, float64(med.delivered)))
		}
	}
	for _, sc := range scenarios {
		o := medianRun(results[ours+"_"+sc.String()]).rate()
		for _, base := range []string{mosquitto, mochi} {
			if b := medianRun(results[base+"_"+sc.String()]).rate(); b > 0 {
				out.add("ratio_vs_"+base+"_"+sc.String(), "%.2f", o/b)
			}
		}
	}
	out.add("generator_cpu_share", "%.2f", genCPU/math.Max(1e-9, genCPU+brokerCPU))
	logf("summary (median msg/s of %d runs; ours/baseline):", f.runs)
	for _, sc := range scenarios {
		rate := func(b string) float64 { return medianRun(results[b+"_"+sc.String()]).rate() }
		o, mo, mq := rate(ours), rate(mochi), rate(mosquitto)
		logf("  %-11s ours %8.0f  mochi %8.0f  mosquitto %8.0f  vs mochi %.2fx  vs mosquitto %.2fx",
			sc, o, mo, mq, o/math.Max(1, mo), o/math.Max(1, mq))
	}
	logf("  the generator used %.0f%% of the CPU the generator and the measured broker used together", 100*genCPU/math.Max(1e-9, genCPU+brokerCPU))
	for _, t := range targets {
		logf("  generator CPU per delivered message with %-9s %.1f us", t.Name, 1e6*genCPUBy[t.Name]/math.Max(1, float64(deliveredBy[t.Name])))
	}

	// Our broker's own metrics must agree with what the subscribers counted.
	m, err := scrapeMetrics(oursT.healthAddr)
	if err != nil {
		return fmt.Errorf("scraping our broker's metrics: %w", err)
	}
	sent, _ := m.Sum("mqtt_messages_sent_total")
	recv, _ := m.Sum("mqtt_messages_received_total")
	dropped, _ := m.Sum("mqtt_messages_dropped_total")
	authOK, _ := m.Sum("mqtt_auth_total", `result="success"`)
	denied, _ := m.Sum("mqtt_acl_denied_total")
	out.add("ours_metrics_messages_sent_total", "%.0f", sent)
	out.add("ours_metrics_messages_received_total", "%.0f", recv)
	out.add("ours_metrics_messages_dropped_total", "%.0f", dropped)
	out.add("ours_metrics_auth_success_total", "%.0f", authOK)
	out.add("ours_metrics_acl_denied_total", "%.0f", denied)
	for _, name := range []string{"mqtt_flow_waits_total", "mqtt_flow_wait_seconds_total", "mqtt_flow_slow_subscribers_total"} {
		v, _ := m.Sum(name)
		out.add("ours_metrics_"+strings.TrimPrefix(name, "mqtt_"), "%.3f", v)
	}
	out.add("ours_subscribers_counted_total", "%d", countedOurs)
	out.add("ours_metrics_sent_minus_counted", "%.0f", sent-float64(countedOurs))
	logf("our broker's /metrics: %.0f messages sent to subscribers, the generator's subscribers counted %d; %.0f dropped for slow subscribers, %.0f ACL denials",
		sent, countedOurs, dropped, denied)

	if phases["acl"] {
		return aclPhase(s, f, oursT, out)
	}
	return nil
}

// medianRun is the run with the median rate (the lower middle one for an
// even count).
func medianRun(runs []result) result {
	if len(runs) == 0 {
		return result{}
	}
	sorted := slices.Clone(runs)
	slices.SortFunc(sorted, func(a, b result) int {
		switch {
		case a.rate() < b.rate():
			return -1
		case a.rate() > b.rate():
			return 1
		}
		return 0
	})
	return sorted[(len(sorted)-1)/2]
}

// report collects name=value lines in order.
type report struct {
	lines []string
}

func (r *report) add(name, format string, args ...any) {
	r.lines = append(r.lines, name+"="+fmt.Sprintf(format, args...))
}

func (r *report) print() {
	fmt.Println(strings.Join(r.lines, "\n"))
}
