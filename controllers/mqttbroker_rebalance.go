package controllers

import (
	"bytes"
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

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/log"

	v1alpha1 "github.com/mqtt-operator/mqtt-operator/api/v1alpha1"
	"github.com/mqtt-operator/mqtt-operator/internal/brokerconfig"
	"github.com/mqtt-operator/mqtt-operator/internal/rebalance"
)

// Rebalancing (spec.rebalance). MQTT connections are long-lived: after a
// scale-out the new pods get only new connections. Once every pod is ready
// and joined, the operator compares the pods' client counts and, while one
// is outside the band around the mean, asks the pods above the mean to send
// their excess elsewhere (POST /v1/shed), in rounds at a bounded rate. The
// moved clients reconnect through the Service, which picks a pod at
// random, so some land where they were; the next round moves fewer. A
// rebalance whose clients keep coming back ends Incomplete after
// rebalanceMaxRounds rounds rather than moving clients for ever.
const (
	defaultRebalanceTolerance = 20
	defaultRebalanceRate      = 20
	rebalanceMaxRounds        = 8
	// rebalanceRetry is how long an Incomplete rebalance waits before the
	// next try over the same number of pods.
	rebalanceRetry = 10 * time.Minute
	// rebalanceShedCheck is how soon the operator looks again while a pod
	// reports a round still under way.
	rebalanceShedCheck = 2 * time.Second
)

// rebalanceSettle is the time moved clients get to reconnect before the
// operator looks again (a variable for tests).
var rebalanceSettle = 5 * time.Second

// Event reasons of rebalancing.
const (
	ReasonRebalancing         = "Rebalancing"
	ReasonRebalanced          = "Rebalanced"
	ReasonRebalanceIncomplete = "RebalanceIncomplete"
)

// rebalancer paces rounds per broker and sends the pods their share.
type rebalancer struct {
	http *http.Client
	mu   sync.Mutex
	// next is when the last round's moves and reconnects are over.
	next map[types.NamespacedName]time.Time
}

func newRebalancer() *rebalancer {
	return &rebalancer{http: &http.Client{Timeout: 2 * time.Second}, next: map[types.NamespacedName]time.Time{}}
}

func (rb *rebalancer) wait(key types.NamespacedName, now time.Time) time.Duration {
	rb.mu.Lock()
	defer rb.mu.Unlock()
	return rb.next[key].Sub(now)
}

func (rb *rebalancer) paced(key types.NamespacedName, until time.Time) {
	rb.mu.Lock()
	defer rb.mu.Unlock()
	rb.next[key] = until
}

func (rb *rebalancer) forget(key types.NamespacedName) {
	rb.mu.Lock()
	defer rb.mu.Unlock()
	delete(rb.next, key)
}

// rebalanceOutcome is what a reconcile decided for status.rebalance.
type rebalanceOutcome struct {
	status *v1alpha1.RebalanceStatus
}

// rebalanceSettings are spec.rebalance with defaults.
func rebalanceSettings(b *v1alpha1.MQTTBroker) (enabled bool, tolerance, rate int) {
	enabled, tolerance, rate = true, defaultRebalanceTolerance, defaultRebalanceRate
	if s := b.Spec.Rebalance; s != nil {
		if s.Enabled != nil {
			enabled = *s.Enabled
		}
		if s.TolerancePercent > 0 {
			tolerance = int(s.TolerancePercent)
		}
		if s.ClientsPerSecond > 0 {
			rate = int(s.ClientsPerSecond)
		}
	}
	return enabled, tolerance, rate
}

// rebalance looks at the pods' client counts and, when they are uneven and
// the broker is settled, runs a round. It returns the status to write (nil:
// keep) and when to look again (0: on the next event).
func (r *MQTTBrokerReconciler) rebalance(ctx context.Context, b *v1alpha1.MQTTBroker, sts *appsv1.StatefulSet, view *clusterView, token string) (*rebalanceOutcome, time.Duration) {
	key := types.NamespacedName{Namespace: b.Namespace, Name: b.Name}
	prev := b.Status.Rebalance
	now := time.Now()
	enabled, tolerance, rate := rebalanceSettings(b)
	if !enabled {
		r.rebalancer.forget(key)
		if prev != nil && prev.Phase == v1alpha1.RebalanceRunning {
			st := prev.DeepCopy()
			st.Phase, st.FinishedAt = v1alpha1.RebalanceIncomplete, ptrTime(now)
			r.Recorder.Eventf(b, nil, corev1.EventTypeNormal, ReasonRebalanceIncomplete, "Rebalance",
				"rebalancing was turned off after %d clients moved", st.ClientsMoved)
			return &rebalanceOutcome{st}, 0
		}
		return nil, 0
	}
	if !settledForRebalance(b, sts, view) {
		return nil, 0 // pod and mesh events bring the next look
	}
	for _, l := range view.loads {
		if l.shedding {
			return nil, rebalanceShedCheck
		}
	}
	if wait := r.rebalancer.wait(key, now); wait > 0 {
		return nil, wait
	}
	counts := make([]int, len(view.loads))
	for i, l := range view.loads {
		counts[i] = l.clients
	}
	moves, mean, balanced := rebalance.Plan(counts, tolerance)
	if balanced {
		if prev == nil || prev.Phase != v1alpha1.RebalanceRunning {
			return nil, 0
		}
		st := prev.DeepCopy()
		st.Phase, st.FinishedAt, st.Clients = v1alpha1.RebalanceDone, ptrTime(now), int32s(counts)
		r.Recorder.Eventf(b, nil, corev1.EventTypeNormal, ReasonRebalanced, "Rebalance",
			"%d pods hold %s clients, within %d%% of the mean, after %s: %d clients moved in %d rounds",
			len(counts), joinCounts(counts), tolerance, now.Sub(st.StartedAt.Time).Round(time.Second), st.ClientsMoved, st.Rounds)
		return &rebalanceOutcome{st}, 0
	}
	var st *v1alpha1.RebalanceStatus
	switch {
	case prev != nil && prev.Phase == v1alpha1.RebalanceRunning:
		st = prev.DeepCopy()
	case prev != nil && prev.Phase == v1alpha1.RebalanceIncomplete && int(prev.Pods) == len(counts) && prev.FinishedAt != nil &&
		now.Sub(prev.FinishedAt.Time) < rebalanceRetry:
		return nil, rebalanceRetry - now.Sub(prev.FinishedAt.Time)
	default:
		st = &v1alpha1.RebalanceStatus{Phase: v1alpha1.RebalanceRunning, StartedAt: ptrTime(now)}
		r.Recorder.Eventf(b, nil, corev1.EventTypeNormal, ReasonRebalancing, "Rebalance",
			"%d pods hold %s clients (mean %.0f): moving clients off the busiest pods at up to %d/s until each is within %d%% of the mean",
			len(counts), joinCounts(counts), mean, rate, tolerance)
	}
	st.Pods, st.Clients = int32(len(counts)), int32s(counts)
	if st.Rounds >= rebalanceMaxRounds {
		st.Phase, st.FinishedAt = v1alpha1.RebalanceIncomplete, ptrTime(now)
		r.Recorder.Eventf(b, nil, corev1.EventTypeWarning, ReasonRebalanceIncomplete, "Rebalance",
			"after %d rounds (%d clients moved) the pods still hold %s clients: moved clients come back to the same pods "+
				"(do they connect to a pod's own address, or does the Service have session affinity?); trying again in %s or when the pods change",
			st.Rounds, st.ClientsMoved, joinCounts(counts), rebalanceRetry)
		return &rebalanceOutcome{st}, rebalanceRetry
	}
	// A round: at most rate x 10 s clients, the busiest pods first.
	period := rebalance.Round(counts, moves, rate)
	moved := 0
	for i, n := range moves {
		if n <= 0 {
			continue
		}
		got, err := r.rebalancer.shed(ctx, view.loads[i].ip, token, n, period)
		if err != nil {
			log.FromContext(ctx).Info("a pod did not take its share of a rebalance round; the next round asks again",
				"pod", view.status.Members[i].Pod, "clients", n, "error", err.Error())
			continue
		}
		moved += got
	}
	st.Rounds++
	st.ClientsMoved += int32(moved)
	again := period + rebalanceSettle
	r.rebalancer.paced(key, now.Add(again))
	return &rebalanceOutcome{st}, again
}

// settledForRebalance: a clustered broker whose pods are all ready, on the
// current revision, joined, reporting and not draining. A rollout or a
// scale-in moves clients by itself.
func settledForRebalance(b *v1alpha1.MQTTBroker, sts *appsv1.StatefulSet, view *clusterView) bool {
	if view == nil || !view.clustered || len(view.loads) < 2 || view.condition.Status != metav1.ConditionTrue {
		return false
	}
	n := int32(len(view.loads))
	if sts == nil || sts.Spec.Replicas == nil || *sts.Spec.Replicas != n || sts.Status.ObservedGeneration != sts.Generation ||
		sts.Status.ReadyReplicas != n || sts.Status.UpdatedReplicas != n || sts.Status.CurrentRevision != sts.Status.UpdateRevision {
		return false
	}
	for _, l := range view.loads {
		if !l.reported || l.draining {
			return false
		}
	}
	return true
}

// shed asks the pod at ip to move n clients over period; it returns how
// many it is moving.
func (rb *rebalancer) shed(ctx context.Context, ip, token string, n int, period time.Duration) (int, error) {
	body, _ := json.Marshal(brokerconfig.ShedRequest{Clients: n, PeriodSeconds: period.Seconds()})
	url := "http://" + net.JoinHostPort(ip, strconv.Itoa(v1alpha1.AdminPort)) + "/v1/shed"
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return 0, fmt.Errorf("admin API: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := rb.http.Do(req)
	if err != nil {
		return 0, fmt.Errorf("admin API unreachable: %w", err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	if resp.StatusCode != http.StatusAccepted {
		return 0, fmt.Errorf("admin API answered HTTP %d to POST /v1/shed: %s", resp.StatusCode, strings.TrimSpace(string(data)))
	}
	var out brokerconfig.ShedResponse
	if err := json.Unmarshal(data, &out); err != nil {
		return 0, fmt.Errorf("admin API: reading POST /v1/shed: %w", err)
	}
	return out.Moving, nil
}

func ptrTime(t time.Time) *metav1.Time {
	mt := metav1.NewTime(t)
	return &mt
}

func int32s(counts []int) []int32 {
	out := make([]int32, len(counts))
	for i, c := range counts {
		out[i] = int32(c)
	}
	return out
}

// joinCounts writes client counts as "900/0/0", pod 0 first.
func joinCounts(counts []int) string {
	parts := make([]string, len(counts))
	for i, c := range counts {
		parts[i] = strconv.Itoa(c)
	}
	return strings.Join(parts, "/")
}
