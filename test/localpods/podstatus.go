package localpods

import (
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// podStatus is what the kubelet would report for a pod whose first container
// is in state st. It keeps the fields the kubelet does not own (qosClass) and
// the transition times of conditions that did not change. Times are whole
// seconds, as the API stores them, so an unchanged state compares equal and
// causes no write.
func podStatus(pod *corev1.Pod, launched bool, st containerState, ip string, created, now time.Time) corev1.PodStatus {
	prev := pod.Status
	s := *prev.DeepCopy()
	s.ObservedGeneration = pod.Generation
	s.HostIP, s.HostIPs = hostIP, []corev1.HostIP{{IP: hostIP}}
	s.StartTime = stamp(created)
	s.Phase = corev1.PodPending
	if st.started {
		s.Phase = corev1.PodRunning // restartPolicy Always: a crashed container restarts, the pod stays Running
	}
	if launched {
		s.PodIP, s.PodIPs = ip, []corev1.PodIP{{IP: ip}}
	}
	s.Conditions = nil
	for _, c := range []struct {
		t  corev1.PodConditionType
		ok bool
	}{
		{corev1.PodScheduled, true},
		{corev1.PodReadyToStartContainers, launched},
		{corev1.PodInitialized, true},
		{corev1.ContainersReady, st.ready},
		{corev1.PodReady, st.ready},
	} {
		s.Conditions = append(s.Conditions, condition(prev.Conditions, c.t, c.ok, pod.Generation, now))
	}

	c := pod.Spec.Containers[0]
	cs := corev1.ContainerStatus{
		Name:         c.Name,
		Image:        c.Image,
		Ready:        st.ready,
		RestartCount: st.restartCount,
		Started:      &st.running,
	}
	switch {
	case st.running:
		// A new ID for every process, as a restarted container gets one:
		// the operator pushes the auth bundle again to a new container ID.
		cs.ContainerID = fmt.Sprintf("localpods://%s-%d", pod.UID, st.restartCount)
		cs.State.Running = &corev1.ContainerStateRunning{StartedAt: *stamp(st.startedAt)}
	case st.stopped && st.lastExit != nil:
		e := st.lastExit
		cs.State.Terminated = &corev1.ContainerStateTerminated{
			ExitCode: e.code, Reason: e.reason, StartedAt: *stamp(e.startedAt), FinishedAt: *stamp(e.finishedAt),
		}
	case !launched || st.waiting == "":
		cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: "ContainerCreating"}
	default:
		cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: st.waiting}
	}
	if e := st.lastExit; e != nil && !st.stopped {
		cs.LastTerminationState.Terminated = &corev1.ContainerStateTerminated{
			ExitCode: e.code, Reason: e.reason, StartedAt: *stamp(e.startedAt), FinishedAt: *stamp(e.finishedAt),
		}
	}
	s.ContainerStatuses = []corev1.ContainerStatus{cs}
	return s
}

// condition keeps the previous transition time while the status holds.
func condition(prev []corev1.PodCondition, t corev1.PodConditionType, ok bool, gen int64, now time.Time) corev1.PodCondition {
	status := corev1.ConditionFalse
	if ok {
		status = corev1.ConditionTrue
	}
	c := corev1.PodCondition{Type: t, Status: status, ObservedGeneration: gen, LastTransitionTime: *stamp(now)}
	for _, p := range prev {
		if p.Type == t && p.Status == status {
			c.LastTransitionTime = p.LastTransitionTime
		}
	}
	return c
}

func stamp(t time.Time) *metav1.Time {
	m := metav1.NewTime(t.UTC().Truncate(time.Second))
	return &m
}
