// Package memlimit gives a Go program in a container a soft memory limit
// below the container's hard one. Without it the Go runtime knows nothing
// of the cgroup limit: the heap grows to twice the live data (GOGC=100)
// and a peak past the limit ends in an OOM kill rather than in the
// collector working harder.
package memlimit

import (
	"fmt"
	"os"
	"runtime/debug"
	"strconv"
)

// Derive is the soft limit for a container memory limit given in bytes, as
// a pod's downward API (resourceFieldRef limits.memory) writes it: 90% of
// it, leaving the rest for memory the Go runtime does not count (binary,
// thread stacks outside the heap, fragmentation). Empty means no limit (0).
func Derive(containerLimit string) (int64, error) {
	if containerLimit == "" {
		return 0, nil
	}
	limit, err := strconv.ParseInt(containerLimit, 10, 64)
	if err != nil || limit <= 0 {
		return 0, fmt.Errorf("reading the container memory limit %q: want a positive number of bytes", containerLimit)
	}
	return limit / 10 * 9, nil
}

// Apply sets the runtime's soft memory limit from the container limit in
// the environment variable env, unless GOMEMLIMIT is set (an explicit
// setting wins). It returns the limit it set, 0 when it set none.
func Apply(env string) (int64, error) {
	if os.Getenv("GOMEMLIMIT") != "" {
		return 0, nil
	}
	limit, err := Derive(os.Getenv(env))
	if err != nil || limit == 0 {
		return 0, err
	}
	debug.SetMemoryLimit(limit)
	return limit, nil
}
