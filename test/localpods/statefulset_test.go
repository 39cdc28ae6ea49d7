package localpods

import (
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

func testStatefulSet(replicas int32) *appsv1.StatefulSet {
	return &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: "b", Namespace: "ns", UID: "sts-uid", Generation: 3},
		Spec: appsv1.StatefulSetSpec{
			Replicas:    ptr.To(replicas),
			ServiceName: "b-headless",
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "b"}, Annotations: map[string]string{"hash": "1"}},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "broker", Image: "img"}}},
			},
			VolumeClaimTemplates: []corev1.PersistentVolumeClaim{{ObjectMeta: metav1.ObjectMeta{Name: "data"}}},
		},
	}
}

func TestNewPod(t *testing.T) {
	sts := testStatefulSet(2)
	p := newPod(sts, 1, "b-rev")
	if p.Name != "b-1" || p.Labels["app"] != "b" || p.Labels[labelRevision] != "b-rev" || p.Labels[labelPodIndex] != "1" || p.Annotations["hash"] != "1" {
		t.Errorf("name, labels or annotations wrong: %s %v %v", p.Name, p.Labels, p.Annotations)
	}
	if ref := metav1.GetControllerOf(p); ref == nil || ref.Kind != "StatefulSet" || ref.UID != "sts-uid" {
		t.Errorf("controller reference = %+v", ref)
	}
	if p.Spec.NodeName != nodeName || p.Spec.Hostname != "b-1" || p.Spec.Subdomain != "b-headless" {
		t.Errorf("placement = %q %q %q", p.Spec.NodeName, p.Spec.Hostname, p.Spec.Subdomain)
	}
	if v := p.Spec.Volumes; len(v) != 1 || v[0].PersistentVolumeClaim == nil || v[0].PersistentVolumeClaim.ClaimName != "data-b-1" {
		t.Errorf("claim volume = %+v", v)
	}
	if sts.Spec.Template.Labels[labelRevision] != "" {
		t.Error("newPod must not change the template")
	}
}

func testPod(sts *appsv1.StatefulSet, ord int, rev string, ready, terminating bool) *corev1.Pod {
	p := newPod(sts, ord, rev)
	p.Status.Phase = corev1.PodRunning
	status := corev1.ConditionFalse
	if ready {
		status = corev1.ConditionTrue
	}
	p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: status}}
	if terminating {
		p.DeletionTimestamp = ptr.To(metav1.Now())
	}
	return p
}

func TestPodToRoll(t *testing.T) {
	sts := testStatefulSet(3)
	rev := templateRevision(sts)
	for _, tc := range []struct {
		name string
		pods []*corev1.Pod
		want string
	}{
		{"highest ordinal first", []*corev1.Pod{testPod(sts, 0, "old", true, false), testPod(sts, 1, "old", true, false), testPod(sts, 2, "old", true, false)}, "b-2"},
		{"skips updated pods", []*corev1.Pod{testPod(sts, 0, "old", true, false), testPod(sts, 1, "old", true, false), testPod(sts, 2, rev, true, false)}, "b-1"},
		{"waits for readiness", []*corev1.Pod{testPod(sts, 0, "old", true, false), testPod(sts, 1, "old", true, false), testPod(sts, 2, rev, false, false)}, ""},
		{"waits for a terminating pod", []*corev1.Pod{testPod(sts, 0, "old", true, false), testPod(sts, 1, "old", true, true), testPod(sts, 2, rev, true, false)}, ""},
		{"waits for a missing pod", []*corev1.Pod{testPod(sts, 0, "old", true, false), testPod(sts, 2, rev, true, false)}, ""},
		{"nothing to do", []*corev1.Pod{testPod(sts, 0, rev, true, false), testPod(sts, 1, rev, true, false), testPod(sts, 2, rev, true, false)}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := ""
			if p := podToRoll(sts, tc.pods, rev); p != nil {
				got = p.Name
			}
			if got != tc.want {
				t.Errorf("podToRoll = %q, want %q", got, tc.want)
			}
		})
	}
	onDelete := testStatefulSet(1)
	onDelete.Spec.UpdateStrategy.Type = appsv1.OnDeleteStatefulSetStrategyType
	if p := podToRoll(onDelete, []*corev1.Pod{testPod(onDelete, 0, "old", true, false)}, "new"); p != nil {
		t.Error("OnDelete must not roll")
	}
}

func TestStatefulSetStatus(t *testing.T) {
	sts := testStatefulSet(2)
	sts.Status.CurrentRevision = "old"
	rev := "new"
	rolling := statefulSetStatus(sts, []*corev1.Pod{testPod(sts, 0, "old", true, false), testPod(sts, 1, rev, false, false)}, rev)
	if rolling.Replicas != 2 || rolling.ReadyReplicas != 1 || rolling.AvailableReplicas != 1 || rolling.CurrentReplicas != 1 ||
		rolling.UpdatedReplicas != 1 || rolling.CurrentRevision != "old" || rolling.UpdateRevision != rev || rolling.ObservedGeneration != 3 {
		t.Errorf("mid-rollout status = %+v", rolling)
	}
	done := statefulSetStatus(sts, []*corev1.Pod{testPod(sts, 0, rev, true, false), testPod(sts, 1, rev, true, false)}, rev)
	if done.CurrentRevision != rev || done.CurrentReplicas != 2 || done.ReadyReplicas != 2 || done.UpdatedReplicas != 2 {
		t.Errorf("completed rollout status = %+v", done)
	}
}

func TestPodStatus(t *testing.T) {
	pod := newPod(testStatefulSet(1), 0, "r")
	created := time.Date(2030, 1, 2, 3, 4, 5, 600, time.UTC)
	pending := podStatus(pod, false, containerState{}, "127.0.0.2", created, created)
	if pending.Phase != corev1.PodPending || pending.PodIP != "" || pending.ContainerStatuses[0].State.Waiting.Reason != "ContainerCreating" {
		t.Errorf("pending status = %+v", pending)
	}
	st := containerState{started: true, running: true, ready: true, pid: 42, startedAt: created, restartCount: 2,
		lastExit: &exitInfo{code: 137, reason: "Error", startedAt: created, finishedAt: created}}
	pod.Status = podStatus(pod, true, st, "127.0.0.2", created, created.Add(time.Minute))
	s := pod.Status
	if s.Phase != corev1.PodRunning || s.PodIP != "127.0.0.2" || s.PodIPs[0].IP != "127.0.0.2" || s.HostIP != hostIP ||
		!s.ContainerStatuses[0].Ready || s.ContainerStatuses[0].RestartCount != 2 || !*s.ContainerStatuses[0].Started ||
		s.ContainerStatuses[0].LastTerminationState.Terminated.ExitCode != 137 || !runningAndReady(pod) {
		t.Errorf("running status = %+v", s)
	}
	if !s.StartTime.Equal(ptr.To(metav1.NewTime(created.Truncate(time.Second)))) {
		t.Errorf("start time %v should be whole seconds", s.StartTime)
	}
	// An unchanged state keeps its condition times, so no status write repeats.
	again := podStatus(pod, true, st, "127.0.0.2", created, created.Add(time.Hour))
	for i := range again.Conditions {
		if !again.Conditions[i].LastTransitionTime.Equal(&s.Conditions[i].LastTransitionTime) {
			t.Errorf("condition %s moved its transition time", again.Conditions[i].Type)
		}
	}
}
