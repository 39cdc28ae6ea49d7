// Package measure holds what every benchmark here needs to take a
// measurement: waiting for a condition, a process's memory, percentiles.
package measure

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// WaitFor polls check until it returns nil or timeout passes.
func WaitFor(timeout time.Duration, check func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := check()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %v: %w", timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Memory returns a process's resident (VmRSS) and peak resident (VmHWM)
// memory in KiB, from /proc.
func Memory(pid int) (rssKiB, hwmKiB int64, err error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) < 2 {
			continue
		}
		switch fields[0] {
		case "VmRSS:":
			rssKiB, _ = strconv.ParseInt(fields[1], 10, 64)
		case "VmHWM:":
			hwmKiB, _ = strconv.ParseInt(fields[1], 10, 64)
		}
	}
	if rssKiB == 0 {
		return 0, 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
	}
	return rssKiB, hwmKiB, s.Err()
}

// Percentile of sorted values (nearest rank below).
func Percentile(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[int(float64(len(sorted)-1)*p)]
}
