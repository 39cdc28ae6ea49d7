package controllers

import (
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	v1alpha1 "github.com/mqtt-operator/mqtt-operator/api/v1alpha1"
)

func stsWith(gen, observedGen int64, replicas, ready, updated int32, cur, upd string) *appsv1.StatefulSet {
	return &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Generation: gen},
		Status: appsv1.StatefulSetStatus{
			ObservedGeneration: observedGen, Replicas: replicas, ReadyReplicas: ready, UpdatedReplicas: updated,
			CurrentRevision: cur, UpdateRevision: upd,
		},
	}
}

func TestComputeStatus(t *testing.T) {
	now := metav1.NewTime(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	cases := []struct {
		name                          string
		replicas                      int32
		sts                           *appsv1.StatefulSet
		failure                       *specFailure
		ready, available, progressing metav1.ConditionStatus
		reason                        string
		reconciling, stalled          bool
	}{
		{"not created yet", 1, nil, nil, "False", "False", "True", ReasonCreating, true, false},
		{"pod starting", 1, stsWith(1, 1, 1, 0, 1, "r1", "r1"), nil, "False", "False", "True", ReasonScaling, true, false},
		{"running", 1, stsWith(1, 1, 1, 1, 1, "r1", "r1"), nil, "True", "True", "False", ReasonPodsReady, false, false},
		{"controller has not seen the new template", 1, stsWith(2, 1, 1, 1, 1, "r1", "r1"), nil, "False", "True", "True", ReasonRollingOut, true, false},
		{"rolling to a new revision", 1, stsWith(2, 2, 1, 1, 0, "r1", "r2"), nil, "False", "True", "True", ReasonRollingOut, true, false},
		{"scaled to zero", 0, stsWith(1, 1, 0, 0, 0, "r1", "r1"), nil, "True", "True", "False", ReasonScaledToZero, false, false},
		{"pod crashed", 1, stsWith(1, 1, 1, 0, 1, "r1", "r1"), nil, "False", "False", "True", ReasonScaling, true, false},
		{"spec refused", 1, nil, &specFailure{ReasonInvalidSpec, "bad toleration"}, "False", "False", "False", ReasonInvalidSpec, false, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := &v1alpha1.MQTTBroker{ObjectMeta: metav1.ObjectMeta{Name: "b", Namespace: "ns", Generation: 3}}
			b.Spec.Replicas = ptr.To(tc.replicas)
			st := computeStatus(b, tc.sts, tc.failure, now)
			check := func(typ string, want metav1.ConditionStatus) {
				c := meta.FindStatusCondition(st.Conditions, typ)
				if c == nil || c.Status != want {
					t.Errorf("%s = %v, want %s", typ, c, want)
				}
			}
			check(v1alpha1.ConditionReady, tc.ready)
			check(v1alpha1.ConditionAvailable, tc.available)
			check(v1alpha1.ConditionProgressing, tc.progressing)
			if r := meta.FindStatusCondition(st.Conditions, v1alpha1.ConditionReady); r.Reason != tc.reason {
				t.Errorf("Ready reason %s, want %s", r.Reason, tc.reason)
			}
			if got := meta.IsStatusConditionTrue(st.Conditions, ConditionReconciling); got != tc.reconciling {
				t.Errorf("Reconciling %v, want %v (kstatus reads it)", got, tc.reconciling)
			}
			if got := meta.IsStatusConditionTrue(st.Conditions, ConditionStalled); got != tc.stalled {
				t.Errorf("Stalled %v, want %v (kstatus reads it)", got, tc.stalled)
			}
			if st.ObservedGeneration != 3 {
				t.Errorf("observedGeneration %d, want 3", st.ObservedGeneration)
			}
		})
	}
}

// A condition that keeps its status keeps its transition time: status writes
// at rest would otherwise never stop, and alerts on "stuck since" would lie.
func TestComputeStatusKeepsTransitionTimes(t *testing.T) {
	t0 := metav1.NewTime(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	t1 := metav1.NewTime(t0.Add(time.Hour))
	b := &v1alpha1.MQTTBroker{ObjectMeta: metav1.ObjectMeta{Name: "b", Namespace: "ns", Generation: 1}}
	running := stsWith(1, 1, 1, 1, 1, "r1", "r1")
	b.Status = computeStatus(b, running, nil, t0)
	again := computeStatus(b, running, nil, t1)
	if got := meta.FindStatusCondition(again.Conditions, v1alpha1.ConditionReady).LastTransitionTime; !got.Equal(&t0) {
		t.Errorf("Ready transition time moved to %v without a transition", got)
	}
	b.Status = again
	broken := computeStatus(b, stsWith(1, 1, 1, 0, 1, "r1", "r1"), nil, t1)
	if got := meta.FindStatusCondition(broken.Conditions, v1alpha1.ConditionReady).LastTransitionTime; !got.Equal(&t1) {
		t.Errorf("Ready transition time %v, want %v", got, t1)
	}
}
