package localpods

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"k8s.io/apimachinery/pkg/types"
)

// processSpec is how a pod's container runs as a local process.
type processSpec struct {
	binary string
	args   []string
	env    []string
	dir    string
	// probe is nil when the container has no readiness probe: then, as with
	// the kubelet, the container is ready as soon as it runs.
	probe *readinessProbe
}

// readinessProbe is the container's HTTP readiness probe, resolved to a URL.
type readinessProbe struct {
	url              string
	timeout          time.Duration
	failureThreshold int
	successThreshold int
}

// probePeriod replaces the probe's periodSeconds: the kubelet's 5 s would
// make every test wait for a readiness the broker reached long before.
const probePeriod = 200 * time.Millisecond

// A crashed process restarts with the kubelet's CrashLoopBackOff shape
// (doubling, reset after a good run) scaled down from 10 s..5 min so tests
// see a restart in well under a second.
const (
	initialBackoff = 200 * time.Millisecond
	maxBackoff     = 10 * time.Second
	backoffReset   = 10 * time.Second
)

// containerState is what the kubelet would report about the container.
type containerState struct {
	started      bool // a process has run in this pod
	running      bool
	stopped      bool // the pod was stopped and its last process has ended
	ready        bool
	pid          int
	startedAt    time.Time
	restartCount int32
	waiting      string // why it is not running: ContainerCreating, CrashLoopBackOff
	lastExit     *exitInfo
}

type exitInfo struct {
	code                  int32
	reason                string
	startedAt, finishedAt time.Time
}

// podRuntime is one pod (one UID) on the harness's "node": its directory,
// its volumes and its container process, restarted in place when it crashes.
type podRuntime struct {
	key     types.NamespacedName // the pod
	uid     types.UID
	owner   types.NamespacedName // its StatefulSet, the work queue key
	ip      string
	dir     string // this pod's own directory, removed when it ends
	created time.Time
	grace   time.Duration // terminationGracePeriodSeconds
	out     *podOutput
	notify  func()

	// Only the worker syncing owner touches these.
	mounts  mountTable
	volumes map[string]*volumeState

	mu       sync.Mutex
	launched bool
	cmd      *exec.Cmd
	state    containerState
	stopping bool
	stopCh   chan struct{} // closed by stop
	done     chan struct{} // closed when no process runs or will run
}

// start runs the container process and keeps it running until stop.
func (r *podRuntime) start(spec processSpec) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.launched || r.stopping {
		return
	}
	r.launched = true
	go r.run(spec)
}

func (r *podRuntime) run(spec processSpec) {
	defer close(r.done)
	backoff := initialBackoff
	for restart := false; ; restart = true {
		began := time.Now()
		exit, ran := r.runOnce(spec, restart)
		if !ran {
			return // stopped before it started
		}
		r.mu.Lock()
		r.state.running, r.state.ready, r.state.pid, r.cmd = false, false, 0, nil
		r.state.lastExit = &exit
		stopping := r.stopping
		r.state.stopped = stopping
		if !stopping {
			r.state.waiting = "CrashLoopBackOff"
		}
		r.mu.Unlock()
		r.out.note("process exited", "exitCode", exit.code)
		r.notify()
		if stopping {
			return
		}
		if time.Since(began) > backoffReset {
			backoff = initialBackoff
		}
		select {
		case <-r.stopCh:
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

// runOnce runs one process to its end. It starts the process under the lock,
// so a concurrent stop either prevents the start or finds the process to
// signal.
func (r *podRuntime) runOnce(spec processSpec, restart bool) (exitInfo, bool) {
	cmd := exec.Command(spec.binary, spec.args...)
	cmd.Env, cmd.Dir = spec.env, spec.dir
	cmd.Stdout, cmd.Stderr = r.out, r.out
	cmd.SysProcAttr = sysProcAttr()
	r.mu.Lock()
	if r.stopping {
		r.mu.Unlock()
		return exitInfo{}, false
	}
	began := time.Now()
	if err := cmd.Start(); err != nil {
		r.mu.Unlock()
		r.out.note("cannot start the broker", "error", err.Error())
		return exitInfo{code: 128, reason: "StartError", startedAt: began, finishedAt: began}, true
	}
	r.cmd = cmd
	if restart {
		r.state.restartCount++
	}
	r.state.started, r.state.running, r.state.pid, r.state.startedAt, r.state.waiting = true, true, cmd.Process.Pid, began, ""
	r.mu.Unlock()
	r.out.note("process started", "pid", cmd.Process.Pid)
	r.notify()

	ctx, cancel := context.WithCancel(context.Background())
	probed := make(chan struct{})
	go func() { defer close(probed); r.probe(ctx, spec.probe) }()
	_ = cmd.Wait() // the exit status is in ProcessState
	cancel()
	<-probed
	return exitInfoOf(cmd.ProcessState, began), true
}

// exitInfoOf reports the exit as the kubelet does: 128+signal for a process
// ended by a signal.
func exitInfoOf(ps *os.ProcessState, began time.Time) exitInfo {
	e := exitInfo{code: int32(ps.ExitCode()), reason: "Error", startedAt: began, finishedAt: time.Now()}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		e.code = 128 + int32(ws.Signal())
	}
	if e.code == 0 {
		e.reason = "Completed"
	}
	return e
}

// stop ends the pod: SIGTERM now, SIGKILL after grace, no more restarts.
func (r *podRuntime) stop(grace time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopping {
		return
	}
	r.stopping = true
	close(r.stopCh)
	if !r.launched {
		close(r.done)
		return
	}
	if r.cmd != nil {
		_ = r.cmd.Process.Signal(syscall.SIGTERM)
		r.out.note("sent SIGTERM", "gracePeriod", grace.String())
	}
	go r.killAfter(grace)
}

func (r *podRuntime) killAfter(grace time.Duration) {
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-r.done:
		return
	case <-t.C:
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd != nil {
		_ = r.cmd.Process.Kill()
		r.out.note("grace period over: sent SIGKILL")
	}
}

// kill crashes the running process; the run loop restarts it.
func (r *podRuntime) kill() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd == nil {
		return errors.New("no process is running")
	}
	if err := r.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		return fmt.Errorf("killing process %d: %w", r.cmd.Process.Pid, err)
	}
	return nil
}

func (r *podRuntime) finished() bool {
	select {
	case <-r.done:
		return true
	default:
		return false
	}
}

func (r *podRuntime) snapshot() (launched bool, st containerState) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.launched, r.state
}

// probe follows the kubelet's readiness semantics (thresholds, any 2xx or
// 3xx is success) at probePeriod until ctx ends.
func (r *podRuntime) probe(ctx context.Context, p *readinessProbe) {
	if p == nil {
		r.setReady(true)
		return
	}
	c := &http.Client{Timeout: p.timeout, Transport: &http.Transport{DisableKeepAlives: true}}
	successes, failures := 0, 0
	t := time.NewTicker(probePeriod)
	defer t.Stop()
	for {
		if probeOnce(ctx, c, p.url) {
			successes, failures = successes+1, 0
		} else {
			successes, failures = 0, failures+1
		}
		switch {
		case successes >= p.successThreshold:
			r.setReady(true)
		case failures >= p.failureThreshold:
			r.setReady(false)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func probeOnce(ctx context.Context, c *http.Client, url string) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false
	}
	resp, err := c.Do(req)
	if err != nil {
		return false
	}
	_ = resp.Body.Close()
	return resp.StatusCode >= 200 && resp.StatusCode < 400
}

func (r *podRuntime) setReady(ready bool) {
	r.mu.Lock()
	changed := r.state.running && r.state.ready != ready
	if changed {
		r.state.ready = ready
	}
	r.mu.Unlock()
	if changed {
		r.notify()
	}
}
