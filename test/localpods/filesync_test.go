package localpods

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/mqtt-operator/mqtt-operator/api/v1alpha1"
	"github.com/mqtt-operator/mqtt-operator/internal/brokerconfig"
	"github.com/mqtt-operator/mqtt-operator/internal/passwordhash"
	"github.com/mqtt-operator/mqtt-operator/internal/resources"
)

// TestVolumesFollowTheirSources proves the file path on its own: a broker
// built by the operator's builders, but with no MQTTBroker behind it, so the
// operator neither pushes to it nor rewrites its Secrets. The pod waits
// (Pending) for its volumes, and a changed auth Secret reaches the running
// broker only through its files, VolumeSyncDelay later.
func TestVolumesFollowTheirSources(t *testing.T) {
	const delay = 300 * time.Millisecond
	env, bin := controlPlane(t)
	c := env.Client
	ns := newNamespace(t, c)
	var log syncBuffer
	h, workDir := startHarness(t, env, bin, ns, delay, &log)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	b := sampleBroker(t, ns)
	b.Name, b.UID = "files", types.UID("00000000-0000-0000-0000-00000000f11e")
	b.Spec.Storage = v1alpha1.Storage{Type: v1alpha1.StorageEphemeral}
	cfg, err := resources.BrokerConfig(b, nil, resources.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Create(ctx, resources.StatefulSet(b, cfg, resources.Options{BrokerImage: "not-pulled"})); err != nil {
		t.Fatal(err)
	}
	podKey := types.NamespacedName{Namespace: ns, Name: "files-0"}
	eventually(t, 20*time.Second, "pod created and waiting for its volumes", func() error {
		p := getPod(ctx, t, c, podKey)
		if p == nil || p.Status.Phase != corev1.PodPending || restarts(p) != 0 || p.Status.ContainerStatuses[0].State.Waiting == nil {
			return fmt.Errorf("pod %s", describe(p))
		}
		return nil
	})
	if pids := h.pids(); len(pids) != 0 {
		t.Fatalf("a broker runs before its volumes exist: %v", pids)
	}

	passwords := map[string]string{"alice": randomHex(t, 24)}
	token := randomHex(t, 16)
	cm, err := resources.ConfigMap(b, cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, obj := range []client.Object{cm, authSecret(t, b, 1, passwords), resources.AdminSecret(b, token)} {
		if err := c.Create(ctx, obj); err != nil {
			t.Fatal(err)
		}
	}
	wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
	defer wcancel()
	if err := h.WaitReady(wctx, ns, "files", 1); err != nil {
		t.Fatal(err)
	}
	mqttAddr := h.PodAddr(ns, podKey.Name) + ":1883"
	if err := canConnect(mqttAddr, "alice", passwords["alice"]); err != nil {
		t.Fatal(err)
	}
	atRest(ctx, t, c, podKey, types.NamespacedName{Namespace: ns, Name: "files"})

	passwords["bob"] = randomHex(t, 24)
	changed := time.Now() // before the write: the harness may see it before Update returns
	var secret corev1.Secret
	if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: resources.AuthSecretName(b)}, &secret); err != nil {
		t.Fatal(err)
	}
	secret.Data = authSecret(t, b, 2, passwords).Data
	if err := c.Update(ctx, &secret); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "bob can log in once the file changed", func() error { return canConnect(mqttAddr, "bob", passwords["bob"]) })
	if took := time.Since(changed); took < delay {
		t.Errorf("bob got in %v after the Secret changed, before the volume sync delay of %v", took, delay)
	}
	t.Logf("new user enforced through the file %v after the Secret changed (delay %v)", time.Since(changed).Round(time.Millisecond), delay)

	// An emptyDir dies with its pod.
	old := getPod(ctx, t, c, podKey)
	oldDir := filepath.Join(workDir, ns, "pods", podKey.Name+"-"+string(old.UID))
	if _, err := os.Stat(filepath.Join(oldDir, "volumes", "data")); err != nil {
		t.Fatalf("the pod's emptyDir: %v", err)
	}
	if err := c.Delete(ctx, old); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "pod re-created with fresh directories", func() error {
		if p := getPod(ctx, t, c, podKey); p == nil || p.UID == old.UID || !runningAndReady(p) {
			return fmt.Errorf("pod %s", describe(p))
		}
		if _, err := os.Stat(oldDir); !os.IsNotExist(err) {
			return fmt.Errorf("the old pod's directory is still there: %v", err)
		}
		return nil
	})
	if prefix := podKey.String() + ` {"time"`; !strings.Contains(log.String(), prefix+`:`) || !strings.Contains(log.String(), `"msg":"process started"`) {
		t.Errorf("the harness log should hold the pod's JSON lines prefixed with %q", podKey.String())
	}
	noSecretsIn(t, log.String(), map[string]string{
		"alice's password": passwords["alice"], "bob's password": passwords["bob"], "the admin token": token,
	})
	noSecretsIn(t, h.Output(ns, podKey.Name), map[string]string{
		"alice's password": passwords["alice"], "bob's password": passwords["bob"], "the admin token": token,
	})
}

// authSecret renders the Secret the operator would write for these users,
// who may all publish and subscribe under devices/.
func authSecret(t *testing.T, b *v1alpha1.MQTTBroker, generation int64, passwords map[string]string) *corev1.Secret {
	t.Helper()
	bundle := &brokerconfig.AuthBundle{Generation: generation, ACLs: []brokerconfig.ACL{{
		Name:     b.Namespace + "/devices",
		Subjects: brokerconfig.Subjects{AllAuthenticated: true},
		Rules:    []brokerconfig.Rule{{Topic: "devices/#", Access: brokerconfig.AccessPublishSubscribe, Effect: brokerconfig.EffectAllow}},
	}}}
	for user, pw := range passwords {
		hash, err := passwordhash.HashGenerated(pw, []byte(randomHex(t, 8)))
		if err != nil {
			t.Fatal(err)
		}
		bundle.Users = append(bundle.Users, brokerconfig.User{Username: user, PasswordHash: hash})
	}
	data, err := brokerconfig.MarshalBundle(bundle)
	if err != nil {
		t.Fatal(err)
	}
	return resources.AuthSecret(b, data, bundle)
}

// atRest checks that a converged pod and StatefulSet see no writes: the
// harness reports status only when something changed, however often it
// probes.
func atRest(ctx context.Context, t *testing.T, c client.Client, pod, sts types.NamespacedName) {
	t.Helper()
	versions := func() string {
		var p corev1.Pod
		var s appsv1.StatefulSet
		if err := c.Get(ctx, pod, &p); err != nil {
			t.Fatal(err)
		}
		if err := c.Get(ctx, sts, &s); err != nil {
			t.Fatal(err)
		}
		return p.ResourceVersion + "/" + s.ResourceVersion
	}
	before := versions()
	time.Sleep(time.Second) // a window to observe, not a synchronisation: five probe periods
	if after := versions(); after != before {
		t.Errorf("pod/StatefulSet resourceVersions moved at rest: %s -> %s", before, after)
	}
}
