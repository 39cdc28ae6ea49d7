package localpods

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	pahov3 "github.com/eclipse/paho.mqtt.golang"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/mqtt-operator/mqtt-operator/api/v1alpha1"
)

// A broker scaled out with every client on its first pod, as after an
// autoscaler's scale-up: the operator moves clients off pod 0 until every
// pod is within the band of the mean. Clients (paho MQTT 3.1.1 and
// paho.golang MQTT 5) reconnect to a pod picked at random, as through the
// Service; each resumes its persistent session, MQTT 5 clients are told
// 0x9C, and every QoS 1 message acknowledged during the rebalance reaches
// every subscriber.
func TestRebalanceAfterScaleOutOnLocalPods(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	env, bin := controlPlane(t)
	c := env.Client
	ns := newNamespace(t, c)
	h, _ := startHarness(t, env, bin, ns, time.Hour, nil)
	broker := sampleBroker(t, ns)
	// Autoscaled: clustered from its first pod, so the scale-out does not
	// restart pod 0 (and its clients stay where they are).
	broker.Spec.Autoscaling = &v1alpha1.AutoscalingSpec{MinReplicas: 1, MaxReplicas: 3, TargetCPUUtilizationPercentage: 70}
	broker.Spec.Rebalance = &v1alpha1.RebalanceSpec{ClientsPerSecond: 50}
	if err := c.Create(ctx, broker); err != nil {
		t.Fatal(err)
	}
	apply(t, c, ns, usersAndACL)
	waitReady(ctx, t, h, ns, 1)
	pw := password(ctx, t, c, ns, "alice")
	addrs := make([]string, 3)
	for i := range addrs {
		addrs[i] = fmt.Sprintf("telemetry-%d", i)
	}
	addr := func(pod string) string { return net.JoinHostPort(h.PodAddr(ns, pod), "1883") }

	const devices = 24
	rctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	roamers := make([]*roamer, devices)
	for i := range roamers {
		r := &roamer{id: fmt.Sprintf("device-%02d", i), v5: i%2 == 1, user: "alice", password: pw, got: map[string]int{}}
		if err := r.connect(addr(addrs[0])); err != nil {
			t.Fatalf("%s on telemetry-0: %v", r.id, err)
		}
		roamers[i] = r
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.roam(rctx, func() string { return addr(addrs[rand.IntN(3)]) })
		}()
	}
	defer func() { stop(); wg.Wait() }()

	// The autoscaler's move: replicas through the scale subresource.
	patchBroker(ctx, t, c, broker, func(b *v1alpha1.MQTTBroker) { b.Spec.Replicas = ptr.To[int32](3) })
	wctx, wcancel := context.WithTimeout(ctx, 90*time.Second)
	defer wcancel()
	if err := h.WaitReady(wctx, ns, "telemetry", 3); err != nil {
		t.Fatal(err)
	}

	// A publisher on the newest pod sends QoS 1 all along.
	pub := &publisher{user: "alice", password: pw, addr: func() string { return addr(addrs[rand.IntN(3)]) }}
	pctx, stopPub := context.WithCancel(ctx)
	defer stopPub()
	pubDone := make(chan struct{})
	go func() { defer close(pubDone); pub.run(pctx, addr(addrs[2]), 25*time.Millisecond) }()

	began := time.Now()
	var st *v1alpha1.RebalanceStatus
	eventually(t, 2*time.Minute, "status.rebalance Balanced", func() error {
		var b v1alpha1.MQTTBroker
		if err := c.Get(ctx, client.ObjectKeyFromObject(broker), &b); err != nil {
			return err
		}
		if st = b.Status.Rebalance; st == nil || st.Phase != v1alpha1.RebalanceDone {
			return fmt.Errorf("status.rebalance %+v", st)
		}
		return nil
	})
	t.Logf("balanced in %v: %d rounds, %d clients moved, clients per pod %v", time.Since(began).Round(time.Millisecond), st.Rounds, st.ClientsMoved, st.Clients)
	time.Sleep(time.Second) // the publisher goes on a little
	stopPub()
	<-pubDone
	acked := pub.ackedPayloads()
	if len(acked) < 100 {
		t.Fatalf("only %d QoS 1 messages acknowledged during the rebalance", len(acked))
	}
	total := int32(0)
	for _, n := range st.Clients {
		total += n
	}
	mean := float64(total) / 3
	for i, n := range st.Clients {
		if d := float64(n) - mean; d > 2.5 || d < -2.5 {
			t.Errorf("pod %d holds %d clients, mean %.1f: not within the band", i, n, mean)
		}
	}
	if st.ClientsMoved < devices/2 {
		t.Errorf("%d clients moved; at least %d had to leave pod 0", st.ClientsMoved, devices/2)
	}
	// Every subscriber, wherever it is now, gets every acknowledged message.
	deadline := time.Now().Add(15 * time.Second)
	for _, r := range roamers {
		for _, p := range acked {
			for !r.has(p) && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
			}
			if !r.has(p) {
				t.Errorf("%s never received acknowledged message %s", r.id, p)
				break
			}
		}
	}
	stop()
	wg.Wait()
	moved, lostSession := 0, 0
	for _, r := range roamers {
		r.mu.Lock()
		moved += r.moves
		lostSession += r.notPresent
		if r.v5 {
			for _, code := range r.reasons {
				if code != 0x9C {
					t.Errorf("%s was told 0x%02x, want 0x9C (use another server)", r.id, code)
				}
			}
		}
		r.mu.Unlock()
	}
	if moved == 0 || lostSession != 0 {
		t.Errorf("%d reconnects, %d without their session", moved, lostSession)
	}
	t.Logf("%d reconnects, every session resumed, %d acknowledged messages reached all %d subscribers", moved, len(acked), devices)
}

// roamer is a device with a persistent session that, sent away, logs in
// again on a pod the Service would pick.
type roamer struct {
	id             string
	v5             bool
	user, password string

	mu         sync.Mutex
	got        map[string]int
	moves      int    // reconnects after a loss
	notPresent int    // of them, without the session
	reasons    []byte // MQTT 5 DISCONNECT reasons from the server
	lost       chan struct{}
	close      func()
}

func (r *roamer) has(payload string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.got[payload] > 0
}

func (r *roamer) record(payload string) {
	r.mu.Lock()
	r.got[payload]++
	r.mu.Unlock()
}

// connect logs in at addr; the first time it subscribes, later it expects
// its session.
func (r *roamer) connect(addr string) error {
	first := r.close == nil
	lost := make(chan struct{})
	var once sync.Once
	gone := func() { once.Do(func() { close(lost) }) }
	var present bool
	if r.v5 {
		conn, err := net.DialTimeout("tcp", addr, 3*time.Second)
		if err != nil {
			return err
		}
		cl := paho.NewClient(paho.ClientConfig{
			Conn: conn,
			OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
				r.record(string(pr.Packet.Payload))
				return true, nil
			}},
			OnServerDisconnect: func(d *paho.Disconnect) {
				r.mu.Lock()
				r.reasons = append(r.reasons, d.ReasonCode)
				r.mu.Unlock()
				gone()
			},
			OnClientError: func(error) { gone() },
		})
		expiry := uint32(3600)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		ack, err := cl.Connect(ctx, &paho.Connect{ClientID: r.id, KeepAlive: 30, CleanStart: false, Username: r.user, UsernameFlag: true,
			Password: []byte(r.password), PasswordFlag: true, Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiry}})
		if err != nil {
			_ = conn.Close()
			return err
		}
		present = ack.SessionPresent
		if first {
			if _, err := cl.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "devices/rebalance", QoS: 1}}}); err != nil {
				return err
			}
		}
		r.close = func() { _ = cl.Disconnect(&paho.Disconnect{}) }
	} else {
		o := pahov3.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(r.id).SetUsername(r.user).SetPassword(r.password).
			SetCleanSession(false).SetAutoReconnect(false).SetConnectRetry(false).SetConnectTimeout(3 * time.Second).SetProtocolVersion(4).
			SetDefaultPublishHandler(func(_ pahov3.Client, m pahov3.Message) { r.record(string(m.Payload())) }).
			SetConnectionLostHandler(func(pahov3.Client, error) { gone() })
		cl := pahov3.NewClient(o)
		tok := cl.Connect()
		if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			return fmt.Errorf("connecting: %v", tok.Error())
		}
		present = tok.(*pahov3.ConnectToken).SessionPresent()
		if first {
			if s := cl.Subscribe("devices/rebalance", 1, nil); !s.WaitTimeout(5*time.Second) || s.Error() != nil {
				return fmt.Errorf("subscribing: %v", s.Error())
			}
		}
		r.close = func() { cl.Disconnect(100) }
	}
	r.mu.Lock()
	if !first && !present {
		r.notPresent++
	}
	r.lost = lost
	r.mu.Unlock()
	return nil
}

// roam logs in again wherever pick says each time the connection is lost,
// until ctx ends.
func (r *roamer) roam(ctx context.Context, pick func() string) {
	defer func() { r.close() }()
	for {
		r.mu.Lock()
		lost := r.lost
		r.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-lost:
		}
		r.mu.Lock()
		r.moves++
		r.mu.Unlock()
		for r.connect(pick()) != nil {
			select {
			case <-ctx.Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
}

// publisher sends QoS 1 messages and remembers those acknowledged; sent
// away, it connects again elsewhere.
type publisher struct {
	user, password string
	addr           func() string
	mu             sync.Mutex
	acked          []string
}

func (p *publisher) run(ctx context.Context, first string, every time.Duration) {
	at := first
	for i := 0; ctx.Err() == nil; {
		o := pahov3.NewClientOptions().AddBroker("tcp://" + at).SetClientID("rebalance-publisher").SetUsername(p.user).SetPassword(p.password).
			SetCleanSession(true).SetAutoReconnect(false).SetConnectTimeout(3 * time.Second).SetProtocolVersion(4)
		cl := pahov3.NewClient(o)
		if tok := cl.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			at = p.addr()
			time.Sleep(100 * time.Millisecond)
			continue
		}
		for ctx.Err() == nil && cl.IsConnectionOpen() {
			payload := "m" + strconv.Itoa(i)
			if tok := cl.Publish("devices/rebalance", 1, false, payload); tok.WaitTimeout(5*time.Second) && tok.Error() == nil {
				p.mu.Lock()
				p.acked = append(p.acked, payload)
				p.mu.Unlock()
				i++
			}
			time.Sleep(every)
		}
		cl.Disconnect(100)
		at = p.addr()
	}
}

func (p *publisher) ackedPayloads() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.acked...)
}
