package main

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/mqtt-operator/mqtt-operator/test/bench/measure"
)

// process is one broker the benchmark started. Every process is registered
// so that killAll can end it on any exit path, Ctrl-C included.
type process struct {
	name    string
	addr    string // MQTT host:port
	cmd     *exec.Cmd
	logPath string
	exited  chan struct{}
	err     error // set before exited closes
}

var (
	procsMu sync.Mutex
	procs   = map[*process]bool{}
)

// startProcess runs bin with args, output to logPath. Pdeathsig kills it
// should the benchmark itself be killed without a chance to clean up.
func startProcess(name, addr, logPath, bin string, args ...string) (*process, error) {
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logFile.Close()
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	procsMu.Lock()
	defer procsMu.Unlock()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s (%s): %w", name, bin, err)
	}
	p := &process{name: name, addr: addr, cmd: cmd, logPath: logPath, exited: make(chan struct{})}
	procs[p] = true
	go func() {
		p.err = cmd.Wait()
		close(p.exited)
	}()
	return p, nil
}

func (p *process) pid() int { return p.cmd.Process.Pid }

// alive reports an error when the process has exited.
func (p *process) alive() error {
	select {
	case <-p.exited:
		return fmt.Errorf("%s exited (%v); last log lines:\n%s", p.name, p.err, tail(p.logPath, 15))
	default:
		return nil
	}
}

// stop asks the process to end (SIGTERM, so a broker can write a profile
// it was asked for), kills it after 3 s, and waits for it.
func (p *process) stop() {
	procsMu.Lock()
	delete(procs, p)
	procsMu.Unlock()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
		return
	case <-time.After(3 * time.Second):
	}
	_ = p.cmd.Process.Kill()
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
	}
}

func killAll() {
	procsMu.Lock()
	var all []*process
	for p := range procs {
		all = append(all, p)
	}
	procsMu.Unlock()
	for _, p := range all {
		p.stop()
	}
}

func tail(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// rssKiB reads VmRSS of pid.
func rssKiB(pid int) (int64, error) {
	rss, _, err := measure.Memory(pid)
	return rss, err
}

var clockTicks = 100.0 // USER_HZ; 100 on every Linux we run on

// cpuSeconds is the user+system CPU time pid has used.
func cpuSeconds(pid int) float64 {
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

// selfCPUSeconds is the CPU time the generator itself has used.
func selfCPUSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	tv := func(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }
	return tv(ru.Utime) + tv(ru.Stime)
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

// freePort returns a loopback port nothing listens on right now.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// sourceIP hands out loopback source addresses round-robin (127.0.0.2 to
// 127.0.0.254), so tens of thousands of short and idle connections never
// exhaust the ephemeral ports of one address pair, TIME_WAIT included.
var sourceCounter atomic.Uint32

func sourceIP() string {
	n := sourceCounter.Add(1)
	return "127.0.0." + strconv.Itoa(2+int(n%253))
}
