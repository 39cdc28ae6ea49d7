// Command operator is `make bench-operator`: it runs the operator binary as a
// separate process against an envtest control plane, creates N MQTTBrokers
// (200 by default) and prints machine-readable name=value lines:
//
//	reconcile_to_children_ms_p50 / _p99   broker created -> its StatefulSet (the
//	                                      last child applied) exists
//	operator_rss_mib                      operator resident memory once converged
//	operator_peak_rss_mib                 its high-water mark
//	reconciles_at_rest_per_min            reconciles while nothing changes (target 0)
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/mqtt-operator/mqtt-operator/api/v1alpha1"
	"github.com/mqtt-operator/mqtt-operator/internal/testenv"
)

func main() {
	manager := flag.String("manager", "bin/manager", "operator binary to measure")
	brokers := flag.Int("brokers", 200, "number of MQTTBrokers to create")
	rest := flag.Duration("rest-window", time.Minute, "how long to count reconciles once everything converged")
	flag.Parse()
	if err := run(*manager, *brokers, *rest); err != nil {
		fmt.Fprintln(os.Stderr, "bench-operator:", err)
		os.Exit(1)
	}
}

func run(managerPath string, n int, restWindow time.Duration) error {
	ctx := context.Background()
	logf := func(format string, args ...any) { fmt.Fprintf(os.Stderr, "# "+format+"\n", args...) }

	logf("starting envtest control plane")
	env, err := testenv.Start()
	if err != nil {
		return err
	}
	defer func() { _ = env.Stop() }()
	kubeconfig, err := env.KubeConfig()
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "bench-operator")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	kcPath := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(kcPath, kubeconfig, 0o600); err != nil {
		return err
	}

	metricsAddr, err := freeAddress()
	if err != nil {
		return err
	}
	cmd := exec.Command(managerPath, "--metrics-bind-address="+metricsAddr, "--health-probe-bind-address=0",
		"--operator-namespace=mqtt-operator-system", "--zap-log-level=error")
	cmd.Env = append(os.Environ(), "KUBECONFIG="+kcPath)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", managerPath, err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	if err := waitFor(30*time.Second, func() error { _, err := reconcileTotal(metricsAddr); return err }); err != nil {
		return fmt.Errorf("operator metrics never came up: %w", err)
	}

	const ns = "bench"
	if err := env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		return err
	}
	wc, err := client.NewWithWatch(env.Config, client.Options{Scheme: env.Scheme})
	if err != nil {
		return err
	}
	w, err := wc.Watch(ctx, &appsv1.StatefulSetList{}, client.InNamespace(ns))
	if err != nil {
		return err
	}
	defer w.Stop()
	var mu sync.Mutex
	seen := map[string]time.Time{}
	go func() {
		for ev := range w.ResultChan() {
			if ev.Type != watch.Added {
				continue
			}
			if sts, ok := ev.Object.(*appsv1.StatefulSet); ok {
				mu.Lock()
				seen[sts.Name] = time.Now()
				mu.Unlock()
			}
		}
	}()

	logf("creating %d MQTTBrokers", n)
	created := map[string]time.Time{}
	for i := range n {
		b := &v1alpha1.MQTTBroker{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("broker-%03d", i), Namespace: ns}}
		if err := env.Client.Create(ctx, b); err != nil {
			return fmt.Errorf("creating %s: %w", b.Name, err)
		}
		created[b.Name] = time.Now()
	}
	if err := waitFor(5*time.Minute, func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(seen) < n {
			return fmt.Errorf("%d of %d StatefulSets", len(seen), n)
		}
		return nil
	}); err != nil {
		return err
	}
	var latencies []float64
	mu.Lock()
	for name, t := range created {
		latencies = append(latencies, float64(seen[name].Sub(t).Microseconds())/1000)
	}
	mu.Unlock()
	sort.Float64s(latencies)

	logf("waiting for every broker to report status")
	if err := waitFor(5*time.Minute, func() error {
		var list v1alpha1.MQTTBrokerList
		if err := env.Client.List(ctx, &list, client.InNamespace(ns)); err != nil {
			return err
		}
		for _, b := range list.Items {
			if b.Status.ObservedGeneration != b.Generation {
				return fmt.Errorf("%s not yet observed", b.Name)
			}
		}
		return nil
	}); err != nil {
		return err
	}
	// Let the last status writes echo through the watches before measuring rest.
	if err := waitFor(time.Minute, func() error {
		before, _ := reconcileTotal(metricsAddr)
		time.Sleep(2 * time.Second)
		after, err := reconcileTotal(metricsAddr)
		if err != nil || after != before {
			return fmt.Errorf("still reconciling (%v -> %v)", before, after)
		}
		return nil
	}); err != nil {
		return err
	}
	logf("counting reconciles at rest for %v", restWindow)
	before, err := reconcileTotal(metricsAddr)
	if err != nil {
		return err
	}
	time.Sleep(restWindow) // the measurement window itself
	after, err := reconcileTotal(metricsAddr)
	if err != nil {
		return err
	}
	rss, hwm, err := memory(cmd.Process.Pid)
	if err != nil {
		return err
	}

	fmt.Printf("brokers=%d\n", n)
	fmt.Printf("reconcile_to_children_ms_p50=%.1f\n", percentile(latencies, 0.50))
	fmt.Printf("reconcile_to_children_ms_p99=%.1f\n", percentile(latencies, 0.99))
	fmt.Printf("operator_rss_mib=%.1f\n", rss)
	fmt.Printf("operator_peak_rss_mib=%.1f\n", hwm)
	fmt.Printf("reconciles_at_rest_per_min=%.1f\n", (after-before)/restWindow.Minutes())
	return nil
}

func percentile(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted)-1) * p)
	return sorted[i]
}

func waitFor(timeout time.Duration, check func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := check()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %v: %w", timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func freeAddress() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// reconcileTotal reads controller_runtime_reconcile_total for the broker
// controller from the operator's Prometheus endpoint.
func reconcileTotal(addr string) (float64, error) {
	resp, err := http.Get("http://" + addr + "/metrics")
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
		if strings.HasPrefix(line, "controller_runtime_reconcile_total{") && strings.Contains(line, `controller="mqttbroker"`) {
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
		return 0, errors.New("controller_runtime_reconcile_total for mqttbroker not exported yet")
	}
	return total, nil
}

// memory returns the resident and peak resident memory of pid in MiB.
func memory(pid int) (rss, hwm float64, err error) {
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
		kib, _ := strconv.ParseFloat(fields[1], 64)
		switch fields[0] {
		case "VmRSS:":
			rss = kib / 1024
		case "VmHWM:":
			hwm = kib / 1024
		}
	}
	return rss, hwm, s.Err()
}
