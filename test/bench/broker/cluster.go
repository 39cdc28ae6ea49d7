package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/mqtt-operator/mqtt-operator/internal/brokerconfig"
	"github.com/mqtt-operator/mqtt-operator/internal/pki"
	"github.com/mqtt-operator/mqtt-operator/test/bench/broker/mqttc"
	"github.com/mqtt-operator/mqtt-operator/test/bench/measure"
)

// The cluster phase (`make bench-cluster`): one clustered broker of
// --cluster-pods pods on loopback, each a broker process as in a pod (routes
// over TLS with a certificate from the cluster's own CA, as the operator
// issues them), next to one unclustered broker for the single-pod baseline.
// Every comparison is made in the same run.

const clusterTopics = "bench/cluster/#"

// benchCluster is the running pods and what restarts one.
type benchCluster struct {
	s      *setup
	bundle *brokerconfig.AuthBundle
	pods   []*target
	mutate []func(*brokerconfig.Config)
	dirs   []string // storage per pod
}

// clusterBundle is the benchmark's bundle and a rule that lets its users
// use bench/cluster/#.
func clusterBundle(users []user) *brokerconfig.AuthBundle {
	b := smallBundle(users, 1)
	acl := benchACL(users)
	acl.Name = "bench/cluster"
	acl.Rules = []brokerconfig.Rule{{Topic: clusterTopics, Access: brokerconfig.AccessPublishSubscribe, Effect: brokerconfig.EffectAllow}}
	b.ACLs = append(b.ACLs, acl)
	return b
}

// startBenchCluster starts n clustered pods at once and waits until every
// one has joined the others.
func startBenchCluster(s *setup, n int) (*benchCluster, error) {
	const name = "bench-cluster"
	dir := filepath.Join(s.dir, "cluster")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	now := time.Now()
	ca, err := pki.NewCA("bench cluster CA", now, 24*time.Hour)
	if err != nil {
		return nil, err
	}
	pair, err := ca.Issue(pki.Request{CommonName: name, DNSNames: []string{name}, Peer: true, Validity: 24 * time.Hour}, now)
	if err != nil {
		return nil, err
	}
	files := map[string][]byte{"ca.crt": ca.CertPEM, "route.crt": pair.CertPEM, "route.key": pair.KeyPEM, "password": []byte("bench-cluster-password-0123456789\n")}
	for f, data := range files {
		if err := os.WriteFile(filepath.Join(dir, f), data, 0o600); err != nil {
			return nil, err
		}
	}
	p, err := ports(n)
	if err != nil {
		return nil, err
	}
	peers := make([]string, n)
	for i := range p {
		peers[i] = loopback(p[i])
	}
	c := &benchCluster{s: s, bundle: clusterBundle(s.users)}
	for i := range n {
		storage := filepath.Join(dir, fmt.Sprintf("pod-%d-data", i))
		c.dirs = append(c.dirs, storage)
		c.mutate = append(c.mutate, func(cfg *brokerconfig.Config) {
			cfg.Storage = brokerconfig.Storage{Path: storage}
			cfg.Cluster = &brokerconfig.Cluster{
				Name: name, NodeName: fmt.Sprintf("pod-%d", i), Address: peers[i], Peers: peers,
				PasswordFile: filepath.Join(dir, "password"),
				TLS:          &brokerconfig.ClusterTLS{CertFile: filepath.Join(dir, "route.crt"), KeyFile: filepath.Join(dir, "route.key"), CAFile: filepath.Join(dir, "ca.crt")},
			}
		})
		c.pods = append(c.pods, nil)
		if err := c.launch(i); err != nil {
			c.stop()
			return nil, err
		}
	}
	for _, pod := range c.pods {
		if err := pod.waitUp(); err != nil {
			c.stop()
			return nil, err
		}
	}
	return c, nil
}

func (c *benchCluster) launch(i int) error {
	if err := os.MkdirAll(c.dirs[i], 0o755); err != nil {
		return err
	}
	t, err := c.s.launchOurs(fmt.Sprintf("pod-%d", i), c.bundle, c.mutate[i])
	c.pods[i] = t
	return err
}

// replace stops pod i, deletes its storage and starts a new one in its
// place, as a pod that is lost and rescheduled with an empty volume. It
// returns once the new pod is ready, and how long that took.
func (c *benchCluster) replace(i int) (time.Duration, error) {
	c.pods[i].Stop()
	if err := os.RemoveAll(c.dirs[i]); err != nil {
		return 0, err
	}
	t0 := time.Now()
	if err := c.launch(i); err != nil {
		return 0, err
	}
	if err := c.pods[i].waitUp(); err != nil {
		return 0, err
	}
	return time.Since(t0), nil
}

// stop stops every pod at once: draining together, they do not hand their
// sessions to one another.
func (c *benchCluster) stop() {
	var wg sync.WaitGroup
	for _, p := range c.pods {
		if p != nil {
			wg.Add(1)
			go func() { defer wg.Done(); p.Stop() }()
		}
	}
	wg.Wait()
}

func (c *benchCluster) alive() error {
	for _, p := range c.pods {
		if err := p.Alive(); err != nil {
			return err
		}
	}
	return nil
}

// clusterPhase runs every cluster measurement; see docs/benchmarks.md.
func clusterPhase(s *setup, f *flags, out *report) error {
	if f.clusterPods < 2 || f.clusterPods > brokerconfig.MaxClusterPeers {
		return fmt.Errorf("--cluster-pods must be 2-%d", brokerconfig.MaxClusterPeers)
	}
	logf("cluster: starting %d clustered pods and one single broker", f.clusterPods)
	single, err := s.startOurs("single", clusterBundle(s.users))
	if err != nil {
		return err
	}
	defer single.Stop()
	c, err := startBenchCluster(s, f.clusterPods)
	if err != nil {
		return err
	}
	defer c.stop()

	want := map[string]bool{}
	for _, st := range strings.Split(f.clusterSteps, ",") {
		want[strings.TrimSpace(st)] = true
	}
	steps := []struct {
		name string
		run  func() error
	}{
		{"memory", func() error { return clusterMemory(c, single, f, out) }},
		{"throughput", func() error { return clusterThroughput(c, single, f, out) }},
		{"latency", func() error { return clusterLatency(c, f, out) }},
		{"takeover", func() error { return clusterTakeover(c, f, out) }},
		{"flood", func() error { return clusterFlood(c, f, out) }},
		{"retained", func() error { return clusterRetained(c, f, out) }},
		{"handover", func() error { return clusterHandover(c, f, out) }},
		{"rebalance", func() error { return clusterRebalance(c, f, out) }},
	}
	for _, st := range steps {
		if !want[st.name] {
			continue
		}
		if err := st.run(); err != nil {
			return fmt.Errorf("cluster %s: %w", st.name, err)
		}
		if err := c.alive(); err != nil {
			return fmt.Errorf("after cluster %s: %w", st.name, err)
		}
	}
	return nil
}

// clusterMemory: resident memory of a pod at rest against the single
// broker's, and per idle subscribed client on one pod (and what each such
// client costs the other pods, which learn its subscription).
func clusterMemory(c *benchCluster, single *target, f *flags, out *report) error {
	time.Sleep(2 * time.Second)
	var podSum int64
	for _, p := range c.pods {
		rss, err := rssKiB(p.PID())
		if err != nil {
			return err
		}
		podSum += rss
	}
	singleRSS, err := rssKiB(single.PID())
	if err != nil {
		return err
	}
	podRSS := podSum / int64(len(c.pods))
	out.add("cluster_rss_kib_at_rest_per_pod", "%d", podRSS)
	out.add("cluster_rss_kib_at_rest_single", "%d", singleRSS)
	logf("memory at rest: %d KiB per pod, %d KiB for the single broker", podRSS, singleRSS)

	n := f.clusterIdle
	res, err := measureIdle(single, n, f.idleConcurrency, nil)
	if err != nil {
		return fmt.Errorf("single idle: %w", err)
	}
	on := c.pods[1]
	var others []*target
	for _, p := range c.pods {
		if p != on {
			others = append(others, p)
		}
	}
	othersBefore := make([]int64, len(others))
	othersAfter := make([]int64, len(others))
	for i, p := range others {
		if othersBefore[i], err = rssKiB(p.PID()); err != nil {
			return err
		}
	}
	podRes, err := measureIdle(on, n, f.idleConcurrency, func() {
		time.Sleep(time.Second) // the other pods learn the subscriptions through their routes
		for i, p := range others {
			othersAfter[i], _ = rssKiB(p.PID())
		}
	})
	if err != nil {
		return fmt.Errorf("pod idle: %w", err)
	}
	var otherDelta int64
	for i := range others {
		otherDelta += othersAfter[i] - othersBefore[i]
	}
	otherPerConn := float64(otherDelta) / float64(len(others)) / float64(max(1, podRes.conns))
	out.add("cluster_rss_kib_per_idle_conn", "%.1f", podRes.perConn())
	out.add("cluster_rss_kib_per_idle_conn_single", "%.1f", res.perConn())
	out.add("cluster_rss_kib_per_idle_conn_on_other_pods", "%.2f", otherPerConn)
	logf("idle: %d clients: %.1f KiB each on a pod (%.2f KiB on each other pod) vs %.1f KiB on the single broker",
		n, podRes.perConn(), otherPerConn, res.perConn())
	return nil
}

// clusterThroughput compares, for each scenario, the single broker, the
// cluster with every client on one pod (same-pod) and the cluster with the
// subscribers (fan-in) or the publisher (fan-out) alone on pod 0 and the
// other side spread over the other pods (cross-pod).
func clusterThroughput(c *benchCluster, single *target, f *flags, out *report) error {
	on := func(t *target) func(int) *target { return func(int) *target { return t } }
	others := func(i int) *target { return c.pods[1+i%(len(c.pods)-1)] }
	variants := []struct {
		name string
		pl   func(sc scenario) placement
	}{
		{"single", func(scenario) placement { return placement{pub: on(single), sub: on(single)} }},
		{"same_pod", func(scenario) placement { return placement{pub: on(c.pods[0]), sub: on(c.pods[0])} }},
		{"cross_pod", func(sc scenario) placement {
			if sc.fanOut {
				return placement{pub: on(c.pods[0]), sub: others}
			}
			return placement{pub: others, sub: on(c.pods[0])}
		}},
	}
	variants = slices.DeleteFunc(variants, func(v struct {
		name string
		pl   func(sc scenario) placement
	}) bool {
		return !slices.Contains(strings.Split(f.clusterVariants, ","), v.name)
	})
	if len(variants) == 0 {
		return fmt.Errorf("--cluster-variants %q names none of single, same_pod, cross_pod", f.clusterVariants)
	}
	warm := f.load
	warm.msgs = max(1, f.load.msgs/10)
	for _, v := range variants {
		for _, sc := range []scenario{{qos: 0}, {qos: 1}} {
			if _, err := runLoadAt(v.pl(sc), sc, warm, 0); err != nil {
				return fmt.Errorf("%s warm-up: %w", v.name, err)
			}
		}
	}
	logf("throughput: %d runs x %d scenarios x single/same-pod/cross-pod", f.runs, len(scenarios))
	results := map[string][]result{}
	runID := 1
	for r := range f.runs {
		for _, sc := range scenarios {
			for k := range variants {
				v := variants[(k+r)%len(variants)]
				res, err := runLoadAt(v.pl(sc), sc, f.load, runID)
				runID++
				if err != nil {
					return fmt.Errorf("%s %s: %w", v.name, sc, err)
				}
				results[v.name+"_"+sc.String()] = append(results[v.name+"_"+sc.String()], res)
				logf("run %d %-9s %-11s %9.0f msg/s  delivered %d/%d  broker cpu %.2fs %s",
					r+1, v.name, sc, res.rate(), res.delivered, res.expected, res.brokerCPU, res.note)
			}
		}
	}
	for _, sc := range scenarios {
		med := func(v string) result { return medianRun(results[v+"_"+sc.String()]) }
		single, same, cross := med("single"), med("same_pod"), med("cross_pod")
		for _, v := range []struct {
			name string
			res  result
		}{{"single", single}, {"same_pod", same}, {"cross_pod", cross}} {
			if len(results[v.name+"_"+sc.String()]) == 0 {
				continue // not among --cluster-variants
			}
			out.add(fmt.Sprintf("cluster_%s_%s_msgs_per_s", sc, v.name), "%.0f", v.res.rate())
			out.add(fmt.Sprintf("cluster_%s_%s_delivered", sc, v.name), "%d/%d", v.res.delivered, v.res.expected)
			out.add(fmt.Sprintf("cluster_%s_%s_cpu_us_per_msg", sc, v.name), "%.2f", 1e6*v.res.brokerCPU/math.Max(1, float64(v.res.delivered)))
		}
		if same.rate() > 0 && cross.rate() > 0 {
			out.add("cross_pod_ratio_"+sc.String(), "%.2f", cross.rate()/same.rate())
		}
		if single.rate() > 0 && same.rate() > 0 {
			out.add("same_pod_vs_single_ratio_"+sc.String(), "%.2f", same.rate()/single.rate())
		}
		logf("  %-11s single %8.0f  same-pod %8.0f  cross-pod %8.0f  cross/same %.2f", sc, single.rate(), same.rate(), cross.rate(), cross.rate()/math.Max(1, same.rate()))
	}
	return nil
}

// latencySub records, for each PUBLISH whose payload starts with a send
// time (unix nanoseconds, big endian), how long it took; QoS 1 ones are
// acknowledged.
type latencySub struct {
	c     *mqttc.Conn
	mu    sync.Mutex
	lat   []time.Duration
	got   chan struct{}
	done  chan struct{}
	count atomic.Int64
}

func newLatencySub(t *target, i int, id, filter string, qos byte) (*latencySub, error) {
	c, err := mqttc.Dial(t.addr, t.options(i, id, 60, 64<<10))
	if err != nil {
		return nil, err
	}
	if err := c.Subscribe(filter, qos); err != nil {
		_ = c.Close()
		return nil, err
	}
	l := &latencySub{c: c, got: make(chan struct{}, 1<<16), done: make(chan struct{})}
	go l.loop()
	return l, nil
}

func (l *latencySub) loop() {
	defer close(l.done)
	for {
		typ, flags, body, err := l.c.ReadPacket()
		if err != nil {
			return
		}
		if typ != mqttc.PUBLISH {
			continue
		}
		now := time.Now()
		if p := mqttc.PublishPayload(flags, body); len(p) >= 8 {
			l.mu.Lock()
			l.lat = append(l.lat, now.Sub(time.Unix(0, int64(binary.BigEndian.Uint64(p)))))
			l.mu.Unlock()
		}
		if id, ok := mqttc.PublishID(flags, body); ok {
			_ = l.c.WritePuback(id)
			_ = l.c.Flush()
		}
		l.count.Add(1)
		select {
		case l.got <- struct{}{}:
		default:
		}
	}
}

func (l *latencySub) stop() {
	_ = l.c.SetReadDeadline(time.Now())
	<-l.done
	_ = l.c.Disconnect()
}

func (l *latencySub) wait(timeout time.Duration) error {
	select {
	case <-l.got:
		return nil
	case <-time.After(timeout):
		return errors.New("a message did not arrive within " + timeout.String())
	}
}

func percentiles(d []time.Duration) (p50, p99 float64) {
	us := make([]float64, len(d))
	for i, v := range d {
		us[i] = float64(v.Microseconds())
	}
	slices.Sort(us)
	return measure.Percentile(us, 0.50), measure.Percentile(us, 0.99)
}

// clusterLatency sends one message at a time from pod 0 to a subscriber on
// pod 0 and one on pod 1: what the cross-pod hop adds to QoS 0 delivery;
// then QoS 1 publishes whose only subscriber is on pod 0, or on pod 1: what
// it adds to the PUBACK (which waits for the other pod to take the message).
func clusterLatency(c *benchCluster, f *flags, out *report) error {
	n := f.clusterLatency
	same, err := newLatencySub(c.pods[0], 60, "lat-same", "bench/cluster/lat/all", 0)
	if err != nil {
		return err
	}
	defer same.stop()
	cross, err := newLatencySub(c.pods[1], 61, "lat-cross", "bench/cluster/lat/all", 0)
	if err != nil {
		return err
	}
	defer cross.stop()
	pub, err := mqttc.Dial(c.pods[0].addr, c.pods[0].options(0, "lat-pub", 60, 64<<10))
	if err != nil {
		return err
	}
	defer pub.Close()
	payload := make([]byte, 64)
	time.Sleep(500 * time.Millisecond) // the subscriptions reach the other pods
	for range n {
		binary.BigEndian.PutUint64(payload, uint64(time.Now().UnixNano()))
		if err := pub.WritePublish("bench/cluster/lat/all", 0, 0, payload); err != nil {
			return err
		}
		if err := pub.Flush(); err != nil {
			return err
		}
		if err := same.wait(5 * time.Second); err != nil {
			return fmt.Errorf("same-pod subscriber: %w", err)
		}
		if err := cross.wait(5 * time.Second); err != nil {
			return fmt.Errorf("cross-pod subscriber: %w", err)
		}
	}
	s50, s99 := percentiles(same.lat)
	c50, c99 := percentiles(cross.lat)
	out.add("cluster_qos0_latency_same_pod_p50_us", "%.0f", s50)
	out.add("cluster_qos0_latency_same_pod_p99_us", "%.0f", s99)
	out.add("cluster_qos0_latency_cross_pod_p50_us", "%.0f", c50)
	out.add("cluster_qos0_latency_cross_pod_p99_us", "%.0f", c99)
	out.add("cross_pod_latency_p50_added_us", "%.0f", c50-s50)
	out.add("cross_pod_latency_p99_added_us", "%.0f", c99-s99)
	logf("QoS 0 delivery latency (%d messages): same pod p50 %.0f us p99 %.0f us; cross pod p50 %.0f us p99 %.0f us", n, s50, s99, c50, c99)

	// QoS 1: PUBLISH to PUBACK with the one subscriber on pod 0 or pod 1.
	ackSame, err := newLatencySub(c.pods[0], 62, "ack-same", "bench/cluster/ack/same", 1)
	if err != nil {
		return err
	}
	defer ackSame.stop()
	ackCross, err := newLatencySub(c.pods[1], 63, "ack-cross", "bench/cluster/ack/cross", 1)
	if err != nil {
		return err
	}
	defer ackCross.stop()
	time.Sleep(500 * time.Millisecond)
	var ackLat [2][]time.Duration
	var id uint16
	for k := range 2 * n {
		topic := []string{"bench/cluster/ack/same", "bench/cluster/ack/cross"}[k%2]
		id = mqttc.NextID(id)
		t0 := time.Now()
		binary.BigEndian.PutUint64(payload, uint64(t0.UnixNano()))
		if err := pub.WritePublish(topic, 1, id, payload); err != nil {
			return err
		}
		if err := pub.Flush(); err != nil {
			return err
		}
		_ = pub.SetReadDeadline(time.Now().Add(5 * time.Second))
		for {
			typ, _, body, err := pub.ReadPacket()
			if err != nil {
				return fmt.Errorf("waiting for PUBACK: %w", err)
			}
			if typ == mqttc.PUBACK && mqttc.AckID(body) == id {
				break
			}
		}
		ackLat[k%2] = append(ackLat[k%2], time.Since(t0))
	}
	a50, a99 := percentiles(ackLat[0])
	b50, b99 := percentiles(ackLat[1])
	out.add("cluster_qos1_puback_same_pod_p50_us", "%.0f", a50)
	out.add("cluster_qos1_puback_same_pod_p99_us", "%.0f", a99)
	out.add("cluster_qos1_puback_cross_pod_p50_us", "%.0f", b50)
	out.add("cluster_qos1_puback_cross_pod_p99_us", "%.0f", b99)
	out.add("cross_pod_qos1_puback_p50_added_us", "%.0f", b50-a50)
	out.add("cross_pod_qos1_puback_p99_added_us", "%.0f", b99-a99)
	logf("QoS 1 PUBLISH to PUBACK (%d each): subscriber on the same pod p50 %.0f us p99 %.0f us; on another pod p50 %.0f us p99 %.0f us", n, a50, a99, b50, b99)
	return nil
}

// clusterTakeover connects a client ID on one pod and then on the next:
// how long the second CONNECT waits for its CONNACK (the first pod ends the
// old connection first, and a persistent session moves with its
// subscription), against the same takeover on one pod.
func clusterTakeover(c *benchCluster, f *flags, out *report) error {
	type kind struct {
		name       string
		persistent bool
		cross      bool
	}
	kinds := []kind{{"same_pod", false, false}, {"cross_pod", false, true}, {"same_pod_persistent", true, false}, {"cross_pod_persistent", true, true}}
	lat := map[string][]time.Duration{}
	notClosed := 0
	for k := range f.clusterTakeovers {
		for _, kd := range kinds {
			first := c.pods[k%len(c.pods)]
			second := first
			if kd.cross {
				second = c.pods[(k+1)%len(c.pods)]
			}
			id := fmt.Sprintf("takeover-%s-%d", kd.name, k)
			opts := first.options(k, id, 60, 4096)
			opts.Persistent = kd.persistent
			old, err := mqttc.Dial(first.addr, opts)
			if err != nil {
				return err
			}
			if kd.persistent {
				if err := old.Subscribe("bench/cluster/takeover/"+strconv.Itoa(k), 1); err != nil {
					return err
				}
			}
			opts = second.options(k, id, 60, 4096)
			opts.Persistent = kd.persistent
			t0 := time.Now()
			next, err := mqttc.Dial(second.addr, opts)
			if err != nil {
				_ = old.Close()
				return fmt.Errorf("%s takeover %d: %w", kd.name, k, err)
			}
			lat[kd.name] = append(lat[kd.name], time.Since(t0))
			// The old connection must be closed by the broker.
			_ = old.SetReadDeadline(time.Now().Add(5 * time.Second))
			for {
				if _, _, _, err := old.ReadPacket(); err != nil {
					var ne interface{ Timeout() bool }
					if errors.As(err, &ne) && ne.Timeout() {
						notClosed++
					}
					break
				}
			}
			_ = old.Close()
			_ = next.Disconnect()
		}
	}
	out.add("cluster_takeover_old_connection_not_closed", "%d", notClosed)
	for _, kd := range kinds {
		p50, p99 := percentiles(lat[kd.name])
		out.add("cluster_takeover_"+kd.name+"_p50_us", "%.0f", p50)
		out.add("cluster_takeover_"+kd.name+"_p99_us", "%.0f", p99)
		logf("takeover %-21s CONNECT to CONNACK p50 %6.0f us p99 %6.0f us (%d)", kd.name, p50, p99, len(lat[kd.name]))
	}
	if notClosed > 0 {
		return fmt.Errorf("%d taken-over connections were not closed within 5 s", notClosed)
	}
	return nil
}

// floodPublisher sends msgs QoS 1 messages, at most window unacknowledged,
// and records which sequence numbers were acknowledged.
type floodPublisher struct {
	c       *mqttc.Conn
	topic   func(seq int) string
	retain  bool
	prefix  string
	msgs    int
	window  int
	mu      sync.Mutex
	pending map[uint16]int
	acked   []int
	free    chan struct{} // one token per free window slot
	err     error
}

func newFloodPublisher(c *mqttc.Conn, topic func(int) string, prefix string, msgs, window int) *floodPublisher {
	return &floodPublisher{c: c, topic: topic, prefix: prefix, msgs: msgs, window: window, pending: map[uint16]int{}, free: make(chan struct{}, window)}
}

func (p *floodPublisher) ackLoop(done chan<- struct{}) {
	defer close(done)
	for {
		typ, _, body, err := p.c.ReadPacket()
		if err != nil {
			return
		}
		if typ != mqttc.PUBACK {
			continue
		}
		p.mu.Lock()
		seq, ok := p.pending[mqttc.AckID(body)]
		if ok {
			delete(p.pending, mqttc.AckID(body))
			p.acked = append(p.acked, seq)
		}
		p.mu.Unlock()
		if ok {
			p.free <- struct{}{}
		}
	}
}

func (p *floodPublisher) run(payloadSize int, stop <-chan struct{}) {
	for range p.window {
		p.free <- struct{}{}
	}
	var id uint16
	payload := make([]byte, 0, payloadSize)
	for seq := range p.msgs {
		select {
		case <-p.free:
		case <-stop:
			return
		}
		id = mqttc.NextID(id)
		p.mu.Lock()
		p.pending[id] = seq
		p.mu.Unlock()
		payload = append(payload[:0], p.prefix...)
		payload = strconv.AppendInt(payload, int64(seq), 10)
		for len(payload) < payloadSize {
			payload = append(payload, '.')
		}
		if p.err = p.c.WritePublishRetain(p.topic(seq), 1, p.retain, id, payload); p.err != nil {
			return
		}
		if len(p.free) == 0 || seq == p.msgs-1 {
			if p.err = p.c.Flush(); p.err != nil {
				return
			}
		}
	}
}

// clusterFlood floods QoS 1 from the other pods towards a persistent
// subscriber on the last pod, while that pod is slowed (stopped 100 ms of
// every 200 ms): the publishers must be held back, never have a message
// acknowledged and then lost. Every acknowledged message must reach the
// subscriber.
func clusterFlood(c *benchCluster, f *flags, out *report) error {
	slow := c.pods[len(c.pods)-1]
	opts := slow.options(70, "flood-collector", 60, 256<<10)
	opts.Persistent = true
	sub, err := mqttc.Dial(slow.addr, opts)
	if err != nil {
		return err
	}
	if err := sub.Subscribe("bench/cluster/flood/#", 1); err != nil {
		return err
	}
	var mu sync.Mutex
	received := map[string]bool{}
	var lastAt atomic.Int64
	subDone := make(chan struct{})
	go func() {
		defer close(subDone)
		pending := false
		for {
			if pending && sub.Buffered() == 0 {
				if sub.Flush() != nil {
					return
				}
				pending = false
			}
			typ, flags, body, err := sub.ReadPacket()
			if err != nil {
				return
			}
			if typ != mqttc.PUBLISH {
				continue
			}
			p := mqttc.PublishPayload(flags, body)
			if i := slices.Index(p, '.'); i >= 0 {
				p = p[:i]
			}
			mu.Lock()
			received[string(p)] = true
			mu.Unlock()
			lastAt.Store(time.Now().UnixNano())
			if id, ok := mqttc.PublishID(flags, body); ok {
				_ = sub.WritePuback(id)
				pending = true
			}
		}
	}()
	defer func() { _ = sub.SetReadDeadline(time.Now()); <-subDone; _ = sub.Close() }()
	time.Sleep(500 * time.Millisecond)

	var pubs []*floodPublisher
	var ackDone []chan struct{}
	// Close every publisher and wait until its acknowledgement reader ended.
	defer func() {
		for i, p := range pubs {
			_ = p.c.Close()
			<-ackDone[i]
		}
	}()
	for i := range f.clusterFloodPubs {
		on := c.pods[i%(len(c.pods)-1)]
		pc, err := mqttc.Dial(on.addr, on.options(i, fmt.Sprintf("flood-pub-%d", i), 60, 64<<10))
		if err != nil {
			return err
		}
		topic := fmt.Sprintf("bench/cluster/flood/%d", i)
		p := newFloodPublisher(pc, func(int) string { return topic }, fmt.Sprintf("p%d-", i), f.clusterFloodMsgs, f.load.window)
		pubs = append(pubs, p)
		done := make(chan struct{})
		ackDone = append(ackDone, done)
		go p.ackLoop(done)
	}

	stopSlowing := make(chan struct{})
	slowed := make(chan struct{})
	go func() {
		defer close(slowed)
		pid := slow.PID()
		for {
			select {
			case <-stopSlowing:
				_ = syscall.Kill(pid, syscall.SIGCONT)
				return
			default:
			}
			_ = syscall.Kill(pid, syscall.SIGSTOP)
			time.Sleep(100 * time.Millisecond)
			_ = syscall.Kill(pid, syscall.SIGCONT)
			time.Sleep(100 * time.Millisecond)
		}
	}()
	stopPublishing := make(chan struct{})
	var wg sync.WaitGroup
	t0 := time.Now()
	for _, p := range pubs {
		wg.Add(1)
		go func() { defer wg.Done(); p.run(f.load.payload, stopPublishing) }()
	}
	published := make(chan struct{})
	go func() { wg.Wait(); close(published) }()
	select {
	case <-published:
	case <-time.After(f.clusterFloodTime):
		close(stopPublishing)
		<-published
	}
	floodTime := time.Since(t0)
	close(stopSlowing)
	<-slowed

	// Wait for the acknowledgements still in flight, then for the deliveries.
	ackedSet := func() (map[string]bool, int) {
		all := map[string]bool{}
		for _, p := range pubs {
			p.mu.Lock()
			for _, seq := range p.acked {
				all[p.prefix+strconv.Itoa(seq)] = true
			}
			p.mu.Unlock()
		}
		return all, len(all)
	}
	missing := func() int {
		acked, _ := ackedSet()
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for k := range acked {
			if !received[k] {
				n++
			}
		}
		return n
	}
	quietSince := time.Now()
	for last := -1; time.Since(quietSince) < 5*time.Second; time.Sleep(100 * time.Millisecond) {
		m := missing()
		if m == 0 && allAcked(pubs) {
			break
		}
		if m != last {
			last, quietSince = m, time.Now()
		}
	}
	_, acked := ackedSet()
	lost := missing()
	mu.Lock()
	got := len(received)
	mu.Unlock()
	var pubErrs []string
	for i, p := range pubs {
		if p.err != nil {
			pubErrs = append(pubErrs, fmt.Sprintf("publisher %d: %v", i, p.err))
		}
	}
	out.add("cluster_flood_acknowledged", "%d", acked)
	out.add("cluster_flood_received", "%d", got)
	out.add("cluster_flood_acked_msgs_per_s", "%.0f", float64(acked)/floodTime.Seconds())
	out.add("qos1_acknowledged_lost", "%d", lost)
	logf("flood towards a slowed pod: %d publishers on the other pods acknowledged %d QoS 1 messages in %v (%.0f/s); the subscriber on the slowed pod received %d; %d acknowledged and lost %v",
		len(pubs), acked, floodTime.Round(time.Millisecond), float64(acked)/floodTime.Seconds(), got, lost, pubErrs)
	if acked == 0 {
		return errors.New("no message was acknowledged during the flood")
	}
	return nil
}

func allAcked(pubs []*floodPublisher) bool {
	for _, p := range pubs {
		p.mu.Lock()
		n := len(p.pending)
		p.mu.Unlock()
		if n > 0 {
			return false
		}
	}
	return true
}

// clusterRetained publishes --cluster-retained retained messages on pod 0,
// then replaces the last pod with a new one (empty storage): how long the
// new pod takes to be ready (it copies the retained messages before), and
// how long a subscription to all of them takes on it, against the same
// subscription on pod 0.
func clusterRetained(c *benchCluster, f *flags, out *report) error {
	n := f.clusterRetained
	pc, err := mqttc.Dial(c.pods[0].addr, c.pods[0].options(0, "retained-pub", 60, 64<<10))
	if err != nil {
		return err
	}
	pub := newFloodPublisher(pc, func(i int) string { return "bench/cluster/retained/" + strconv.Itoa(i) }, "r", n, f.load.window)
	pub.retain = true
	done := make(chan struct{})
	go pub.ackLoop(done)
	pub.run(f.load.payload, nil)
	if pub.err != nil {
		return pub.err
	}
	if err := measure.WaitFor(30*time.Second, func() error {
		if !allAcked([]*floodPublisher{pub}) {
			return errors.New("retained publishes not all acknowledged")
		}
		return nil
	}); err != nil {
		return err
	}
	_ = pc.Disconnect()
	<-done

	lookup := func(t *target, name string) (time.Duration, int, error) {
		sc, err := mqttc.Dial(t.addr, t.options(80, "retained-"+name, 60, 256<<10))
		if err != nil {
			return 0, 0, err
		}
		defer sc.Close()
		t0 := time.Now()
		if err := sc.WriteSubscribe("bench/cluster/retained/#", 0); err != nil {
			return 0, 0, err
		}
		got := 0
		_ = sc.SetReadDeadline(time.Now().Add(60 * time.Second))
		for got < n {
			typ, _, _, err := sc.ReadPacket()
			if err != nil {
				return time.Since(t0), got, nil
			}
			if typ == mqttc.PUBLISH {
				got++
			}
		}
		return time.Since(t0), got, nil
	}
	sameT, sameGot, err := lookup(c.pods[0], "same")
	if err != nil {
		return err
	}
	last := len(c.pods) - 1
	ready, err := c.replace(last)
	if err != nil {
		return fmt.Errorf("replacing pod %d: %w", last, err)
	}
	newT, newGot, err := lookup(c.pods[last], "new")
	if err != nil {
		return err
	}
	out.add("cluster_retained_messages", "%d", n)
	out.add("retained_lookup_same_pod_ms", "%.1f", float64(sameT.Microseconds())/1000)
	out.add("retained_new_pod_ready_ms", "%.0f", float64(ready.Milliseconds()))
	out.add("retained_lookup_new_pod_ms", "%.1f", float64(newT.Microseconds())/1000)
	out.add("retained_lookup_new_pod_received", "%d/%d", newGot, n)
	logf("retained: %d messages; lookup on the pod they were published on %v (%d), a new pod ready in %v, lookup on it %v (%d)",
		n, sameT.Round(time.Millisecond), sameGot, ready.Round(time.Millisecond), newT.Round(time.Millisecond), newGot)
	if sameGot != n || newGot != n {
		return fmt.Errorf("retained lookup received %d (same pod) and %d (new pod) of %d", sameGot, newGot, n)
	}
	return nil
}
