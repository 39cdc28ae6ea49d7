package controllers

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	v1alpha1 "github.com/mqtt-operator/mqtt-operator/api/v1alpha1"
	"github.com/mqtt-operator/mqtt-operator/internal/brokerconfig"
	"github.com/mqtt-operator/mqtt-operator/internal/resources"
)

// Reasons of the Clustered condition.
const (
	ReasonClusterJoined = "Joined"
	// ReasonClusterStarting: a pod the cluster should have is not running
	// or does not answer on its admin API yet.
	ReasonClusterStarting = "Starting"
	// ReasonMeshPartial: every pod answers, and one lacks a route to a peer.
	ReasonMeshPartial = "MeshPartial"
)

// clusterView is what one reconcile observed of a broker's mesh; nil when
// it did not get that far (the last report stays).
type clusterView struct {
	clustered bool
	status    *v1alpha1.ClusterStatus
	condition metav1.Condition // Type, ObservedGeneration and time set by setClusterStatus
	// loads are the members' clients, in the order of status.members, for
	// rebalancing (mqttbroker_rebalance.go); not reported in status.
	loads []podLoad
}

// podLoad is what a pod reported of its clients.
type podLoad struct {
	ip                 string
	reported           bool
	clients            int
	draining, shedding bool
}

// clusterWatch asks broker pods for their view of the mesh, and paces the
// follow-up while a mesh is partial: pod events bring most changes, the
// backoff catches a route that comes up without one.
type clusterWatch struct {
	http    *http.Client
	mu      sync.Mutex
	partial map[types.NamespacedName]int // consecutive partial observations
}

func newClusterWatch() *clusterWatch {
	return &clusterWatch{http: &http.Client{Timeout: 2 * time.Second}, partial: map[types.NamespacedName]int{}}
}

// backoff counts a partial observation and returns when to look again:
// 1 s, doubling to 30 s.
func (w *clusterWatch) backoff(broker types.NamespacedName) time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := w.partial[broker]
	w.partial[broker] = n + 1
	return min(time.Second<<min(n, 5), 30*time.Second)
}

func (w *clusterWatch) forget(broker types.NamespacedName) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.partial, broker)
}

// observeCluster asks each pod the cluster should have (0 to replicas-1)
// for its view of the mesh, in parallel, and returns the view and when to
// look again.
func (w *clusterWatch) observeCluster(ctx context.Context, b *v1alpha1.MQTTBroker, pods []corev1.Pod, token string) (*clusterView, time.Duration) {
	name := resources.ClusterName(b)
	byName := map[string]*corev1.Pod{}
	for i := range pods {
		byName[pods[i].Name] = &pods[i]
	}
	members := make([]v1alpha1.ClusterMember, resources.Replicas(b))
	loads := make([]podLoad, len(members))
	var wg sync.WaitGroup
	for i := range members {
		m, load := &members[i], &loads[i]
		m.Pod = fmt.Sprintf("%s-%d", resources.StatefulSetName(b), i)
		pod := byName[m.Pod]
		if pod == nil || !pod.DeletionTimestamp.IsZero() || pod.Status.PodIP == "" {
			m.Message = messageNotRunning
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, err := w.get(ctx, pod.Status.PodIP, token)
			switch {
			case err != nil:
				m.Message = err.Error()
			case st.Name != name:
				m.Message = fmt.Sprintf("reports cluster %q, not this broker's %q", st.Name, name)
			default:
				m.Joined = st.Joined
				*load = podLoad{ip: pod.Status.PodIP, reported: true, clients: st.Clients, draining: st.Draining, shedding: st.Shedding}
				for _, p := range st.Peers {
					switch {
					case p.Connected:
						m.ConnectedPeers++
					case !isSelf(p.Address, m.Pod, pod.Status.PodIP):
						m.MissingPeers = append(m.MissingPeers, p.Address)
					}
				}
			}
		}()
	}
	wg.Wait()
	view := &clusterView{clustered: true, status: &v1alpha1.ClusterStatus{Name: name, Members: members}, loads: loads}
	view.condition = clusteredCondition(members)
	key := types.NamespacedName{Namespace: b.Namespace, Name: b.Name}
	if len(members) == 0 {
		w.forget(key)
		return view, 0
	}
	if view.condition.Status == metav1.ConditionTrue {
		// A pod stays ready when it loses a route after joining (one dead
		// pod must not take the others out of the Service), so a partition
		// brings no pod event: look again now and then.
		w.forget(key)
		return view, meshRecheck
	}
	// A pod that is missing or has no address yet brings a pod event when
	// it comes; one that runs and has not joined may join without one (its
	// readiness may not change), so look again, less and less often.
	for _, m := range members {
		if m.Message != messageNotRunning {
			return view, w.backoff(key)
		}
	}
	return view, 0
}

// messageNotRunning is a member's message while its pod has no address.
const messageNotRunning = "not running yet"

// meshRecheck is how often the operator asks the pods of a whole mesh
// whether it still is: one GET per pod.
const meshRecheck = 5 * time.Minute

// isSelf reports whether a peer address is the pod's own: its name under
// the headless Service, or its IP (where peers are addresses).
func isSelf(address, pod, ip string) bool {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		host = address
	}
	first, _, _ := strings.Cut(host, ".")
	return host == ip || first == pod
}

// clusteredCondition summarises the members: True when every one joined
// and has a route to every peer, else which have not and why.
func clusteredCondition(members []v1alpha1.ClusterMember) metav1.Condition {
	var waiting []string
	reason := ReasonMeshPartial
	for _, m := range members {
		why := m.Message
		switch {
		case why != "":
			reason = ReasonClusterStarting
		case len(m.MissingPeers) > 0:
			why = "no route to " + strings.Join(m.MissingPeers, ", ")
		case !m.Joined:
			why = "joining"
		default:
			continue
		}
		waiting = append(waiting, m.Pod+" ("+why+")")
	}
	if len(waiting) == 0 {
		return metav1.Condition{Status: metav1.ConditionTrue, Reason: ReasonClusterJoined,
			Message: fmt.Sprintf("all %d pods joined the mesh", len(members))}
	}
	return metav1.Condition{Status: metav1.ConditionFalse, Reason: reason,
		Message: fmt.Sprintf("%d of %d pods in the full mesh; not: %s", len(members)-len(waiting), len(members), strings.Join(waiting, "; "))}
}

// get asks one pod for its view of the mesh. Errors name the problem, never
// the token.
func (w *clusterWatch) get(ctx context.Context, ip, token string) (*brokerconfig.ClusterStatus, error) {
	url := "http://" + net.JoinHostPort(ip, strconv.Itoa(v1alpha1.AdminPort)) + "/v1/cluster"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("admin API: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := w.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("admin API unreachable: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("admin API answered HTTP %d to GET /v1/cluster", resp.StatusCode)
	}
	st := &brokerconfig.ClusterStatus{}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(st); err != nil {
		return nil, fmt.Errorf("admin API: reading GET /v1/cluster: %w", err)
	}
	return st, nil
}

// setClusterStatus reports the mesh: status.cluster and the Clustered
// condition, which exist only while the broker is clustered and has pods.
func setClusterStatus(st *v1alpha1.MQTTBrokerStatus, generation int64, view *clusterView, now metav1.Time) {
	if view == nil {
		return // this reconcile did not get that far; the last report stays
	}
	if !view.clustered {
		st.Cluster = nil
		meta.RemoveStatusCondition(&st.Conditions, v1alpha1.ConditionClustered)
		return
	}
	st.Cluster = view.status
	if len(view.status.Members) == 0 {
		meta.RemoveStatusCondition(&st.Conditions, v1alpha1.ConditionClustered)
		return
	}
	c := view.condition
	c.Type, c.ObservedGeneration, c.LastTransitionTime = v1alpha1.ConditionClustered, generation, now
	meta.SetStatusCondition(&st.Conditions, c)
}
