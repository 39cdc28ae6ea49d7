package controllers

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/mqtt-operator/mqtt-operator/api/v1alpha1"
	"github.com/mqtt-operator/mqtt-operator/internal/brokerconfig"
	"github.com/mqtt-operator/mqtt-operator/internal/resources"
)

// rebalanceFixture is a clustered broker of three fake pods, all joined,
// ready and on the current revision, whose client counts the test sets.
type rebalanceFixture struct {
	ns   string
	ips  []string
	fake *fakePods
	view func(i, clients int) brokerconfig.ClusterStatus
}

func newRebalanceFixture(t *testing.T, ipBase string, spec *v1alpha1.RebalanceSpec) *rebalanceFixture {
	t.Helper()
	ns := newNamespace(t)
	b := createBroker(t, ns, func(b *v1alpha1.MQTTBroker) {
		b.Spec.Replicas = ptr.To[int32](3)
		b.Spec.Rebalance = spec
	})
	cfg := waitForPeers(t, ns, "telemetry", 3)
	var admin *corev1.Secret
	eventually(t, wait, "StatefulSet and admin token", func() (err error) {
		if _, err = get(t, ns, "telemetry", &appsv1.StatefulSet{}); err != nil {
			return err
		}
		admin, err = get(t, ns, "telemetry-admin", &corev1.Secret{})
		return err
	})
	f := &rebalanceFixture{ns: ns, fake: &fakePods{token: string(admin.Data[resources.AdminTokenKey]), state: map[string]brokerconfig.ClusterStatus{}}}
	for i := range 3 {
		f.ips = append(f.ips, fmt.Sprintf("%s.%d", ipBase, i+1))
	}
	f.view = func(i, clients int) brokerconfig.ClusterStatus {
		st := brokerconfig.ClusterStatus{Name: "mqtt-" + string(b.UID), Node: fmt.Sprintf("telemetry-%d", i), Joined: true, Clients: clients}
		for j, addr := range cfg.Cluster.Peers {
			if j != i {
				st.Peers = append(st.Peers, brokerconfig.PeerStatus{Address: addr, Connected: true})
			}
		}
		return st
	}
	return f
}

// start sets the pods' client counts, starts the fake pods and marks the
// StatefulSet ready: the operator looks at a settled cluster.
func (f *rebalanceFixture) start(t *testing.T, counts ...int) {
	t.Helper()
	sts, _ := get(t, f.ns, "telemetry", &appsv1.StatefulSet{})
	for i, ip := range f.ips {
		f.fake.set(ip, f.view(i, counts[i]))
		f.fake.serve(t, ip)
		createPod(t, sts, i, ip)
	}
	markStatefulSetReady(t, f.ns, 3)
}

// counts are the fake pods' client counts (call with fake.mu held).
func (f *rebalanceFixture) counts() []int {
	out := make([]int, len(f.ips))
	for i, ip := range f.ips {
		out[i] = f.fake.state[ip].Clients
	}
	return out
}

func (f *rebalanceFixture) setCounts(counts []int) {
	for i, ip := range f.ips {
		f.fake.state[ip] = f.view(i, counts[i])
	}
}

func brokerEvents(t *testing.T, ns string) []eventsv1.Event {
	t.Helper()
	var list eventsv1.EventList
	if err := k8s.List(context.Background(), &list, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	var out []eventsv1.Event
	for _, e := range list.Items {
		if e.Regarding.Kind == "MQTTBroker" && strings.HasPrefix(e.Reason, "Rebalanc") {
			out = append(out, e)
		}
	}
	return out
}

// After a scale-out every client is on pod 0: the operator asks it, and only
// it, to move the clients above the mean, at the configured rate; moved
// clients that land back on pod 0 are moved in the next round; once every
// pod is within the band status says Balanced, with two events telling the
// story and no further moves.
func TestRebalanceMovesClientsOffTheBusiestPod(t *testing.T) {
	f := newRebalanceFixture(t, "127.0.98", &v1alpha1.RebalanceSpec{ClientsPerSecond: 200})
	var asked []string
	f.fake.onShed = func(ip string, req brokerconfig.ShedRequest) int {
		asked = append(asked, fmt.Sprintf("%s:%d/%.2fs", ip, req.Clients, req.PeriodSeconds))
		counts := f.counts()
		from := slices.Index(f.ips, ip)
		n := min(req.Clients, counts[from])
		// A Service picks pods at random: a third lands back on pod 0 in the
		// first round, none later.
		back := 0
		if len(asked) == 1 {
			back = n / 3
		}
		counts[from] -= n - back
		for k := range n - back {
			counts[(from+1+k%2)%3]++
		}
		f.setCounts(counts)
		return n
	}
	f.start(t, 90, 0, 0)
	eventually(t, 3*wait, "status.rebalance Balanced", func() error {
		st := brokerStatus(t, f.ns).Rebalance
		if st == nil || st.Phase != v1alpha1.RebalanceDone {
			return fmt.Errorf("status.rebalance %+v", st)
		}
		return nil
	})
	f.fake.mu.Lock()
	defer f.fake.mu.Unlock()
	// Round 1: 60 of 90 at 200/s (0.3 s); 20 come back: 50/20/20, mean 30.
	// Round 2: the 20 above the mean.
	want := []string{"127.0.98.1:60/0.30s", "127.0.98.1:20/0.10s"}
	if !slices.Equal(asked, want) {
		t.Errorf("sheds asked %v, want %v", asked, want)
	}
	st := brokerStatus(t, f.ns).Rebalance
	if st.Rounds != 2 || st.ClientsMoved != 80 || st.Pods != 3 || !slices.Equal(st.Clients, []int32{30, 30, 30}) ||
		st.StartedAt == nil || st.FinishedAt == nil || st.FinishedAt.Before(st.StartedAt) {
		t.Errorf("status.rebalance %+v", st)
	}
	var reasons []string
	for _, e := range brokerEvents(t, f.ns) {
		reasons = append(reasons, e.Reason+": "+e.Note)
	}
	if len(reasons) != 2 || !strings.HasPrefix(reasons[0], "Rebalancing: 3 pods hold 90/0/0 clients (mean 30)") ||
		!strings.HasPrefix(reasons[1], "Rebalanced: 3 pods hold 30/30/30 clients, within 20% of the mean") ||
		!strings.Contains(reasons[1], "80 clients moved in 2 rounds") {
		t.Errorf("events:\n%s", strings.Join(reasons, "\n"))
	}
}

// Clients that always come back to the same pod (they connect to its own
// address): the operator stops after its rounds, says so in status and a
// Warning, and does not go on moving clients.
func TestRebalanceThatCannotConvergeEndsIncomplete(t *testing.T) {
	f := newRebalanceFixture(t, "127.0.97", &v1alpha1.RebalanceSpec{ClientsPerSecond: 1000})
	sheds := 0
	f.fake.onShed = func(string, brokerconfig.ShedRequest) int { sheds++; return 60 } // and they all come back
	f.start(t, 90, 0, 0)
	eventually(t, 3*wait, "status.rebalance Incomplete", func() error {
		st := brokerStatus(t, f.ns).Rebalance
		if st == nil || st.Phase != v1alpha1.RebalanceIncomplete {
			return fmt.Errorf("status.rebalance %+v", st)
		}
		return nil
	})
	time.Sleep(time.Second) // more than three settle periods
	f.fake.mu.Lock()
	defer f.fake.mu.Unlock()
	if sheds != rebalanceMaxRounds {
		t.Errorf("%d rounds, want %d and then none", sheds, rebalanceMaxRounds)
	}
	if st := brokerStatus(t, f.ns).Rebalance; st.Rounds != rebalanceMaxRounds || st.ClientsMoved != int32(60*rebalanceMaxRounds) {
		t.Errorf("status.rebalance %+v", st)
	}
	events := brokerEvents(t, f.ns)
	last := events[len(events)-1]
	if last.Type != corev1.EventTypeWarning || last.Reason != ReasonRebalanceIncomplete || !strings.Contains(last.Note, "come back to the same pods") {
		t.Errorf("last event %s %s: %s", last.Type, last.Reason, last.Note)
	}
}

// rebalance.enabled: false leaves uneven pods alone.
func TestRebalanceCanBeTurnedOff(t *testing.T) {
	f := newRebalanceFixture(t, "127.0.96", &v1alpha1.RebalanceSpec{Enabled: ptr.To(false)})
	sheds := 0
	f.fake.onShed = func(string, brokerconfig.ShedRequest) int { sheds++; return 0 }
	f.start(t, 90, 0, 0)
	waitForConditionMessage(t, f.ns, ReasonClusterJoined, "all 3 pods joined the mesh")
	// The pods were looked at (Joined), so the operator knew the counts.
	time.Sleep(time.Second)
	f.fake.mu.Lock()
	defer f.fake.mu.Unlock()
	if sheds != 0 || brokerStatus(t, f.ns).Rebalance != nil || len(brokerEvents(t, f.ns)) != 0 {
		t.Errorf("rebalancing is off, yet %d sheds, status %+v", sheds, brokerStatus(t, f.ns).Rebalance)
	}
}
