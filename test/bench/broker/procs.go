package main

import (
	"os/exec"
	"syscall"

	"github.com/mqtt-operator/mqtt-operator/test/bench/benchproc"
	"github.com/mqtt-operator/mqtt-operator/test/bench/measure"
)

// process is one broker the benchmark started, and where it takes MQTT
// clients. benchproc registers it, so benchproc.KillAll ends it on any exit
// path, Ctrl-C included.
type process struct {
	*benchproc.Process
	addr string // MQTT host:port
}

// startProcess runs bin with args, output to logPath.
func startProcess(name, addr, logPath, bin string, args ...string) (*process, error) {
	p, err := benchproc.Start(name, logPath, exec.Command(bin, args...))
	if err != nil {
		return nil, err
	}
	return &process{Process: p, addr: addr}, nil
}

// rssKiB reads VmRSS of pid.
func rssKiB(pid int) (int64, error) {
	rss, _, err := measure.Memory(pid)
	return rss, err
}

// raiseFileLimit lifts RLIMIT_NOFILE as far as allowed; brokers started later
// inherit it (Go passes an explicitly set limit on to children).
func raiseFileLimit(want uint64) (uint64, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, err
	}
	if lim.Max < want {
		// Raising the hard limit needs CAP_SYS_RESOURCE; try, then settle.
		if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &syscall.Rlimit{Cur: want, Max: want}) == nil {
			return want, nil
		}
		want = lim.Max
	}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &syscall.Rlimit{Cur: want, Max: lim.Max}); err != nil {
		return lim.Cur, err
	}
	return want, nil
}

// sourceIP hands out loopback source addresses round-robin, so tens of
// thousands of short and idle connections never exhaust the ephemeral ports
// of one address pair.
func sourceIP() string { return benchproc.SourceIP().String() }
