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
	"context"
	"flag"
	"fmt"
	"os"
	"sort"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/mqtt-operator/mqtt-operator/api/v1alpha1"
	"github.com/mqtt-operator/mqtt-operator/internal/testenv"
	"github.com/mqtt-operator/mqtt-operator/test/bench/measure"
	"github.com/mqtt-operator/mqtt-operator/test/bench/operatorproc"
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
	op, err := operatorproc.Start(env, managerPath)
	if err != nil {
		return err
	}
	defer op.Stop()
	reconcileTotal := func() (float64, error) { return op.ReconcileTotal("mqttbroker") }

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
	if err := measure.WaitFor(5*time.Minute, func() error {
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
	if err := measure.WaitFor(5*time.Minute, func() error {
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
	if err := measure.WaitFor(time.Minute, func() error {
		before, _ := reconcileTotal()
		time.Sleep(2 * time.Second)
		after, err := reconcileTotal()
		if err != nil || after != before {
			return fmt.Errorf("still reconciling (%v -> %v)", before, after)
		}
		return nil
	}); err != nil {
		return err
	}
	logf("counting reconciles at rest for %v", restWindow)
	before, err := reconcileTotal()
	if err != nil {
		return err
	}
	time.Sleep(restWindow) // the measurement window itself
	after, err := reconcileTotal()
	if err != nil {
		return err
	}
	rss, hwm, err := op.Memory()
	if err != nil {
		return err
	}

	fmt.Printf("brokers=%d\n", n)
	fmt.Printf("reconcile_to_children_ms_p50=%.1f\n", measure.Percentile(latencies, 0.50))
	fmt.Printf("reconcile_to_children_ms_p99=%.1f\n", measure.Percentile(latencies, 0.99))
	fmt.Printf("operator_rss_mib=%.1f\n", rss)
	fmt.Printf("operator_peak_rss_mib=%.1f\n", hwm)
	fmt.Printf("reconciles_at_rest_per_min=%.1f\n", (after-before)/restWindow.Minutes())
	return nil
}
