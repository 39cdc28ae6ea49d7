package controllers

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// Only the StatefulSet's own pods get pushes (which carry the admin token):
// a pod that copies the broker's labels does not.
func TestPushesGoOnlyToTheStatefulSetsPods(t *testing.T) {
	ready := corev1.PodStatus{PodIP: "10.0.0.1", ContainerStatuses: []corev1.ContainerStatus{{ContainerID: "c"}},
		Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}}
	ref := func(kind string, controller bool) []metav1.OwnerReference {
		return []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: kind, Name: "telemetry", UID: "sts-uid", Controller: ptr.To(controller)}}
	}
	for _, tc := range []struct {
		name   string
		owners []metav1.OwnerReference
		want   int
	}{
		{"the StatefulSet's pod", ref("StatefulSet", true), 1},
		{"labels only", nil, 0},
		{"another StatefulSet", []metav1.OwnerReference{{Kind: "StatefulSet", Name: "telemetry", UID: "other", Controller: ptr.To(true)}}, 0},
		{"not the controller", ref("StatefulSet", false), 0},
		{"a ReplicaSet", ref("ReplicaSet", true), 0},
	} {
		pod := corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "telemetry-0", OwnerReferences: tc.owners}, Status: ready}
		if got := len(readyPods([]corev1.Pod{pod}, "sts-uid")); got != tc.want {
			t.Errorf("%s: %d pods pushed to, want %d", tc.name, got, tc.want)
		}
	}
	pod := corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "telemetry-0", OwnerReferences: ref("StatefulSet", true)}, Status: ready}
	pod.OwnerReferences[0].UID = ""
	if got := len(readyPods([]corev1.Pod{pod}, "")); got != 0 {
		t.Error("a pod was pushed to while the StatefulSet is unknown")
	}
}
