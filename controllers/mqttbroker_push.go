package controllers

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/mqtt-operator/mqtt-operator/api/v1alpha1"
	"github.com/mqtt-operator/mqtt-operator/internal/brokerconfig"
	"github.com/mqtt-operator/mqtt-operator/internal/resources"
)

// maxAuthSecretBytes keeps the bundle under the 1 MiB a Secret can hold,
// with room for the object's metadata.
const maxAuthSecretBytes = 1000 << 10

// errAuthTooLarge is a spec-level failure: too many users for one broker.
var errAuthTooLarge = errors.New("auth bundle too large")

// applyAuth writes the auth bundle Secret (which the pods mount) and the
// state Secret when what they hold changed. An unchanged bundle keeps its
// generation; a changed one gets the next.
func (r *MQTTBrokerReconciler) applyAuth(ctx context.Context, b *v1alpha1.MQTTBroker, auth *renderedAuth) error {
	gen := nextGeneration(auth.secret)
	unchanged := auth.secret != nil && auth.secret.Annotations[resources.AnnotationAuthRevision] == auth.bundle.Revision
	if unchanged {
		gen--
	}
	// A pod that refused a push as older than its own bundle (the Secret was
	// deleted and the count restarted) told us how far to jump.
	if floor := r.pusher.generationFloor(client.ObjectKeyFromObject(b)); gen < floor {
		gen, unchanged = floor, false
	}
	auth.bundle.Generation = gen
	data, err := brokerconfig.MarshalBundleCompressed(auth.bundle)
	if err != nil {
		return fmt.Errorf("rendering the auth bundle: %w", err)
	}
	if len(data) > maxAuthSecretBytes {
		return fmt.Errorf("%w: %d bytes for %d users and %d ACLs, the most a Secret holds is about %d; split the users over more brokers",
			errAuthTooLarge, len(data), len(auth.bundle.Users), len(auth.bundle.ACLs), maxAuthSecretBytes)
	}
	auth.data = data
	if !unchanged {
		if err := apply(ctx, r.Client, resources.AuthSecret(b, data, auth.bundle)); err != nil {
			return err
		}
	}
	sources, _ := json.Marshal(auth.sources) // a map of strings always marshals
	if auth.state == nil || !bytes.Equal(auth.state.Data[resources.AuthSourcesKey], sources) {
		return apply(ctx, r.Client, resources.AuthStateSecret(b, sources))
	}
	return nil
}

// pusher sends auth bundles to broker pods through their admin API and
// remembers what each pod (each container start) has applied, so a
// converged broker costs no request at all.
type pusher struct {
	http *http.Client
	mu   sync.Mutex
	// applied maps a broker to its pods' container IDs and the revision each
	// acknowledged; a restarted container has a new ID and gets a push.
	applied map[types.NamespacedName]map[string]string
	floor   map[types.NamespacedName]int64
}

func newPusher() *pusher {
	return &pusher{
		http:    &http.Client{Timeout: 3 * time.Second},
		applied: map[types.NamespacedName]map[string]string{},
		floor:   map[types.NamespacedName]int64{},
	}
}

func (p *pusher) generationFloor(broker types.NamespacedName) int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.floor[broker]
}

func (p *pusher) forget(broker types.NamespacedName) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.applied, broker)
	delete(p.floor, broker)
}

// readyPod is a broker pod that should enforce the bundle now.
type readyPod struct {
	name, ip, container string
}

// readyPods are the ready pods of the StatefulSet with UID owner: the pods
// that should enforce the bundle now. A pod that merely carries the
// broker's labels (anyone who may create pods in the namespace can label
// one so) is never pushed to: a push carries the admin token.
func readyPods(pods []corev1.Pod, owner types.UID) []readyPod {
	var out []readyPod
	for i := range pods {
		p := &pods[i]
		if !p.DeletionTimestamp.IsZero() || p.Status.PodIP == "" || len(p.Status.ContainerStatuses) == 0 {
			continue
		}
		if ref := metav1.GetControllerOf(p); ref == nil || ref.Kind != "StatefulSet" || ref.UID != owner || owner == "" {
			continue
		}
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
				out = append(out, readyPod{name: p.Name, ip: p.Status.PodIP, container: p.Status.ContainerStatuses[0].ContainerID})
			}
		}
	}
	return out
}

// sync pushes data to every ready pod that has not acknowledged revision and
// returns how many ready pods enforce it. A failed push is returned as an
// error after the others went through; that pod still converges from its
// mounted file, and the retry pushes again.
func (p *pusher) sync(ctx context.Context, broker types.NamespacedName, pods []readyPod, token string, data []byte, revision string) (int32, error) {
	p.mu.Lock()
	applied := p.applied[broker]
	if applied == nil {
		applied = map[string]string{}
		p.applied[broker] = applied
	}
	current := map[string]bool{}
	var todo []readyPod
	for _, pod := range pods {
		current[pod.container] = true
		if applied[pod.container] != revision {
			todo = append(todo, pod)
		}
	}
	for c := range applied { // pods that are gone
		if !current[c] {
			delete(applied, c)
		}
	}
	p.mu.Unlock()

	errs := make([]error, len(todo))
	var wg sync.WaitGroup
	for i, pod := range todo {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = p.push(ctx, broker, pod, token, data, revision)
		}()
	}
	wg.Wait()
	inSync := int32(0)
	p.mu.Lock()
	for _, pod := range pods {
		if applied[pod.container] == revision {
			inSync++
		}
	}
	p.mu.Unlock()
	return inSync, errors.Join(errs...)
}

func (p *pusher) push(ctx context.Context, broker types.NamespacedName, pod readyPod, token string, data []byte, revision string) error {
	url := "http://" + net.JoinHostPort(pod.ip, strconv.Itoa(v1alpha1.AdminPort)) + "/v1/auth-bundle"
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, url, bytes.NewReader(data))
	if err != nil {
		return fmt.Errorf("pushing the auth bundle to pod %s: %w", pod.name, err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := p.http.Do(req)
	if err != nil {
		return fmt.Errorf("pushing the auth bundle to pod %s: %w", pod.name, err)
	}
	defer resp.Body.Close()
	var answer struct {
		Revision   string `json:"revision"`
		Generation int64  `json:"generation"`
		Error      string `json:"error"`
	}
	_ = json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&answer)
	switch {
	case resp.StatusCode == http.StatusOK && answer.Revision == revision:
		p.mu.Lock()
		p.applied[broker][pod.container] = revision
		p.mu.Unlock()
		return nil
	case resp.StatusCode == http.StatusConflict:
		p.mu.Lock()
		p.floor[broker] = max(p.floor[broker], answer.Generation+1)
		p.mu.Unlock()
		return fmt.Errorf("pod %s holds a newer auth bundle (generation %d); the next bundle continues from there", pod.name, answer.Generation)
	default:
		return fmt.Errorf("pod %s refused the auth bundle: HTTP %d %s", pod.name, resp.StatusCode, answer.Error)
	}
}

// errPush marks a failed push: reported in status and retried with backoff.
var errPush = errors.New("auth bundle push failed")

// syncAuth pushes the bundle to the ready pods that lack it and, once every
// ready pod enforces it, tells the user and ACL controllers.
func (r *MQTTBrokerReconciler) syncAuth(ctx context.Context, s *brokerScope, auth *renderedAuth) error {
	b := s.broker
	key := client.ObjectKeyFromObject(b)
	var pods corev1.PodList
	if err := r.Client.List(ctx, &pods, client.InNamespace(b.Namespace), client.MatchingLabels(resources.SelectorLabels(b))); err != nil {
		return fmt.Errorf("listing the broker's pods: %w", err)
	}
	var owner types.UID
	if s.sts != nil {
		owner = s.sts.UID
	}
	ready := readyPods(pods.Items, owner)
	inSync, err := r.pusher.sync(ctx, key, ready, auth.token, auth.data, auth.bundle.Revision)
	s.auth = &v1alpha1.AuthStatus{
		Revision: auth.bundle.Revision, Generation: auth.bundle.Generation,
		Users: int32(len(auth.users)), ACLs: int32(len(auth.acls)),
		ReadyPods: int32(len(ready)), PodsInSync: inSync,
	}
	if int(inSync) == len(ready) {
		r.Enforcement.set(key, brokerAuth{
			revision: auth.bundle.Revision, users: auth.users, acls: auth.acls,
			readyPods: inSync, scaledToZero: resources.Replicas(b) == 0,
		})
	}
	if err != nil {
		s.pushErr = err
		return fmt.Errorf("%w: %w", errPush, err)
	}
	return nil
}
