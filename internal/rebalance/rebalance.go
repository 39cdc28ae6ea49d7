// Package rebalance decides how a clustered broker's clients are evened out
// over its pods after a scale-out (spec.rebalance): which pods move how many
// clients in one round, and over how long. The operator runs the rounds
// (controllers/mqttbroker_rebalance.go); the cluster benchmark runs the same
// plan against real pods. Pure: no clock, no I/O.
package rebalance

import (
	"math"
	"slices"
	"time"
)

const (
	// MinBand: a pod within 2 clients of the mean is balanced, whatever the
	// percentage says (3 clients on 2 pods cannot be even).
	MinBand = 2
	// LongestRound bounds one round: at most rate x 10 s clients, spread
	// over at most 10 s.
	LongestRound = 10 * time.Second
)

// Plan says how many clients each pod should move: balanced when every pod
// is within the band (tolerance percent of the mean, at least MinBand
// clients) of the mean; otherwise each pod above the mean moves what it
// holds above it, rounded up.
func Plan(counts []int, tolerance int) (moves []int, mean float64, balanced bool) {
	total := 0
	for _, c := range counts {
		total += c
	}
	moves = make([]int, len(counts))
	if len(counts) == 0 {
		return moves, 0, true
	}
	mean = float64(total) / float64(len(counts))
	band := max(mean*float64(tolerance)/100, MinBand)
	balanced = true
	for _, c := range counts {
		if math.Abs(float64(c)-mean) > band {
			balanced = false
		}
	}
	if balanced {
		return moves, mean, true
	}
	target := int(math.Ceil(mean))
	for i, c := range counts {
		moves[i] = max(c-target, 0)
	}
	return moves, mean, false
}

// Round cuts moves (in place) to one round at rate clients per second over
// all pods, the busiest pods first, and returns the period to spread the
// round's moves over.
func Round(counts, moves []int, rate int) time.Duration {
	budget := rate * int(LongestRound/time.Second)
	order := make([]int, len(moves))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return counts[b] - counts[a] })
	total := 0
	for _, i := range order {
		moves[i] = min(moves[i], budget-total)
		total += moves[i]
	}
	return time.Duration(float64(total) / float64(rate) * float64(time.Second))
}
