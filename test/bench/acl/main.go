// Command acl is `make bench-acl`: how fast users and ACLs reach running
// brokers. It runs envtest, the operator binary as its own process (to
// measure its memory), and real broker processes as the pods
// (test/localpods, volume syncs slowed to ten minutes so only the operator's
// push can deliver a change), and prints name=value lines:
//
//	acl_propagation_pods            broker pods the ACL changes reach (--pods)
//	acl_propagation_ms_p50 / _p99   TopicACL update -> every ready pod enforces it
//	revocation_ms_p50 / _p99        MQTTUser delete -> its live session closed
//	users_10k_bundle_s              10,000 MQTTUsers created -> all in every pod's bundle
//	users_10k_converge_s            ... -> all 10,000 report Ready (Enforced)
//	operator_rss_mib_10k_users      operator resident memory with 10,000 users
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	v1alpha1 "github.com/mqtt-operator/mqtt-operator/api/v1alpha1"
	"github.com/mqtt-operator/mqtt-operator/internal/testenv"
	"github.com/mqtt-operator/mqtt-operator/test/bench/measure"
	"github.com/mqtt-operator/mqtt-operator/test/bench/operatorproc"
	"github.com/mqtt-operator/mqtt-operator/test/localpods"
)

const ns = "bench"

type bench struct {
	c        client.Client
	pods     *localpods.Harness
	replicas int
	podAddrs []string // by ordinal
	token    string
}

func main() {
	manager := flag.String("manager", "bin/manager", "operator binary to measure")
	rounds := flag.Int("rounds", 50, "TopicACL updates to time")
	revocations := flag.Int("revocations", 30, "MQTTUser deletions to time")
	users := flag.Int("users", 10000, "MQTTUsers on one broker for the scale run")
	replicas := flag.Int("pods", 3, "pods of the broker (above 1, one clustered broker)")
	flag.Parse()
	if err := run(*manager, *rounds, *revocations, *users, *replicas); err != nil {
		fmt.Fprintln(os.Stderr, "bench-acl:", err)
		os.Exit(1)
	}
}

func logf(format string, args ...any) { fmt.Fprintf(os.Stderr, "# "+format+"\n", args...) }

func run(manager string, rounds, revocations, users, replicas int) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	work, err := os.MkdirTemp("", "bench-acl")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	brokerBin, err := localpods.BuildBroker(work)
	if err != nil {
		return err
	}
	ctrllog.SetLogger(logr.Discard()) // the harness's cache would otherwise complain; the operator logs in its own process
	logf("starting envtest, the operator (%s) and the local pods", manager)
	env, err := testenv.Start()
	if err != nil {
		return err
	}
	defer func() { _ = env.Stop() }()
	op, err := operatorproc.Start(env, manager)
	if err != nil {
		return err
	}
	defer op.Stop()
	pods, err := localpods.Start(ctx, env.Config, localpods.Options{BrokerBinary: brokerBin, WorkDir: work, VolumeSyncDelay: 10 * time.Minute})
	if err != nil {
		return err
	}
	defer pods.Stop()

	b := &bench{c: env.Client, pods: pods, replicas: replicas}
	if err := b.setUp(ctx); err != nil {
		return err
	}
	acl, err := b.aclPropagation(ctx, rounds)
	if err != nil {
		return err
	}
	rev, err := b.revocation(ctx, revocations)
	if err != nil {
		return err
	}
	fmt.Printf("acl_propagation_pods=%d\n", replicas)
	fmt.Printf("acl_propagation_ms_p50=%.1f\nacl_propagation_ms_p99=%.1f\n", measure.Percentile(acl, 0.5), measure.Percentile(acl, 0.99))
	fmt.Printf("revocation_ms_p50=%.1f\nrevocation_ms_p99=%.1f\n", measure.Percentile(rev, 0.5), measure.Percentile(rev, 0.99))
	return b.scale(ctx, op, users)
}

func (b *bench) setUp(ctx context.Context) error {
	if err := b.c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		return err
	}
	broker := &v1alpha1.MQTTBroker{ObjectMeta: metav1.ObjectMeta{Name: "telemetry", Namespace: ns},
		Spec: v1alpha1.MQTTBrokerSpec{Replicas: ptr.To(int32(b.replicas))}}
	// The API server applies a changed CRD's validation shortly after the
	// update; until then it refuses more than one replica.
	if err := measure.WaitFor(30*time.Second, func() error { return b.c.Create(ctx, broker.DeepCopy()) }); err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if err := b.pods.WaitReady(wctx, ns, "telemetry", b.replicas); err != nil {
		return err
	}
	var admin corev1.Secret
	if err := b.c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "telemetry-admin"}, &admin); err != nil {
		return err
	}
	b.token = string(admin.Data["token"])
	for i := range b.replicas {
		addr := b.pods.PodAddr(ns, fmt.Sprintf("telemetry-%d", i))
		if addr == "" {
			return fmt.Errorf("pod telemetry-%d has no address", i)
		}
		b.podAddrs = append(b.podAddrs, addr)
	}
	return nil
}

// podRevision asks a broker pod which bundle it enforces.
func (b *bench) podRevision(addr string) (string, int64, error) {
	req, _ := http.NewRequest(http.MethodGet, "http://"+net.JoinHostPort(addr, "9091")+"/v1/auth-bundle/revision", nil)
	req.Header.Set("Authorization", "Bearer "+b.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", 0, err
	}
	defer resp.Body.Close()
	var out struct {
		Revision   string `json:"revision"`
		Generation int64  `json:"generation"`
	}
	err = json.NewDecoder(resp.Body).Decode(&out)
	return out.Revision, out.Generation, err
}

// lowestGeneration is the oldest bundle generation any pod enforces.
func (b *bench) lowestGeneration() (int64, error) {
	lowest := int64(-1)
	for _, addr := range b.podAddrs {
		_, g, err := b.podRevision(addr)
		if err != nil {
			return 0, err
		}
		if lowest < 0 || g < lowest {
			lowest = g
		}
	}
	return lowest, nil
}

// waitPodsPast polls every pod (a round every 2 ms) until each enforces a
// bundle newer than generation, and returns when the last one did.
func (b *bench) waitPodsPast(generation int64, timeout time.Duration) (time.Time, error) {
	deadline := time.Now().Add(timeout)
	pending := append([]string(nil), b.podAddrs...)
	for time.Now().Before(deadline) {
		var still []string
		for _, addr := range pending {
			if _, g, err := b.podRevision(addr); err != nil || g <= generation {
				still = append(still, addr)
			}
		}
		if pending = still; len(pending) == 0 {
			return time.Now(), nil
		}
		time.Sleep(2 * time.Millisecond)
	}
	return time.Time{}, fmt.Errorf("pods %v did not get a newer bundle than generation %d within %v", pending, generation, timeout)
}

func (b *bench) aclPropagation(ctx context.Context, rounds int) ([]float64, error) {
	logf("timing %d TopicACL updates until all %d pods enforce them", rounds, b.replicas)
	acl := &v1alpha1.TopicACL{ObjectMeta: metav1.ObjectMeta{Name: "probe", Namespace: ns}, Spec: v1alpha1.TopicACLSpec{
		BrokerRef: v1alpha1.BrokerReference{Name: "telemetry"}, Subjects: v1alpha1.ACLSubjects{AllAuthenticated: true},
		Rules: []v1alpha1.ACLRule{{Topic: "bench/0/#", Access: v1alpha1.AccessPublish}},
	}}
	if err := b.c.Create(ctx, acl); err != nil {
		return nil, err
	}
	var out []float64
	for i := 1; i <= rounds; i++ {
		// Start from a quiet state: the previous change fully applied.
		if err := measure.WaitFor(30*time.Second, func() error { return aclEnforced(ctx, b.c, acl) }); err != nil {
			return nil, err
		}
		gen, err := b.lowestGeneration()
		if err != nil {
			return nil, err
		}
		acl.Spec.Rules[0].Topic = v1alpha1.TopicFilter(fmt.Sprintf("bench/%d/#", i))
		start := time.Now()
		if err := b.c.Update(ctx, acl); err != nil {
			return nil, err
		}
		at, err := b.waitPodsPast(gen, 10*time.Second)
		if err != nil {
			return nil, err
		}
		out = append(out, float64(at.Sub(start).Microseconds())/1000)
	}
	sort.Float64s(out)
	return out, nil
}

func aclEnforced(ctx context.Context, c client.Client, acl *v1alpha1.TopicACL) error {
	if err := c.Get(ctx, client.ObjectKeyFromObject(acl), acl); err != nil {
		return err
	}
	if r := meta.FindStatusCondition(acl.Status.Conditions, v1alpha1.ConditionReady); r == nil || r.Reason != "Enforced" || r.ObservedGeneration != acl.Generation {
		return errors.New("ACL not enforced yet")
	}
	return nil
}

func userEnforced(ctx context.Context, c client.Client, u *v1alpha1.MQTTUser) error {
	if err := c.Get(ctx, client.ObjectKeyFromObject(u), u); err != nil {
		return err
	}
	if r := meta.FindStatusCondition(u.Status.Conditions, v1alpha1.ConditionReady); r == nil || r.Reason != "Enforced" {
		return errors.New("user not enforced yet")
	}
	return nil
}

func (b *bench) revocation(ctx context.Context, n int) ([]float64, error) {
	logf("timing %d MQTTUser deletions until the live session closes", n)
	var out []float64
	for i := range n {
		u := &v1alpha1.MQTTUser{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("revoke-%d", i), Namespace: ns},
			Spec: v1alpha1.MQTTUserSpec{BrokerRef: v1alpha1.BrokerReference{Name: "telemetry"}}}
		if err := b.c.Create(ctx, u); err != nil {
			return nil, err
		}
		if err := measure.WaitFor(30*time.Second, func() error { return userEnforced(ctx, b.c, u) }); err != nil {
			return nil, err
		}
		var conn corev1.Secret
		if err := b.c.Get(ctx, client.ObjectKey{Namespace: ns, Name: u.Name + "-mqtt"}, &conn); err != nil {
			return nil, err
		}
		closed, err := b.connect(b.podAddrs[i%len(b.podAddrs)], u.Name, string(conn.Data["password"]))
		if err != nil {
			return nil, err
		}
		start := time.Now()
		if err := b.c.Delete(ctx, u); err != nil {
			return nil, err
		}
		select {
		case <-closed:
			out = append(out, float64(time.Since(start).Microseconds())/1000)
		case <-time.After(10 * time.Second):
			return nil, fmt.Errorf("the session of deleted user %s stayed open", u.Name)
		}
	}
	sort.Float64s(out)
	return out, nil
}

// connect logs in to the pod at addr as username and returns a channel
// closed when the broker ends the session.
func (b *bench) connect(addr, username, password string) (<-chan struct{}, error) {
	conn, err := net.DialTimeout("tcp", net.JoinHostPort(addr, "1883"), 3*time.Second)
	if err != nil {
		return nil, err
	}
	closed := make(chan struct{})
	var once sync.Once
	end := func() { once.Do(func() { close(closed) }) }
	c := paho.NewClient(paho.ClientConfig{Conn: conn, OnServerDisconnect: func(*paho.Disconnect) { end() }, OnClientError: func(error) { end() }})
	cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := c.Connect(cctx, &paho.Connect{ClientID: username, KeepAlive: 60, CleanStart: true,
		Username: username, UsernameFlag: true, Password: []byte(password), PasswordFlag: true}); err != nil {
		return nil, fmt.Errorf("connecting as %s: %w", username, err)
	}
	return closed, nil
}

func (b *bench) scale(ctx context.Context, op *operatorproc.Operator, n int) error {
	logf("creating %d MQTTUsers on one broker", n)
	start := time.Now()
	work := make(chan int)
	errs := make(chan error, 32)
	var wg sync.WaitGroup
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				u := &v1alpha1.MQTTUser{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("device-%05d", i), Namespace: ns},
					Spec: v1alpha1.MQTTUserSpec{BrokerRef: v1alpha1.BrokerReference{Name: "telemetry"}}}
				if err := b.c.Create(ctx, u); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	for i := range n {
		work <- i
	}
	close(work)
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return err
	}
	logf("created in %v; waiting for the pods' bundle and the users' status", time.Since(start).Round(time.Second))

	var inBundle time.Duration
	err := measure.WaitFor(30*time.Minute, func() error {
		var broker v1alpha1.MQTTBroker
		if err := b.c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "telemetry"}, &broker); err != nil {
			return err
		}
		if a := broker.Status.Auth; inBundle == 0 && a != nil && int(a.Users) >= n && a.PodsInSync == a.ReadyPods && int(a.ReadyPods) == b.replicas {
			inBundle = time.Since(start)
			logf("all %d users in the bundle of all %d pods after %v", n, b.replicas, inBundle.Round(time.Second))
		}
		var list v1alpha1.MQTTUserList
		if err := b.c.List(ctx, &list, client.InNamespace(ns)); err != nil {
			return err
		}
		ready := 0
		for _, u := range list.Items {
			if r := meta.FindStatusCondition(u.Status.Conditions, v1alpha1.ConditionReady); r != nil && r.Reason == "Enforced" {
				ready++
			}
		}
		if inBundle == 0 || ready < n {
			time.Sleep(5 * time.Second) // listing 10,000 users loads the API server: not too often
			return fmt.Errorf("%d of %d users enforced", ready, n)
		}
		return nil
	})
	if err != nil {
		return err
	}
	converged := time.Since(start)
	rss, hwm, err := op.Memory()
	if err != nil {
		return err
	}
	fmt.Printf("users=%d\n", n)
	fmt.Printf("users_10k_bundle_s=%.1f\n", inBundle.Seconds())
	fmt.Printf("users_10k_converge_s=%.1f\n", converged.Seconds())
	fmt.Printf("operator_rss_mib_10k_users=%.1f\n", rss)
	fmt.Printf("operator_peak_rss_mib_10k_users=%.1f\n", hwm)
	return nil
}
