// Package operatorproc runs the operator binary as a separate process against
// an envtest control plane, so benchmarks measure its real memory and read
// its Prometheus metrics as a user's monitoring would.
package operatorproc

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/mqtt-operator/mqtt-operator/internal/testenv"
	"github.com/mqtt-operator/mqtt-operator/test/bench/measure"
)

// Operator is a running operator process.
type Operator struct {
	cmd         *exec.Cmd
	dir         string
	metricsAddr string
}

// Start runs binary with a kubeconfig for env (as cluster admin) and extra
// flags, and waits until its metrics endpoint answers.
func Start(env *testenv.Env, binary string, flags ...string) (*Operator, error) {
	kubeconfig, err := env.KubeConfig()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "operatorproc")
	if err != nil {
		return nil, err
	}
	kcPath := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(kcPath, kubeconfig, 0o600); err != nil {
		return nil, err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := l.Addr().String()
	_ = l.Close()
	args := append([]string{"--metrics-bind-address=" + addr, "--health-probe-bind-address=0",
		"--operator-namespace=mqtt-operator-system", "--zap-log-level=error"}, flags...)
	o := &Operator{cmd: exec.Command(binary, args...), dir: dir, metricsAddr: addr}
	o.cmd.Env = append(os.Environ(), "KUBECONFIG="+kcPath)
	o.cmd.Stdout, o.cmd.Stderr = os.Stderr, os.Stderr
	if err := o.cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", binary, err)
	}
	if err := measure.WaitFor(30*time.Second, func() error { _, err := o.ReconcileTotal("mqttbroker"); return err }); err != nil {
		o.Stop()
		return nil, fmt.Errorf("operator metrics never came up: %w", err)
	}
	return o, nil
}

// Stop kills the process and removes its files.
func (o *Operator) Stop() {
	_ = o.cmd.Process.Kill()
	_ = o.cmd.Wait()
	_ = os.RemoveAll(o.dir)
}

// ReconcileTotal reads controller_runtime_reconcile_total of one controller.
func (o *Operator) ReconcileTotal(controller string) (float64, error) {
	resp, err := http.Get("http://" + o.metricsAddr + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	total, found := 0.0, false
	for _, line := range strings.Split(string(body), "\n") {
		if strings.HasPrefix(line, "controller_runtime_reconcile_total{") && strings.Contains(line, `controller="`+controller+`"`) {
			fields := strings.Fields(line)
			v, err := strconv.ParseFloat(fields[len(fields)-1], 64)
			if err != nil {
				return 0, err
			}
			total += v
			found = true
		}
	}
	if !found {
		return 0, fmt.Errorf("controller_runtime_reconcile_total for %s not exported yet", controller)
	}
	return total, nil
}

// Memory returns the process's resident and peak resident memory in MiB.
func (o *Operator) Memory() (rss, hwm float64, err error) {
	r, h, err := measure.Memory(o.cmd.Process.Pid)
	return float64(r) / 1024, float64(h) / 1024, err
}
