package metricsadapter

import (
	"context"
	"fmt"
	"sync"

	"github.com/spf13/pflag"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/component-base/metrics/legacyregistry"
	"sigs.k8s.io/custom-metrics-apiserver/pkg/apiserver/metrics"
	basecmd "sigs.k8s.io/custom-metrics-apiserver/pkg/cmd"
)

// BrokerPodSelector selects the pods the operator makes for brokers; the
// adapter watches only those.
const BrokerPodSelector = "app.kubernetes.io/name=mqtt-broker,app.kubernetes.io/managed-by=mqtt-operator"

var registerOnce sync.Once

// Run serves the custom metrics API until ctx ends. args are the command
// line without the program name: the generic API server flags
// (--secure-port, --tls-cert-file, --tls-private-key-file, the delegated
// authentication and authorization ones) plus --lister-kubeconfig
// (in-cluster when empty), --metrics-port and --watch-namespaces.
func Run(ctx context.Context, args []string) error {
	a := &basecmd.AdapterBase{Name: "mqtt-operator-metrics-adapter", FlagSet: pflag.NewFlagSet("metrics-adapter", pflag.ContinueOnError)}
	port := a.Flags().Int("metrics-port", DefaultMetricsPort, "port of the broker pods' /metrics")
	namespaces := a.Flags().StringSlice("watch-namespaces", nil, "namespaces whose broker pods to serve; empty serves all (and needs to list pods cluster-wide)")
	if err := a.Flags().Parse(args); err != nil {
		return err
	}
	cfg, err := a.ClientConfig()
	if err != nil {
		return err
	}
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("creating the Kubernetes client: %w", err)
	}
	// Only broker pods, and of them only what the adapter reads: an
	// operator of a thousand tenants must not cache every pod whole.
	options := []informers.SharedInformerOption{
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = BrokerPodSelector }),
		informers.WithTransform(trimPod),
	}
	var factories []informers.SharedInformerFactory
	var lister PodLister
	if len(*namespaces) == 0 {
		f := informers.NewSharedInformerFactoryWithOptions(kube, 0, options...)
		lister = f.Core().V1().Pods().Lister()
		factories = append(factories, f)
	} else {
		byNamespace := namespaceListers{}
		for _, ns := range *namespaces {
			f := informers.NewSharedInformerFactoryWithOptions(kube, 0, append(options, informers.WithNamespace(ns))...)
			byNamespace[ns] = f.Core().V1().Pods().Lister()
			factories = append(factories, f)
		}
		lister = byNamespace
	}
	a.WithCustomMetrics(New(lister, *port))
	var regErr error
	registerOnce.Do(func() { regErr = metrics.RegisterMetrics(legacyregistry.Register) })
	if regErr != nil {
		return fmt.Errorf("registering the adapter's metrics: %w", regErr)
	}
	for _, f := range factories {
		f.Start(ctx.Done())
		for typ, ok := range f.WaitForCacheSync(ctx.Done()) {
			if !ok {
				return fmt.Errorf("the %v cache did not sync", typ)
			}
		}
	}
	return a.Run(ctx)
}

// trimPod keeps what the provider reads of a pod.
func trimPod(obj any) (any, error) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil // a tombstone
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: pod.Name, Namespace: pod.Namespace, UID: pod.UID, Labels: pod.Labels,
			ResourceVersion: pod.ResourceVersion, DeletionTimestamp: pod.DeletionTimestamp,
		},
		Status: corev1.PodStatus{Phase: pod.Status.Phase, PodIP: pod.Status.PodIP},
	}, nil
}

var _ toolscache.TransformFunc = trimPod

// namespaceListers serves the namespaces the adapter watches; any other is
// empty.
type namespaceListers map[string]corelisters.PodLister

func (n namespaceListers) Pods(namespace string) corelisters.PodNamespaceLister {
	if l, ok := n[namespace]; ok {
		return l.Pods(namespace)
	}
	return emptyLister.Pods(namespace)
}

var emptyLister = corelisters.NewPodLister(toolscache.NewIndexer(toolscache.MetaNamespaceKeyFunc, toolscache.Indexers{}))
