package rebalance

import (
	"slices"
	"testing"
	"time"
)

func TestPlan(t *testing.T) {
	for _, c := range []struct {
		counts   []int
		balanced bool
		moves    []int
	}{
		{[]int{90, 0, 0}, false, []int{60, 0, 0}},
		{[]int{33, 30, 27}, true, nil}, // within 20% of 30
		{[]int{40, 40, 10}, false, []int{10, 10, 0}},
		{[]int{35, 35, 20}, false, []int{5, 5, 0}}, // one pod below the band
		{[]int{2, 0, 0}, true, nil},                // within 2 clients of the mean
		{[]int{0, 0, 0}, true, nil},
		{[]int{7, 0}, false, []int{3, 0}}, // mean 3.5: keep 4
		{nil, true, nil},
	} {
		moves, _, balanced := Plan(c.counts, 20)
		if balanced != c.balanced || (!balanced && !slices.Equal(moves, c.moves)) {
			t.Errorf("Plan(%v) = %v balanced %v; want %v balanced %v", c.counts, moves, balanced, c.moves, c.balanced)
		}
	}
}

func TestRoundKeepsToTheRateBusiestFirst(t *testing.T) {
	counts := []int{300, 500, 0, 0}
	moves, _, _ := Plan(counts, 20) // mean 200: 100 and 300
	period := Round(counts, moves, 20)
	if !slices.Equal(moves, []int{0, 200, 0, 0}) || period != 10*time.Second {
		t.Errorf("round %v over %v, want the busiest pod's 200 (20/s x 10 s) over 10s", moves, period)
	}
	counts = []int{90, 0, 0}
	moves, _, _ = Plan(counts, 20)
	if period := Round(counts, moves, 200); moves[0] != 60 || period != 300*time.Millisecond {
		t.Errorf("round %v over %v, want 60 over 300ms", moves, period)
	}
}
