// Package benchproc runs the processes a benchmark measures (brokers) on
// loopback: output to a log file, killed with the benchmark even by
// `kill -9` (Pdeathsig), ended on every exit path by KillAll; and hands out
// free loopback ports and source addresses.
package benchproc

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Process is one process a benchmark started.
type Process struct {
	Name    string
	LogPath string
	cmd     *exec.Cmd
	exited  chan struct{}
	err     error // set before exited closes
}

var (
	mu    sync.Mutex
	procs = map[*Process]bool{}
)

// Start runs cmd (its Path, Args, Env and Dir as the caller set them) with
// stdout and stderr to logPath, in its own process group, and registers it
// for KillAll.
func Start(name, logPath string, cmd *exec.Cmd) (*Process, error) {
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logFile.Close()
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	mu.Lock()
	defer mu.Unlock()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s (%s): %w", name, cmd.Path, err)
	}
	p := &Process{Name: name, LogPath: logPath, cmd: cmd, exited: make(chan struct{})}
	procs[p] = true
	go func() {
		p.err = cmd.Wait()
		close(p.exited)
	}()
	return p, nil
}

// PID of the process.
func (p *Process) PID() int { return p.cmd.Process.Pid }

// Alive reports an error, with the last lines of the log, when the process
// has exited.
func (p *Process) Alive() error {
	select {
	case <-p.exited:
		return fmt.Errorf("%s exited (%v); last log lines:\n%s", p.Name, p.err, Tail(p.LogPath, 15))
	default:
		return nil
	}
}

// Stop asks the process to end (SIGTERM, so a broker can write a profile it
// was asked for), kills it after 3 s, and waits for it.
func (p *Process) Stop() {
	mu.Lock()
	delete(procs, p)
	mu.Unlock()
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

// Drain asks the process to end (SIGTERM) and waits up to timeout for it
// to, then kills it. It returns how long it took and whether it ended by
// itself.
func (p *Process) Drain(timeout time.Duration) (time.Duration, bool) {
	mu.Lock()
	delete(procs, p)
	mu.Unlock()
	t0 := time.Now()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
		return time.Since(t0), true
	case <-time.After(timeout):
	}
	_ = p.cmd.Process.Kill()
	<-p.exited
	return time.Since(t0), false
}

// KillAll stops every process started and not yet stopped.
func KillAll() {
	mu.Lock()
	var all []*Process
	for p := range procs {
		all = append(all, p)
	}
	mu.Unlock()
	for _, p := range all {
		p.Stop()
	}
}

// Tail returns the last n lines of the file at path (or why it cannot).
func Tail(path string, n int) string {
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

// FreePort returns a loopback port nothing listens on right now.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Loopback is 127.0.0.1:port.
func Loopback(port int) string { return "127.0.0.1:" + strconv.Itoa(port) }

var sourceCounter atomic.Uint32

// SourceIP hands out loopback source addresses round-robin (127.0.0.2 to
// 127.0.0.254), so tens of thousands of short connections and their
// TIME_WAITs never exhaust the ephemeral ports of one address pair.
func SourceIP() net.IP {
	n := sourceCounter.Add(1)
	return net.IPv4(127, 0, 0, byte(2+n%253))
}

// WorkDir is the benchmark's temporary directory, once it has one; Main
// removes it on Ctrl-C too. A benchmark asked to keep it never sets it.
var WorkDir atomic.Pointer[string]

// Main runs a benchmark's body and ends every process it started, on every
// exit path: a returned error (printed, exit 1) and Ctrl-C or SIGTERM
// (WorkDir removed, exit 130) alike.
func Main(name string, run func() error) {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		s := <-sigs
		fmt.Fprintf(os.Stderr, "%s: %v; stopping brokers\n", name, s)
		KillAll()
		if d := WorkDir.Load(); d != nil {
			_ = os.RemoveAll(*d)
		}
		os.Exit(130)
	}()
	err := run()
	KillAll()
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		os.Exit(1)
	}
}

// LookPath finds a program on PATH, or at fallback (Debian puts mosquitto in
// /usr/sbin, which is not on every PATH); "" when neither has it.
func LookPath(name, fallback string) string {
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	if _, err := os.Stat(fallback); err == nil {
		return fallback
	}
	return ""
}
