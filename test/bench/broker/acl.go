package main

import (
	"fmt"
	"math"
	"slices"
	"strings"
)

// aclScenarios: the headline is QoS 0 fan-out, where our broker rarely
// drops messages (so the rate measures work, not queue overflow) and every
// message costs nine ACL checks (one publish, eight deliveries). QoS 1
// fan-in, two checks per delivered message, is the supplement. QoS 0 fan-in
// is left out: there our broker drops most messages of the flood, and the
// rate follows the drops rather than the work.
var aclScenarios = []scenario{{qos: 0, fanOut: true}, {qos: 1}}

// aclPhase measures our broker with a 10-rule and a large bundle, pushed in
// turn through the admin API so the two sizes share the same process and
// the same moments of machine noise.
func aclPhase(s *setup, f *flags, oursT *target, out *report) error {
	tenants, err := tenantUsers(max(0, (f.aclRules-10)/10))
	if err != nil {
		return err
	}
	small := smallBundle(s.users, 0)
	large := largeBundle(s.users, tenants, 0)
	logf("acl: %d rules (%d users) vs %d rules (%d users), %d alternating pairs of runs",
		ruleCount(large), len(large.Users), ruleCount(small), len(small.Users), f.aclRuns)
	type key struct {
		big bool
		sc  scenario
	}
	results := map[key][]result{}
	gcCycles := map[bool][]float64{}
	gcCount := func() float64 {
		m, err := scrapeMetrics(oursT.healthAddr)
		if err != nil {
			return math.NaN()
		}
		v, _ := m.Sum("go_gc_duration_seconds_count")
		return v
	}
	runID := 1000
	for r := range f.aclRuns {
		for _, sc := range aclScenarios {
			// The two runs of a pair follow each other, in alternating
			// order, so slow drifts of machine load cancel out.
			order := []bool{false, true}
			if r%2 == 1 {
				order = []bool{true, false}
			}
			for _, big := range order {
				b := small
				if big {
					b = large
				}
				if err := oursT.pushBundle(b); err != nil {
					return err
				}
				gc0 := gcCount()
				load := f.load
				if sc.qos == 0 {
					load.msgs *= f.aclMsgsFactor // QoS 0 runs are short; lengthen them
				}
				res, err := runLoad(oursT, sc, load, runID)
				runID++
				if err != nil {
					return fmt.Errorf("acl %s: %w", sc, err)
				}
				gc := gcCount() - gc0
				if sc == aclScenarios[0] {
					gcCycles[big] = append(gcCycles[big], gc/math.Max(1, float64(res.delivered))*1e6)
				}
				results[key{big, sc}] = append(results[key{big, sc}], res)
				logf("acl pair %d %5d rules %-11s %9.0f msg/s  delivered %d/%d  broker cpu %.2fs  %.0f GC cycles %s",
					r+1, ruleCount(b), sc, res.rate(), res.delivered, res.expected, res.brokerCPU, gc, res.note)
			}
		}
	}
	for i, sc := range aclScenarios {
		smalls, larges := results[key{false, sc}], results[key{true, sc}]
		rateRatios := make([]float64, len(smalls))
		cpuRatios := make([]float64, len(smalls))
		for j := range smalls {
			rateRatios[j] = larges[j].rate() / math.Max(1e-9, smalls[j].rate())
			cpuRatios[j] = cpuPerMsg(larges[j]) / math.Max(1e-12, cpuPerMsg(smalls[j]))
		}
		name := "acl_10k_rules_vs_10_ratio"
		if i > 0 {
			name += "_" + sc.String()
		}
		sm, lg := medianRun(smalls), medianRun(larges)
		out.add(name, "%.3f", median(rateRatios))
		out.add(strings.Replace(name, "_ratio", "_cpu_per_msg_ratio", 1), "%.3f", median(cpuRatios))
		out.add("acl_"+sc.String()+"_msgs_per_s_10_rules", "%.0f", sm.rate())
		out.add("acl_"+sc.String()+"_msgs_per_s_large", "%.0f", lg.rate())
		out.add("acl_"+sc.String()+"_delivered_10_rules", "%d/%d", sm.delivered, sm.expected)
		out.add("acl_"+sc.String()+"_delivered_large", "%d/%d", lg.delivered, lg.expected)
		logf("acl %s: throughput ratio per pair %s; broker CPU per message ratio per pair %s", sc, fmtList(rateRatios), fmtList(cpuRatios))
	}
	// A bigger live heap makes Go's collector run less often, which can
	// make the large bundle look cheaper than the small one.
	out.add("acl_gc_cycles_per_million_msgs_10_rules", "%.0f", median(gcCycles[false]))
	out.add("acl_gc_cycles_per_million_msgs_large", "%.0f", median(gcCycles[true]))
	out.add("acl_large_bundle_rules", "%d", ruleCount(large))
	out.add("acl_large_bundle_users", "%d", len(large.Users))
	return nil
}

func cpuPerMsg(r result) float64 { return r.brokerCPU / math.Max(1, float64(r.delivered)) }

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func fmtList(v []float64) string {
	parts := make([]string, len(v))
	for i, x := range v {
		parts[i] = fmt.Sprintf("%.2f", x)
	}
	return strings.Join(parts, " ")
}
