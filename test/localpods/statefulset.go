package localpods

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Labels the StatefulSet controller puts on its pods.
const (
	labelRevision = appsv1.ControllerRevisionHashLabelKey
	labelPodName  = appsv1.StatefulSetPodNameLabel
	labelPodIndex = appsv1.PodIndexLabel
)

// nodeName is the one "node" every pod is bound to. A pod with a node name is
// deleted gracefully by the API server (deletionTimestamp first, removal
// once its "kubelet" confirms), as on a real cluster.
const nodeName = "localpods"

// syncStatefulSet plays the StatefulSet controller for one StatefulSet (Parallel
// pod management, RollingUpdate with maxUnavailable 1) and the kubelet for
// its pods. It returns when to look again, if a delay is pending.
func (h *Harness) syncStatefulSet(ctx context.Context, key types.NamespacedName) (time.Duration, error) {
	var sts appsv1.StatefulSet
	err := h.cache.Get(ctx, key, &sts)
	if err != nil && !apierrors.IsNotFound(err) {
		return 0, fmt.Errorf("reading StatefulSet %s: %w", key, err)
	}
	found := err == nil
	pods, err := h.podsOf(ctx, key)
	if err != nil {
		return 0, err
	}
	var retry time.Duration
	for _, p := range pods {
		if !found && p.DeletionTimestamp == nil {
			// The garbage collector's part: envtest has none.
			if err := h.client.Delete(ctx, p, client.Preconditions{UID: &p.UID}); client.IgnoreNotFound(err) != nil {
				return 0, fmt.Errorf("deleting pod %s/%s of a deleted StatefulSet: %w", p.Namespace, p.Name, err)
			}
			continue
		}
		r, err := h.syncPod(ctx, p)
		if err != nil {
			return 0, err
		}
		if r > 0 && (retry == 0 || r < retry) {
			retry = r
		}
	}
	h.reapRuntimes(key, pods)
	if !found {
		return retry, nil
	}

	revision := templateRevision(&sts)
	replicas := ptr.Deref(sts.Spec.Replicas, 1)
	byName := map[string]*corev1.Pod{}
	for _, p := range pods {
		byName[p.Name] = p
		if ord, ok := ordinal(&sts, p); ok && ord >= int(replicas) && p.DeletionTimestamp == nil {
			if err := h.client.Delete(ctx, p, client.Preconditions{UID: &p.UID}); client.IgnoreNotFound(err) != nil {
				return 0, fmt.Errorf("scaling down pod %s/%s: %w", p.Namespace, p.Name, err)
			}
		}
	}
	for i := range int(replicas) {
		if byName[podName(&sts, i)] != nil {
			continue // a terminating pod is replaced once it is gone
		}
		if err := h.client.Create(ctx, newPod(&sts, i, revision)); err != nil && !apierrors.IsAlreadyExists(err) {
			return 0, fmt.Errorf("creating pod %s/%s: %w", sts.Namespace, podName(&sts, i), err)
		}
	}
	if p := podToRoll(&sts, pods, revision); p != nil {
		if err := h.client.Delete(ctx, p, client.Preconditions{UID: &p.UID}); client.IgnoreNotFound(err) != nil {
			return 0, fmt.Errorf("rolling pod %s/%s: %w", p.Namespace, p.Name, err)
		}
	}

	status := statefulSetStatus(&sts, pods, revision)
	if !equality.Semantic.DeepEqual(status, sts.Status) {
		before := sts.DeepCopy()
		sts.Status = status
		if err := h.client.Status().Patch(ctx, &sts, client.MergeFrom(before)); client.IgnoreNotFound(err) != nil {
			return 0, fmt.Errorf("writing status of StatefulSet %s: %w", key, err)
		}
	}
	return retry, nil
}

// podsOf lists the pods the StatefulSet controls, by ordinal.
func (h *Harness) podsOf(ctx context.Context, sts types.NamespacedName) ([]*corev1.Pod, error) {
	var list corev1.PodList
	if err := h.cache.List(ctx, &list, client.InNamespace(sts.Namespace)); err != nil {
		return nil, fmt.Errorf("listing pods of StatefulSet %s: %w", sts, err)
	}
	var pods []*corev1.Pod
	for i := range list.Items {
		if owner := metav1.GetControllerOf(&list.Items[i]); owner != nil && owner.Kind == "StatefulSet" && owner.Name == sts.Name {
			pods = append(pods, list.Items[i].DeepCopy())
		}
	}
	sort.Slice(pods, func(i, j int) bool { return pods[i].Name < pods[j].Name })
	return pods, nil
}

func podName(sts *appsv1.StatefulSet, ordinal int) string {
	return sts.Name + "-" + strconv.Itoa(ordinal)
}

func ordinal(sts *appsv1.StatefulSet, pod *corev1.Pod) (int, bool) {
	s, ok := strings.CutPrefix(pod.Name, sts.Name+"-")
	if !ok {
		return 0, false
	}
	n, err := strconv.Atoi(s)
	return n, err == nil && n >= 0
}

// templateRevision names the pod template, as the StatefulSet controller's
// ControllerRevision does: any template change gives a new revision.
func templateRevision(sts *appsv1.StatefulSet) string {
	data, _ := json.Marshal(sts.Spec.Template) // API types always marshal
	sum := sha256.Sum256(data)
	return sts.Name + "-" + hex.EncodeToString(sum[:5])
}

// newPod is the pod the StatefulSet controller would create for ordinal.
func newPod(sts *appsv1.StatefulSet, ordinal int, revision string) *corev1.Pod {
	t := sts.Spec.Template.DeepCopy()
	name := podName(sts, ordinal)
	labels := map[string]string{}
	for k, v := range t.Labels {
		labels[k] = v
	}
	labels[labelRevision], labels[labelPodName], labels[labelPodIndex] = revision, name, strconv.Itoa(ordinal)
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: name, Namespace: sts.Namespace, Labels: labels, Annotations: t.Annotations,
			OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(sts, appsv1.SchemeGroupVersion.WithKind("StatefulSet"))},
		},
		Spec: t.Spec,
	}
	pod.Spec.Hostname, pod.Spec.Subdomain, pod.Spec.NodeName = name, sts.Spec.ServiceName, nodeName
	for _, claim := range sts.Spec.VolumeClaimTemplates {
		pod.Spec.Volumes = append(pod.Spec.Volumes, corev1.Volume{Name: claim.Name, VolumeSource: corev1.VolumeSource{
			PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: claim.Name + "-" + name},
		}})
	}
	return pod
}

func runningAndReady(p *corev1.Pod) bool {
	if p.Status.Phase != corev1.PodRunning {
		return false
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// podToRoll picks the next pod a rolling update replaces: the highest ordinal
// not at revision, and only while every wanted pod exists and is ready
// (maxUnavailable 1), so pods roll one at a time.
func podToRoll(sts *appsv1.StatefulSet, pods []*corev1.Pod, revision string) *corev1.Pod {
	if sts.Spec.UpdateStrategy.Type == appsv1.OnDeleteStatefulSetStrategyType {
		return nil
	}
	replicas := int(ptr.Deref(sts.Spec.Replicas, 1))
	var pick *corev1.Pod
	wanted, pickOrd := 0, -1
	for _, p := range pods {
		ord, ok := ordinal(sts, p)
		if !ok || ord >= replicas {
			continue
		}
		if p.DeletionTimestamp != nil || !runningAndReady(p) {
			return nil
		}
		wanted++
		if p.Labels[labelRevision] != revision && ord > pickOrd {
			pick, pickOrd = p, ord
		}
	}
	if wanted < replicas {
		return nil
	}
	return pick
}

// statefulSetStatus counts the pods as the StatefulSet controller does.
func statefulSetStatus(sts *appsv1.StatefulSet, pods []*corev1.Pod, revision string) appsv1.StatefulSetStatus {
	s := *sts.Status.DeepCopy()
	s.ObservedGeneration = sts.Generation
	s.UpdateRevision = revision
	if s.CurrentRevision == "" {
		s.CurrentRevision = revision
	}
	s.Replicas, s.ReadyReplicas, s.AvailableReplicas, s.CurrentReplicas, s.UpdatedReplicas = 0, 0, 0, 0, 0
	for _, p := range pods {
		s.Replicas++
		if runningAndReady(p) {
			s.ReadyReplicas++
			s.AvailableReplicas++ // minReadySeconds is not honoured
		}
		if p.DeletionTimestamp == nil {
			if p.Labels[labelRevision] == s.CurrentRevision {
				s.CurrentReplicas++
			}
			if p.Labels[labelRevision] == revision {
				s.UpdatedReplicas++
			}
		}
	}
	// A rollout is complete when every pod runs the new revision and is ready.
	if s.UpdatedReplicas == s.Replicas && s.ReadyReplicas == s.Replicas {
		s.CurrentRevision, s.CurrentReplicas = revision, s.UpdatedReplicas
	}
	return s
}
