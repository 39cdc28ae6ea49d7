package kubectlmqtt

import (
	"bufio"
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/mqtt-operator/mqtt-operator/api/v1alpha1"
	"github.com/mqtt-operator/mqtt-operator/internal/resources"
)

// podFigures is what a pod's /metrics says, at one moment.
type podFigures struct {
	at         time.Time
	ready      bool
	clients    float64
	in, out    float64 // PUBLISH packets received and sent, totals
	revision   string
	generation float64
	scraped    bool
	err        error
}

func (p *plugin) status(ctx context.Context, args []string) error {
	var interval time.Duration
	var noLive bool
	pos, err := flags("status", args, func(fs *flag.FlagSet) {
		fs.DurationVar(&interval, "interval", time.Second, "time between the two scrapes messages/s are computed from")
		fs.BoolVar(&noLive, "no-live", false, "leave out the live figures (they read each pod's /metrics through the API server: pods/proxy)")
	}, -1, "status [BROKER] [--interval 1s] [--no-live]")
	if err != nil {
		return err
	}
	ns := p.namespace()
	var brokers []v1alpha1.MQTTBroker
	if len(pos) == 1 {
		b := &v1alpha1.MQTTBroker{}
		if err := p.c.Get(ctx, client.ObjectKey{Namespace: p.Namespace, Name: pos[0]}, b); err != nil {
			return p.explain(err, "get", "MQTTBroker "+pos[0], p.Namespace)
		}
		brokers = append(brokers, *b)
	} else {
		list := &v1alpha1.MQTTBrokerList{}
		if err := p.c.List(ctx, list, client.InNamespace(ns)); err != nil {
			return p.explain(err, "list", "MQTTBrokers", ns)
		}
		brokers = list.Items
	}
	if len(brokers) == 0 {
		_, _ = fmt.Fprintf(p.Out, "no MQTTBrokers %s\n", where(ns))
		return nil
	}

	type row struct {
		broker v1alpha1.MQTTBroker
		pod    corev1.Pod
		first  podFigures
		second podFigures
	}
	var rows []*row
	var brokerRows []v1alpha1.MQTTBroker
	for _, b := range brokers {
		pods := &corev1.PodList{}
		if err := p.c.List(ctx, pods, client.InNamespace(b.Namespace), client.MatchingLabels(resources.SelectorLabels(&b))); err != nil {
			return p.explain(err, "list", "pods", b.Namespace)
		}
		if len(pods.Items) == 0 {
			brokerRows = append(brokerRows, b)
		}
		for _, pod := range pods.Items {
			rows = append(rows, &row{broker: b, pod: pod})
		}
	}
	if !noLive {
		for _, r := range rows {
			r.first = p.scrape(ctx, &r.pod)
		}
		if len(rows) > 0 {
			select {
			case <-time.After(interval):
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		for _, r := range rows {
			r.second = p.scrape(ctx, &r.pod)
		}
	}

	w := tabwriter.NewWriter(p.Out, 0, 4, 2, ' ', 0)
	_, _ = fmt.Fprintln(w, "NAMESPACE\tBROKER\tREADY\tPOD\tPOD READY\tCLIENTS\tIN/S\tOUT/S\tAUTH BUNDLE")
	for _, r := range rows {
		clients, in, out, bundle := "-", "-", "-", "-"
		switch {
		case noLive:
		case r.second.err != nil:
			clients = "?"
			bundle = r.second.err.Error()
		case r.second.scraped:
			clients = strconv.FormatFloat(r.second.clients, 'f', 0, 64)
			if r.first.scraped {
				dt := r.second.at.Sub(r.first.at).Seconds()
				in = strconv.FormatFloat((r.second.in-r.first.in)/dt, 'f', 1, 64)
				out = strconv.FormatFloat((r.second.out-r.first.out)/dt, 'f', 1, 64)
			}
			if r.second.revision != "" {
				bundle = fmt.Sprintf("%s (generation %.0f)", r.second.revision, r.second.generation)
			}
		}
		_, _ = fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%t\t%s\t%s\t%s\t%s\n", r.broker.Namespace, r.broker.Name, brokerReady(&r.broker),
			r.pod.Name, podReady(&r.pod), clients, in, out, bundle)
	}
	for _, b := range brokerRows {
		_, _ = fmt.Fprintf(w, "%s\t%s\t%s\t-\t-\t-\t-\t-\t-\n", b.Namespace, b.Name, brokerReady(&b))
	}
	return w.Flush()
}

func where(ns string) string {
	if ns == "" {
		return "in any namespace"
	}
	return "in namespace " + ns
}

// brokerReady is the Ready condition as kubectl get shows it: status and reason.
func brokerReady(b *v1alpha1.MQTTBroker) string {
	c := meta.FindStatusCondition(b.Status.Conditions, v1alpha1.ConditionReady)
	if c == nil {
		return "Unknown"
	}
	return fmt.Sprintf("%s (%s)", c.Status, c.Reason)
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// scrape reads a pod's /metrics through the API server (pods/proxy), so it
// needs no network path to the pod and honours the user's RBAC; with
// --direct, from the pod's IP.
func (p *plugin) scrape(ctx context.Context, pod *corev1.Pod) podFigures {
	f := podFigures{at: time.Now()}
	if pod.Status.Phase != corev1.PodRunning {
		return f
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var data []byte
	var err error
	if p.Direct {
		data, err = getDirect(ctx, "http://"+net.JoinHostPort(pod.Status.PodIP, strconv.Itoa(v1alpha1.HealthPort))+"/metrics")
	} else {
		data, err = p.cs.CoreV1().Pods(pod.Namespace).ProxyGet("http", pod.Name, strconv.Itoa(v1alpha1.HealthPort), "/metrics", nil).DoRaw(ctx)
	}
	if err != nil {
		if e := p.explain(err, "get", "pods/proxy (live figures)", pod.Namespace); e != nil && strings.Contains(e.Error(), "you may not") {
			f.err = fmt.Errorf("no pods/proxy right")
		} else {
			f.err = fmt.Errorf("metrics unreachable")
		}
		return f
	}
	f.scraped = true
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		series, value, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
		if err != nil {
			continue
		}
		name, labels, _ := strings.Cut(series, "{")
		switch name {
		case "mqtt_clients_connected":
			f.clients = v
		case "mqtt_ready":
			f.ready = v == 1
		case "mqtt_messages_received_total":
			f.in += v
		case "mqtt_messages_sent_total":
			f.out += v
		case "mqtt_auth_bundle_info":
			if _, rev, ok := strings.Cut(labels, `revision="`); ok {
				f.revision, _, _ = strings.Cut(rev, `"`)
				f.generation = v
			}
		}
	}
	return f
}

func getDirect(ctx context.Context, url string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s", url, resp.Status)
	}
	return io.ReadAll(io.LimitReader(resp.Body, 16<<20))
}
