package metricsadapter

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	corelisters "k8s.io/client-go/listers/core/v1"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/custom-metrics-apiserver/pkg/provider"
)

const brokerMetrics = `# HELP mqtt_clients_connected Authenticated MQTT clients.
# TYPE mqtt_clients_connected gauge
mqtt_clients_connected %d
mqtt_connections 12
mqtt_messages_received_total{qos="0"} %d
mqtt_messages_received_total{qos="1"} 5
mqtt_messages_sent_total{qos="0"} 0
mqtt_messages_sent_total{qos="1"} 5
mqtt_messages_dropped_total{reason="a reason, with spaces } and a brace"} 7
`

func TestParseFigures(t *testing.T) {
	f, err := parseFigures(strings.NewReader(fmt.Sprintf(brokerMetrics, 9, 100)))
	if err != nil || f.clients != 9 || f.messages != 110 {
		t.Fatalf("figures %+v, %v; want 9 clients and 110 messages", f, err)
	}
	if _, err := parseFigures(strings.NewReader("node_cpu_seconds_total 5\n")); err == nil || !strings.Contains(err.Error(), "not an mqtt-operator broker") {
		t.Errorf("a pod that is not a broker: %v", err)
	}
	// A hostile pod's endless answer costs the adapter a bounded read.
	endless := strings.NewReader(strings.Repeat("mqtt_x 1\n", 2*maxScrapeBytes/9))
	if _, err := parseFigures(endless); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("an endless answer: %v", err)
	}
	if _, err := parseFigures(strings.NewReader(strings.Repeat("x", 100<<10))); err == nil {
		t.Error("a 100 KiB line was accepted")
	}
}

// A broker pod served by httptest on 127.0.0.1, its counter set by the test.
type fakeBroker struct {
	clients, received atomic.Int64
	scrapes           atomic.Int64
	// step is added to received at each scrape: messages between readings.
	step atomic.Int64
}

func servePod(t *testing.T, name string) (*fakeBroker, *corev1.Pod, int) {
	b := &fakeBroker{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		b.scrapes.Add(1)
		_, _ = fmt.Fprintf(w, brokerMetrics, b.clients.Load(), b.received.Add(b.step.Load()))
	}))
	t.Cleanup(srv.Close)
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	p, _ := strconv.Atoi(port)
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "tenant", Name: name, UID: types.UID(name), Labels: map[string]string{"app": "b"}},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "127.0.0.1"},
	}
	return b, pod, p
}

func lister(pods ...*corev1.Pod) corelisters.PodLister {
	idx := toolscache.NewIndexer(toolscache.MetaNamespaceKeyFunc, toolscache.Indexers{toolscache.NamespaceIndex: toolscache.MetaNamespaceIndexFunc})
	for _, p := range pods {
		_ = idx.Add(p)
	}
	return corelisters.NewPodLister(idx)
}

func TestProviderServesClientsAndRates(t *testing.T) {
	b, pod, port := servePod(t, "telemetry-0")
	pending := pod.DeepCopy()
	pending.Name, pending.UID, pending.Status = "telemetry-1", "telemetry-1", corev1.PodStatus{Phase: corev1.PodPending}
	p := New(lister(pod, pending), port)
	ctx := context.Background()
	clients := provider.CustomMetricInfo{GroupResource: podsResource, Namespaced: true, Metric: ClientsMetric}
	messages := provider.CustomMetricInfo{GroupResource: podsResource, Namespaced: true, Metric: MessagesMetric}
	sel := labels.SelectorFromSet(labels.Set{"app": "b"})

	b.clients.Store(42)
	b.received.Store(1000)
	list, err := p.GetMetricBySelector(ctx, "tenant", sel, clients, labels.Everything())
	if err != nil || len(list.Items) != 1 || list.Items[0].Value.Value() != 42 || list.Items[0].DescribedObject.Name != "telemetry-0" {
		t.Fatalf("clients: %+v, %v; want 42 for telemetry-0 only (telemetry-1 is pending)", list, err)
	}
	// The first rate needs two readings RateWindow apart: 500 messages
	// between them.
	b.step.Store(500)
	list, err = p.GetMetricBySelector(ctx, "tenant", sel, messages, labels.Everything())
	b.step.Store(0)
	if err != nil || len(list.Items) != 1 {
		t.Fatalf("messages: %+v, %v", list, err)
	}
	rate := list.Items[0].Value.AsApproximateFloat64()
	if rate < 250 || rate > 500 || list.Items[0].WindowSeconds == nil {
		t.Fatalf("rate %v over %v s, want about 500 over 1 s", rate, list.Items[0].WindowSeconds)
	}
	// Asked again at once: the same readings, no new scrape.
	before := b.scrapes.Load()
	if _, err := p.GetMetricByName(ctx, types.NamespacedName{Namespace: "tenant", Name: "telemetry-0"}, clients, labels.Everything()); err != nil {
		t.Fatal(err)
	}
	if b.scrapes.Load() != before {
		t.Error("a question within a second of the last scraped the pod again")
	}
	// The pod restarted (counters from zero): the rate is what it counted since.
	time.Sleep(reuseFor)
	b.received.Store(30)
	list, err = p.GetMetricBySelector(ctx, "tenant", sel, messages, labels.Everything())
	if err != nil || list.Items[0].Value.Sign() < 0 {
		t.Fatalf("after a restart: %+v, %v", list, err)
	}

	// What it does not serve.
	if _, err := p.GetMetricBySelector(ctx, "tenant", sel, provider.CustomMetricInfo{GroupResource: podsResource, Namespaced: true, Metric: "mqtt_other"}, labels.Everything()); !apierrors.IsNotFound(err) {
		t.Errorf("an unknown metric: %v", err)
	}
	if _, err := p.GetMetricByName(ctx, types.NamespacedName{Namespace: "tenant", Name: "telemetry-1"}, clients, labels.Everything()); !apierrors.IsNotFound(err) {
		t.Errorf("a pending pod: %v", err)
	}
}

// A pod that does not answer is left out; when none answers, the error
// says which and why, for `kubectl describe hpa`.
func TestProviderLeavesOutPodsThatDoNotAnswer(t *testing.T) {
	b, pod, port := servePod(t, "telemetry-0")
	b.clients.Store(3)
	dead := pod.DeepCopy()
	dead.Name, dead.UID, dead.Status.PodIP = "telemetry-1", "telemetry-1", "127.0.0.254"
	p := New(lister(pod, dead), port)
	info := provider.CustomMetricInfo{GroupResource: podsResource, Namespaced: true, Metric: ClientsMetric}
	list, err := p.GetMetricBySelector(context.Background(), "tenant", labels.Everything(), info, labels.Everything())
	if err != nil || len(list.Items) != 1 || list.Items[0].DescribedObject.Name != "telemetry-0" {
		t.Fatalf("%+v, %v; want telemetry-0 alone", list, err)
	}
	p = New(lister(dead), port)
	if _, err := p.GetMetricBySelector(context.Background(), "tenant", labels.Everything(), info, labels.Everything()); err == nil || !strings.Contains(err.Error(), "telemetry-1") {
		t.Errorf("no pod answering: %v", err)
	}
}
