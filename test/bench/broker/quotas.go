package main

import (
	"fmt"
	"math"

	"github.com/mqtt-operator/mqtt-operator/internal/brokerconfig"
)

// quotaPhase measures what per-user quotas (MQTTUser spec.limits) cost when
// nobody reaches them: the same broker, once with no user limits and once
// with every limit set on every benchmark user, high enough that no client
// is slowed or refused (so what is measured is the bookkeeping: the
// connection index and its count at login, a token bucket per PUBLISH, the
// subscription check, the inflight quota). Runs alternate between the two.
// quota_overhead_<scenario> is 1 - limited/unlimited throughput (goal
// at most 0.05).
func quotaPhase(s *setup, f *flags, out *report) error {
	plain, err := s.startOurs("ours-no-quotas", smallBundle(s.users, 1))
	if err != nil {
		return err
	}
	defer plain.Stop()
	limitedBundle := smallBundle(s.users, 1)
	for i := range limitedBundle.Users {
		limitedBundle.Users[i].Limits = &brokerconfig.UserLimits{MaxConnections: 1_000_000, MaxSubscriptions: 10_000,
			PublishRate: 1_000_000, PublishBytesPerSecond: 10 << 30, MaxInflight: 65535}
	}
	limited, err := s.startOurs("ours-quotas", limitedBundle)
	if err != nil {
		return err
	}
	defer limited.Stop()
	targets := []*target{plain, limited}
	warm := f.load
	warm.msgs = max(1, f.load.msgs/10)
	for _, t := range targets {
		for _, sc := range scenarios {
			if _, err := runLoad(t, sc, warm, 0); err != nil {
				return fmt.Errorf("%s warm-up: %w", t.Name, err)
			}
		}
	}
	logf("quotas: %d runs x %d scenarios, with and without per-user limits", f.runs, len(scenarios))
	results := map[string][]result{}
	runID := 1
	for r := range f.runs {
		for _, sc := range scenarios {
			for k := range targets {
				t := targets[(k+r)%len(targets)]
				res, err := runLoad(t, sc, f.load, runID)
				runID++
				if err != nil {
					return fmt.Errorf("%s %s: %w", t.Name, sc, err)
				}
				if res.delivered != res.expected {
					return fmt.Errorf("%s %s: delivered %d of %d", t.Name, sc, res.delivered, res.expected)
				}
				results[t.Name+"_"+sc.String()] = append(results[t.Name+"_"+sc.String()], res)
				logf("run %d %-14s %-11s %9.0f msg/s  broker cpu %.2fs", r+1, t.Name, sc, res.rate(), res.brokerCPU)
			}
		}
	}
	worst := 0.0
	for _, sc := range scenarios {
		p, l := medianRun(results[plain.Name+"_"+sc.String()]), medianRun(results[limited.Name+"_"+sc.String()])
		overhead := 1 - l.rate()/math.Max(1, p.rate())
		worst = math.Max(worst, overhead)
		out.add("quota_overhead_"+sc.String(), "%.3f", overhead)
		out.add("quota_msgs_per_s_"+sc.String(), "%.0f", l.rate())
		out.add("no_quota_msgs_per_s_"+sc.String(), "%.0f", p.rate())
	}
	out.add("quota_overhead_worst", "%.3f", worst)
	return nil
}
