package localpods

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	apiruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/mqtt-operator/mqtt-operator/internal/resources"
)

// DefaultVolumeSyncDelay is how long a ConfigMap or Secret change takes to
// reach running pods' files unless Options say otherwise. A real kubelet takes
// up to a minute or more; one second keeps tests of the file path quick.
const DefaultVolumeSyncDelay = time.Second

// Options configure a Harness.
type Options struct {
	// BrokerBinary is the program every pod runs, whatever its image says
	// (BuildBroker builds it). Required.
	BrokerBinary string
	// WorkDir holds the pods' directories: volumes, and data that outlives
	// pods. Empty means a temporary directory that Stop removes.
	WorkDir string
	// VolumeSyncDelay is how long after a ConfigMap or Secret changes its
	// new content appears in running pods' files; 0 means
	// DefaultVolumeSyncDelay. Set it long to prove a change arrived another
	// way (the operator's push), short to prove the file path.
	VolumeSyncDelay time.Duration
	// VolumeSyncDelayOf overrides VolumeSyncDelay for the volumes it names
	// (by volume name in the pod spec): a suite can keep the auth volume
	// slow, to prove pushes, while certificates, which reach a broker only
	// through its files, sync fast.
	VolumeSyncDelayOf map[string]time.Duration
	// Namespaces limits the harness to pods in these namespaces, so tests
	// can run one harness each; empty means every namespace.
	Namespaces []string
	// Log receives the brokers' output, each line prefixed with
	// "namespace/pod", and the harness's own errors. Nil discards it;
	// Output still returns a pod's output.
	Log io.Writer
}

// Harness stands in for the StatefulSet controller and the kubelet. Two
// harnesses must not watch the same namespace (see Options.Namespaces).
type Harness struct {
	opts    Options
	workDir string
	ownDir  bool
	client  client.Client
	cache   cache.Cache
	queue   workqueue.TypedRateLimitingInterface[types.NamespacedName]
	ips     *ipAllocator
	logMu   sync.Mutex
	log     *slog.Logger // the harness's own events, on Options.Log
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	stop    sync.Once

	mu       sync.Mutex
	runtimes map[types.NamespacedName]*podRuntime // by pod
	outputs  map[types.NamespacedName]*podOutput  // by pod, across its re-creations
}

// workers is how many StatefulSets sync at once.
const workers = 2

// Start watches the operator's StatefulSets through cfg and runs their pods
// until Stop. ctx bounds only the start (the informers' first sync).
func Start(ctx context.Context, cfg *rest.Config, opts Options) (*Harness, error) {
	if opts.BrokerBinary == "" {
		return nil, errors.New("localpods: Options.BrokerBinary is required (see BuildBroker)")
	}
	if opts.VolumeSyncDelay <= 0 {
		opts.VolumeSyncDelay = DefaultVolumeSyncDelay
	}
	h := &Harness{
		opts: opts, workDir: opts.WorkDir, ips: newIPAllocator(),
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.NewTypedItemExponentialFailureRateLimiter[types.NamespacedName](20*time.Millisecond, 2*time.Second),
			workqueue.TypedRateLimitingQueueConfig[types.NamespacedName]{}), // unnamed: no global metrics
		runtimes: map[types.NamespacedName]*podRuntime{},
		outputs:  map[types.NamespacedName]*podOutput{},
	}
	h.log = slog.New(slog.DiscardHandler)
	if opts.Log != nil {
		h.log = slog.New(slog.NewTextHandler(lockedWriter{&h.logMu, opts.Log}, nil)).With("component", "localpods")
	}
	if h.workDir == "" {
		dir, err := os.MkdirTemp("", "localpods-")
		if err != nil {
			return nil, fmt.Errorf("localpods: creating work directory: %w", err)
		}
		h.workDir, h.ownDir = dir, true
	}
	// Absolute, because the rewritten paths are used from the pod's directory.
	abs, err := filepath.Abs(h.workDir)
	if err != nil {
		return nil, fmt.Errorf("localpods: resolving work directory: %w", err)
	}
	h.workDir = abs
	if err := h.connect(ctx, cfg); err != nil {
		h.Stop()
		return nil, err
	}
	return h, nil
}

func (h *Harness) connect(ctx context.Context, cfg *rest.Config) error {
	cfg = rest.CopyConfig(cfg)
	cfg.UserAgent = "localpods"
	scheme := apiruntime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return fmt.Errorf("localpods: building scheme: %w", err)
	}
	var err error
	if h.client, err = client.New(cfg, client.Options{Scheme: scheme}); err != nil {
		return fmt.Errorf("localpods: creating client: %w", err)
	}
	managed := cache.ByObject{Label: labels.SelectorFromSet(labels.Set{resources.LabelManagedBy: resources.OperatorName})}
	opts := cache.Options{Scheme: scheme, ByObject: map[client.Object]cache.ByObject{
		&appsv1.StatefulSet{}: managed, &corev1.Pod{}: managed,
	}}
	if len(h.opts.Namespaces) > 0 {
		opts.DefaultNamespaces = map[string]cache.Config{}
		for _, ns := range h.opts.Namespaces {
			opts.DefaultNamespaces[ns] = cache.Config{}
		}
	}
	h.cache, err = cache.New(cfg, opts)
	if err != nil {
		return fmt.Errorf("localpods: creating cache: %w", err)
	}
	for obj, enqueue := range map[client.Object]func(client.Object){
		&appsv1.StatefulSet{}: func(o client.Object) { h.queue.Add(client.ObjectKeyFromObject(o)) },
		&corev1.Pod{}:         h.enqueueOwner,
		&corev1.ConfigMap{}:   h.enqueueNamespace,
		&corev1.Secret{}:      h.enqueueNamespace,
	} {
		inf, err := h.cache.GetInformer(ctx, obj)
		if err != nil {
			return fmt.Errorf("localpods: watching %T: %w", obj, err)
		}
		if _, err := inf.AddEventHandler(eventHandler(enqueue)); err != nil {
			return fmt.Errorf("localpods: watching %T: %w", obj, err)
		}
	}
	runCtx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	h.wg.Go(func() { _ = h.cache.Start(runCtx) })
	if !h.cache.WaitForCacheSync(ctx) {
		return fmt.Errorf("localpods: informers did not sync: %w", context.Cause(ctx))
	}
	for range workers {
		h.wg.Go(func() { h.work(runCtx) })
	}
	return nil
}

func eventHandler(enqueue func(client.Object)) toolscache.ResourceEventHandler {
	handle := func(obj any) {
		if d, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
			obj = d.Obj
		}
		if o, ok := obj.(client.Object); ok {
			enqueue(o)
		}
	}
	return toolscache.ResourceEventHandlerFuncs{AddFunc: handle, UpdateFunc: func(_, o any) { handle(o) }, DeleteFunc: handle}
}

func (h *Harness) enqueueOwner(o client.Object) {
	if owner := metav1.GetControllerOf(o); owner != nil && owner.Kind == "StatefulSet" {
		h.queue.Add(types.NamespacedName{Namespace: o.GetNamespace(), Name: owner.Name})
	}
}

// enqueueNamespace wakes every StatefulSet of the namespace: a ConfigMap or
// Secret may be a volume that a pod waits for or must sync.
func (h *Harness) enqueueNamespace(o client.Object) {
	var list appsv1.StatefulSetList
	if err := h.cache.List(context.Background(), &list, client.InNamespace(o.GetNamespace())); err != nil {
		return
	}
	for i := range list.Items {
		h.queue.Add(client.ObjectKeyFromObject(&list.Items[i]))
	}
}

func (h *Harness) work(ctx context.Context) {
	for {
		key, shutdown := h.queue.Get()
		if shutdown {
			return
		}
		retry, err := h.syncStatefulSet(ctx, key)
		switch {
		case err != nil && ctx.Err() == nil:
			h.log.Error("syncing StatefulSet", "statefulset", key.String(), "error", err.Error())
			h.queue.AddRateLimited(key)
		case retry > 0:
			h.queue.Forget(key)
			h.queue.AddAfter(key, retry)
		default:
			h.queue.Forget(key)
		}
		h.queue.Done(key)
	}
}

// lockedWriter serialises the harness's own log lines with the pods' lines
// on the shared Options.Log.
type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func (h *Harness) runtime(pod types.NamespacedName) *podRuntime {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.runtimes[pod]
}

// newRuntime puts a pod on the "node": its address, its directory.
func (h *Harness) newRuntime(pod *corev1.Pod) (*podRuntime, error) {
	key := client.ObjectKeyFromObject(pod)
	ip, err := h.ips.addr(key)
	if err != nil {
		return nil, fmt.Errorf("assigning an address to pod %s: %w", key, err)
	}
	owner := types.NamespacedName{Namespace: pod.Namespace, Name: metav1.GetControllerOf(pod).Name}
	rt := &podRuntime{
		key: key, uid: pod.UID, owner: owner, ip: ip, created: time.Now(), grace: terminationGrace(pod),
		dir:    filepath.Join(h.workDir, pod.Namespace, "pods", pod.Name+"-"+string(pod.UID)),
		notify: func() { h.queue.Add(owner) },
		stopCh: make(chan struct{}), done: make(chan struct{}),
	}
	if err := os.MkdirAll(rt.dir, 0o755); err != nil {
		return nil, fmt.Errorf("creating directory of pod %s: %w", key, err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	rt.out = h.outputs[key]
	if rt.out == nil {
		rt.out = newPodOutput(key.String(), h.opts.Log, &h.logMu)
		h.outputs[key] = rt.out
	}
	h.runtimes[key] = rt
	rt.out.note("pod placed", "uid", string(pod.UID), "ip", ip)
	return rt, nil
}

// forget removes a pod whose process has ended, and its directory: its
// emptyDir and materialised volumes end with it; claims live elsewhere.
func (h *Harness) forget(rt *podRuntime) {
	h.mu.Lock()
	if h.runtimes[rt.key] == rt {
		delete(h.runtimes, rt.key)
	}
	h.mu.Unlock()
	_ = os.RemoveAll(rt.dir)
}

// reapRuntimes stops the owner's pods whose objects are gone (deleted with no
// grace period, or with their StatefulSet).
func (h *Harness) reapRuntimes(owner types.NamespacedName, pods []*corev1.Pod) {
	live := map[types.UID]bool{}
	for _, p := range pods {
		live[p.UID] = true
	}
	h.mu.Lock()
	var gone []*podRuntime
	for _, rt := range h.runtimes {
		if rt.owner == owner && !live[rt.uid] {
			gone = append(gone, rt)
		}
	}
	h.mu.Unlock()
	for _, rt := range gone {
		rt.stop(rt.grace)
		if rt.finished() {
			h.forget(rt)
		}
	}
}
