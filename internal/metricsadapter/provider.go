// Package metricsadapter serves the brokers' own figures through the
// Kubernetes custom metrics API (custom.metrics.k8s.io), so that a
// HorizontalPodAutoscaler can scale an MQTTBroker on its clients or its
// message rate per pod. It reads each broker pod's Prometheus endpoint when
// the API asks, as the resource metrics API reads the kubelets: no
// Prometheus needed.
package metricsadapter

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/metrics/pkg/apis/custom_metrics"
	"sigs.k8s.io/custom-metrics-apiserver/pkg/provider"

	"github.com/mqtt-operator/mqtt-operator/internal/resources"
)

// The metrics served, each for pods (a HorizontalPodAutoscaler's "Pods"
// metric source).
const (
	// ClientsMetric is the number of MQTT clients logged in to the pod.
	ClientsMetric = resources.ClientsMetric
	// MessagesMetric is PUBLISH packets per second through the pod, in
	// and out, over the time since the previous reading (at least
	// RateWindow).
	MessagesMetric = resources.MessagesMetric
)

// Defaults.
const (
	// DefaultMetricsPort is where a broker pod serves /metrics.
	DefaultMetricsPort = 9090
	// RateWindow is the shortest time a message rate is measured over: a
	// pod read for the first time (or after a long pause) is read twice,
	// this far apart.
	RateWindow = time.Second
	// reuseFor is how long one reading answers further questions: an
	// autoscaler asks for both metrics of a broker at once.
	reuseFor = time.Second
	// staleAfter is when an earlier reading is too old to measure a rate
	// from (an autoscaler asks every 15 s by default).
	staleAfter = 2 * time.Minute
	// forgetAfter drops what the adapter holds of a pod nobody asked about
	// for this long (a deleted pod, a broker no longer autoscaled).
	forgetAfter = 10 * time.Minute
	// scrapeTimeout bounds one pod's answer: a pod that does not answer
	// is left out of the list, as the resource metrics API does.
	scrapeTimeout = 2 * time.Second
)

var podsResource = schema.GroupResource{Resource: "pods"}

// Provider answers the custom metrics API for broker pods.
type Provider struct {
	pods PodLister
	port int
	http *http.Client
	now  func() time.Time

	mu    sync.Mutex
	state map[types.UID]*podState
}

// reading is one scrape of a pod.
type reading struct {
	at time.Time
	f  figures
}

type podState struct {
	prev, last reading
	asked      time.Time
}

// PodLister finds pods by namespace: a client-go PodLister, or one per
// namespace where the adapter may read only some.
type PodLister interface {
	Pods(namespace string) corelisters.PodNamespaceLister
}

// New serves the broker pods pods lists (the caller's informer should hold
// only broker pods: the operator's labels). port is where their /metrics
// are; 0 means DefaultMetricsPort.
func New(pods PodLister, port int) *Provider {
	if port == 0 {
		port = DefaultMetricsPort
	}
	return &Provider{
		pods: pods, port: port,
		// Never through a proxy from the environment: the pods are on the
		// cluster network.
		http:  &http.Client{Timeout: scrapeTimeout, Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 2, IdleConnTimeout: time.Minute}},
		now:   time.Now,
		state: map[types.UID]*podState{},
	}
}

// ListAllMetrics lists what the adapter serves.
func (p *Provider) ListAllMetrics() []provider.CustomMetricInfo {
	return []provider.CustomMetricInfo{
		{GroupResource: podsResource, Namespaced: true, Metric: ClientsMetric},
		{GroupResource: podsResource, Namespaced: true, Metric: MessagesMetric},
	}
}

// GetMetricByName answers for one pod.
func (p *Provider) GetMetricByName(ctx context.Context, name types.NamespacedName, info provider.CustomMetricInfo, _ labels.Selector) (*custom_metrics.MetricValue, error) {
	if err := served(info); err != nil {
		return nil, err
	}
	pod, err := p.pods.Pods(name.Namespace).Get(name.Name)
	if err != nil || !scrapable(pod) {
		return nil, provider.NewMetricNotFoundForError(info.GroupResource, info.Metric, name.Name)
	}
	values, errs := p.values(ctx, []*corev1.Pod{pod}, info.Metric)
	if len(values) == 0 {
		return nil, fmt.Errorf("reading %s from pod %s/%s: %w", info.Metric, name.Namespace, name.Name, errors.Join(errs...))
	}
	return &values[0], nil
}

// GetMetricBySelector answers for the broker pods of a namespace that match
// selector (an autoscaler passes its target's status.selector). A pod that
// does not answer is left out, as the resource metrics API leaves out a pod
// without figures; if none answers, the error says why.
func (p *Provider) GetMetricBySelector(ctx context.Context, namespace string, selector labels.Selector, info provider.CustomMetricInfo, _ labels.Selector) (*custom_metrics.MetricValueList, error) {
	if err := served(info); err != nil {
		return nil, err
	}
	all, err := p.pods.Pods(namespace).List(selector)
	if err != nil {
		return nil, err
	}
	var pods []*corev1.Pod
	for _, pod := range all {
		if scrapable(pod) {
			pods = append(pods, pod)
		}
	}
	values, errs := p.values(ctx, pods, info.Metric)
	if len(values) == 0 && len(errs) > 0 {
		return nil, fmt.Errorf("reading %s: no pod answered: %w", info.Metric, errors.Join(errs...))
	}
	return &custom_metrics.MetricValueList{Items: values}, nil
}

func served(info provider.CustomMetricInfo) error {
	if info.GroupResource != podsResource || (info.Metric != ClientsMetric && info.Metric != MessagesMetric) {
		return provider.NewMetricNotFoundError(info.GroupResource, info.Metric)
	}
	return nil
}

// scrapable: a running pod with an address. A pod being deleted still
// counts while it runs (it drains its clients).
func scrapable(pod *corev1.Pod) bool {
	return pod.Status.Phase == corev1.PodRunning && pod.Status.PodIP != ""
}

// values reads the pods in parallel (a broker has at most 16).
func (p *Provider) values(ctx context.Context, pods []*corev1.Pod, metric string) ([]custom_metrics.MetricValue, []error) {
	out := make([]*custom_metrics.MetricValue, len(pods))
	errs := make([]error, len(pods))
	var wg sync.WaitGroup
	for i, pod := range pods {
		wg.Go(func() { out[i], errs[i] = p.value(ctx, pod, metric) })
	}
	wg.Wait()
	p.forget()
	var values []custom_metrics.MetricValue
	var failed []error
	for i := range pods {
		if out[i] != nil {
			values = append(values, *out[i])
		} else if errs[i] != nil {
			failed = append(failed, errs[i])
		}
	}
	return values, failed
}

func (p *Provider) value(ctx context.Context, pod *corev1.Pod, metric string) (*custom_metrics.MetricValue, error) {
	prev, last, err := p.readings(ctx, pod, metric == MessagesMetric)
	if err != nil {
		return nil, fmt.Errorf("pod %s: %w", pod.Name, err)
	}
	v := &custom_metrics.MetricValue{
		DescribedObject: custom_metrics.ObjectReference{Kind: "Pod", APIVersion: "/v1", Namespace: pod.Namespace, Name: pod.Name},
		Metric:          custom_metrics.MetricIdentifier{Name: metric},
		Timestamp:       metav1.NewTime(last.at),
	}
	switch metric {
	case ClientsMetric:
		v.Value = *resource.NewQuantity(int64(last.f.clients), resource.DecimalSI)
	case MessagesMetric:
		dt := last.at.Sub(prev.at)
		delta := last.f.messages - prev.f.messages
		if delta < 0 { // the broker restarted in between: its counters began again
			delta = last.f.messages
		}
		rate := delta / dt.Seconds()
		v.Value = *resource.NewMilliQuantity(int64(math.Round(rate*1000)), resource.DecimalSI)
		v.WindowSeconds = new(int64(math.Ceil(dt.Seconds())))
	}
	return v, nil
}

// readings returns the pod's last two readings, reading it as needed: once
// when the last reading is older than reuseFor, and, for a rate, twice
// RateWindow apart when there is no earlier reading to measure from.
func (p *Provider) readings(ctx context.Context, pod *corev1.Pod, rate bool) (reading, reading, error) {
	now := p.now()
	p.mu.Lock()
	s := p.state[pod.UID]
	if s == nil {
		s = &podState{}
		p.state[pod.UID] = s
	}
	s.asked = now
	prev, last := s.prev, s.last
	p.mu.Unlock()
	fresh := !last.at.IsZero() && now.Sub(last.at) < reuseFor
	if fresh && (!rate || (!prev.at.IsZero() && last.at.Sub(prev.at) <= staleAfter)) {
		return prev, last, nil
	}
	url := "http://" + net.JoinHostPort(pod.Status.PodIP, strconv.Itoa(p.port)) + "/metrics"
	read := func() (reading, error) {
		f, err := scrape(ctx, p.http, url)
		return reading{at: p.now(), f: f}, err
	}
	if !fresh {
		r, err := read()
		if err != nil {
			return reading{}, reading{}, err
		}
		prev, last = last, r
	}
	if rate && (prev.at.IsZero() || last.at.Sub(prev.at) > staleAfter) {
		select {
		case <-ctx.Done():
			return reading{}, reading{}, ctx.Err()
		case <-time.After(RateWindow):
		}
		r, err := read()
		if err != nil {
			return reading{}, reading{}, err
		}
		prev, last = last, r
	}
	p.mu.Lock()
	if s.last.at.Before(last.at) { // a parallel question may have read later
		s.prev, s.last = prev, last
	}
	p.mu.Unlock()
	return prev, last, nil
}

// forget drops pods nobody asked about for forgetAfter.
func (p *Provider) forget() {
	now := p.now()
	p.mu.Lock()
	defer p.mu.Unlock()
	for uid, s := range p.state {
		if now.Sub(s.asked) > forgetAfter {
			delete(p.state, uid)
		}
	}
}
