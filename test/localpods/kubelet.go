package localpods

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/mqtt-operator/mqtt-operator/internal/brokerconfig"
)

// volumeState is what a pod's ConfigMap or Secret volume holds on disk.
type volumeState struct {
	digest string
	// pendingSince is when the source was first seen to differ from the
	// disk; the files follow VolumeSyncDelay later, as the kubelet's
	// periodic sync would.
	pendingSince time.Time
}

// syncPod plays the kubelet for one pod object: start its process once its
// volumes can be mounted, keep the volumes in sync, stop the process when the
// pod is deleted, and report status. pod is updated with what the server
// returned. It returns when to look again, if a delay is pending.
func (h *Harness) syncPod(ctx context.Context, pod *corev1.Pod) (time.Duration, error) {
	key := client.ObjectKeyFromObject(pod)
	rt := h.runtime(key)
	if rt != nil && rt.uid != pod.UID {
		// An older pod of this name, deleted with no grace period, still
		// runs: it ends before its successor starts, as on a node.
		rt.stop(rt.grace)
		if !rt.finished() {
			return 0, nil // its exit will requeue
		}
		h.forget(rt)
		rt = nil
	}
	if pod.DeletionTimestamp != nil {
		if rt != nil {
			rt.stop(deletionGrace(pod))
			if !rt.finished() {
				return 0, nil
			}
			h.forget(rt)
		}
		// The process is gone: finish the graceful deletion, as the kubelet does.
		err := h.client.Delete(ctx, pod, client.GracePeriodSeconds(0), client.Preconditions{UID: &pod.UID})
		if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
			return 0, fmt.Errorf("finishing deletion of pod %s: %w", key, err)
		}
		return 0, nil
	}
	if rt == nil {
		var err error
		if rt, err = h.newRuntime(pod); err != nil {
			return 0, err
		}
	}
	var retry time.Duration
	if launched, _ := rt.snapshot(); !launched {
		if missing := h.missingSources(ctx, pod); missing != "" {
			// Like the kubelet: the pod waits (Pending) until its volumes
			// can be mounted; the source's creation requeues it.
			return 0, h.writePodStatus(ctx, pod, rt)
		}
		if err := h.launch(ctx, rt, pod); err != nil {
			return 0, err
		}
	} else {
		var err error
		if retry, err = h.refreshVolumes(ctx, rt, pod); err != nil {
			return 0, err
		}
	}
	return retry, h.writePodStatus(ctx, pod, rt)
}

func deletionGrace(pod *corev1.Pod) time.Duration {
	if pod.DeletionGracePeriodSeconds != nil {
		return time.Duration(*pod.DeletionGracePeriodSeconds) * time.Second
	}
	return terminationGrace(pod)
}

func terminationGrace(pod *corev1.Pod) time.Duration {
	if s := pod.Spec.TerminationGracePeriodSeconds; s != nil {
		return time.Duration(*s) * time.Second
	}
	return 30 * time.Second // the API's default
}

// volumeDirs says where each of the pod's volumes lives on the host. Claims
// live outside the pod's own directory, so they outlive it (PVC emulation);
// everything else dies with the pod, as an emptyDir does.
func (h *Harness) volumeDirs(rt *podRuntime, pod *corev1.Pod) map[string]string {
	dirs := map[string]string{}
	for _, v := range pod.Spec.Volumes {
		if v.PersistentVolumeClaim != nil {
			dirs[v.Name] = filepath.Join(h.workDir, pod.Namespace, "pvc", v.PersistentVolumeClaim.ClaimName)
		} else {
			dirs[v.Name] = filepath.Join(rt.dir, "volumes", v.Name)
		}
	}
	return dirs
}

// launch materialises the pod's volumes and starts its first container.
func (h *Harness) launch(ctx context.Context, rt *podRuntime, pod *corev1.Pod) error {
	dirs := h.volumeDirs(rt, pod)
	for _, v := range pod.Spec.Volumes {
		if err := os.MkdirAll(dirs[v.Name], 0o755); err != nil {
			return fmt.Errorf("creating volume %s of pod %s/%s: %w", v.Name, pod.Namespace, pod.Name, err)
		}
	}
	c := &pod.Spec.Containers[0]
	var mounts mountTable
	for _, m := range c.VolumeMounts {
		if dir, ok := dirs[m.Name]; ok {
			mounts = append(mounts, mount{containerPath: m.MountPath, hostPath: filepath.Join(dir, m.SubPath)})
		}
	}
	rt.mounts = mounts // before volumeFiles: broker.yaml's paths are rewritten through it
	rt.volumes = map[string]*volumeState{}
	for _, v := range pod.Spec.Volumes {
		files, ok, err := h.volumeFiles(ctx, pod, v, rt)
		if err != nil {
			return err
		}
		if !ok {
			continue // not a ConfigMap or Secret, or an optional one that is absent
		}
		if err := writeAtomic(dirs[v.Name], files); err != nil {
			return fmt.Errorf("writing volume %s of pod %s/%s: %w", v.Name, pod.Namespace, pod.Name, err)
		}
		rt.volumes[v.Name] = &volumeState{digest: digest(files)}
	}
	rt.start(processSpec{
		binary: h.opts.BrokerBinary,
		args:   rewriteArgs(c.Args, rt.mounts),
		env:    containerEnv(c, pod, rt.ip, rt.mounts),
		dir:    rt.dir,
		probe:  resolveProbe(c, rt.ip),
	})
	return nil
}

// refreshVolumes brings changed ConfigMap and Secret content to disk once it
// has differed for VolumeSyncDelay. A source that disappears leaves the last
// content in place, as with the kubelet.
func (h *Harness) refreshVolumes(ctx context.Context, rt *podRuntime, pod *corev1.Pod) (time.Duration, error) {
	dirs := h.volumeDirs(rt, pod)
	var retry time.Duration
	now := time.Now()
	for _, v := range pod.Spec.Volumes {
		files, ok, err := h.volumeFiles(ctx, pod, v, rt)
		if err != nil || !ok {
			continue // a source gone or broken keeps the last good content
		}
		st := rt.volumes[v.Name]
		if st == nil {
			st = &volumeState{} // an optional source that appeared later
			rt.volumes[v.Name] = st
		}
		d := digest(files)
		if d == st.digest {
			st.pendingSince = time.Time{}
			continue
		}
		if st.pendingSince.IsZero() {
			st.pendingSince = now
		}
		delay, custom := h.opts.VolumeSyncDelayOf[v.Name]
		if !custom {
			delay = h.opts.VolumeSyncDelay
		}
		if wait := delay - now.Sub(st.pendingSince); wait > 0 {
			if retry == 0 || wait < retry {
				retry = wait
			}
			continue
		}
		if err := writeAtomic(dirs[v.Name], files); err != nil {
			return 0, fmt.Errorf("updating volume %s of pod %s/%s: %w", v.Name, pod.Namespace, pod.Name, err)
		}
		st.digest, st.pendingSince = d, time.Time{}
		rt.out.note("volume updated", "volume", v.Name)
	}
	return retry, nil
}

// volumeFiles returns what a ConfigMap or Secret volume shows, with the broker
// configuration rebound to the pod's address; ok is false for other volume
// kinds and for an absent optional source.
func (h *Harness) volumeFiles(ctx context.Context, pod *corev1.Pod, v corev1.Volume, rt *podRuntime) (map[string]volumeFile, bool, error) {
	var data map[string][]byte
	var items []corev1.KeyToPath
	var mode *int32
	switch {
	case v.ConfigMap != nil:
		var cm corev1.ConfigMap
		if err := h.cache.Get(ctx, types.NamespacedName{Namespace: pod.Namespace, Name: v.ConfigMap.Name}, &cm); err != nil {
			return nil, false, client.IgnoreNotFound(err)
		}
		data = map[string][]byte{}
		for k, s := range cm.Data {
			data[k] = []byte(s)
		}
		for k, b := range cm.BinaryData {
			data[k] = b
		}
		items, mode = v.ConfigMap.Items, v.ConfigMap.DefaultMode
	case v.Secret != nil:
		var s corev1.Secret
		if err := h.cache.Get(ctx, types.NamespacedName{Namespace: pod.Namespace, Name: v.Secret.SecretName}, &s); err != nil {
			return nil, false, client.IgnoreNotFound(err)
		}
		data, items, mode = s.Data, v.Secret.Items, v.Secret.DefaultMode
	default:
		return nil, false, nil
	}
	files, err := project(data, items, mode)
	if err != nil {
		return nil, false, fmt.Errorf("projecting volume %s of pod %s/%s: %w", v.Name, pod.Namespace, pod.Name, err)
	}
	if f, ok := files[brokerconfig.FileName]; ok && v.ConfigMap != nil {
		if rewritten, err := rewriteBrokerConfig(f.data, rt.ip, rt.mounts, h.peerAddr); err == nil {
			files[brokerconfig.FileName] = volumeFile{data: rewritten, mode: f.mode}
		}
	}
	return files, true, nil
}

// peerAddr is the address of the pod a clustered broker's peer names: the
// one that pod has or will get (a pod keeps its address by name).
func (h *Harness) peerAddr(host string) (string, bool) {
	ns, pod, ok := podOfPeer(host)
	if !ok {
		return "", false
	}
	ip, err := h.ips.addr(types.NamespacedName{Namespace: ns, Name: pod})
	return ip, err == nil
}

// missingSources names the first required ConfigMap or Secret the pod mounts
// that does not exist, or returns "".
func (h *Harness) missingSources(ctx context.Context, pod *corev1.Pod) string {
	for _, v := range pod.Spec.Volumes {
		var obj client.Object
		var name string
		switch {
		case v.ConfigMap != nil && (v.ConfigMap.Optional == nil || !*v.ConfigMap.Optional):
			obj, name = &corev1.ConfigMap{}, v.ConfigMap.Name
		case v.Secret != nil && (v.Secret.Optional == nil || !*v.Secret.Optional):
			obj, name = &corev1.Secret{}, v.Secret.SecretName
		default:
			continue
		}
		if err := h.cache.Get(ctx, types.NamespacedName{Namespace: pod.Namespace, Name: name}, obj); err != nil {
			return name
		}
	}
	return ""
}

// resolveProbe turns the container's HTTP readiness probe into a URL on the
// pod's address; nil when there is none.
func resolveProbe(c *corev1.Container, ip string) *readinessProbe {
	p := c.ReadinessProbe
	if p == nil || p.HTTPGet == nil {
		return nil
	}
	port := p.HTTPGet.Port.IntValue()
	if port == 0 {
		for _, cp := range c.Ports {
			if cp.Name == p.HTTPGet.Port.String() {
				port = int(cp.ContainerPort)
			}
		}
	}
	return &readinessProbe{
		url:              "http://" + net.JoinHostPort(ip, strconv.Itoa(port)) + p.HTTPGet.Path,
		timeout:          time.Duration(max(p.TimeoutSeconds, 1)) * time.Second,
		failureThreshold: int(max(p.FailureThreshold, 1)),
		successThreshold: int(max(p.SuccessThreshold, 1)),
	}
}

// writePodStatus reports the runtime's state the way the kubelet does, through
// the status subresource, when it differs from what the pod shows.
func (h *Harness) writePodStatus(ctx context.Context, pod *corev1.Pod, rt *podRuntime) error {
	launched, st := rt.snapshot()
	status := podStatus(pod, launched, st, rt.ip, rt.created, time.Now())
	if equality.Semantic.DeepEqual(status, pod.Status) {
		return nil
	}
	before := pod.DeepCopy()
	pod.Status = status
	if err := h.client.Status().Patch(ctx, pod, client.MergeFrom(before)); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("writing status of pod %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	return nil
}
