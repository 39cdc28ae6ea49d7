// Package measure holds what every benchmark here needs to take a
// measurement: waiting for a condition, a process's memory and CPU time,
// percentiles.
package measure

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
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

// clockTicks is USER_HZ, the unit of the times in /proc/<pid>/stat: 100 on
// every Linux we run on.
const clockTicks = 100.0

// CPUSeconds is the user+system CPU time process pid has used so far, from
// /proc/<pid>/stat (all its threads); 0 when it cannot be read.
func CPUSeconds(pid int) float64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command name, which is in parentheses and may hold spaces.
	s := string(data)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(fields) < 13 {
		return 0
	}
	utime, _ := strconv.ParseFloat(fields[11], 64)
	stime, _ := strconv.ParseFloat(fields[12], 64)
	return (utime + stime) / clockTicks
}

// SelfCPUSeconds is the user+system CPU time the calling process (the load
// generator) has used so far.
func SelfCPUSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	tv := func(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }
	return tv(ru.Utime) + tv(ru.Stime)
}

// MachineCPUSeconds is the CPU time all CPUs of the machine have been busy
// (everything but idle and iowait) and their total time, from /proc/stat:
// the difference over a window, minus what the measured processes used, is
// what else ran on the machine.
func MachineCPUSeconds() (busy, total float64) {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := strings.Cut(string(data), "\n")
	fields := strings.Fields(line)
	if len(fields) < 5 || fields[0] != "cpu" {
		return 0, 0
	}
	for i, f := range fields[1:] {
		if i >= 8 { // guest time is already in user time
			break
		}
		v, _ := strconv.ParseFloat(f, 64)
		total += v
		if i != 3 && i != 4 { // idle, iowait
			busy += v
		}
	}
	return busy / clockTicks, total / clockTicks
}
