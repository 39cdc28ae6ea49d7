package localpods

import (
	"context"
	"fmt"
	"testing"
	"time"

	pahov3 "github.com/eclipse/paho.mqtt.golang"
	"k8s.io/utils/ptr"

	v1alpha1 "github.com/mqtt-operator/mqtt-operator/api/v1alpha1"
	"github.com/mqtt-operator/mqtt-operator/controllers"
)

// A clustered broker on real pods, made by the operator: scaled 1 -> 3 the
// three pods form one mesh (routes authenticated and TLS-verified with what
// the operator issued), status says Clustered, a message published on one
// pod reaches a subscriber on another, and scaled back to 1 the remaining
// pod keeps serving its clients.
func TestClusteredBrokerScalesOnLocalPods(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	s := startSample(ctx, t)
	c, ns, h, broker := s.env.Client, s.ns, s.h, s.broker

	// The first scale-up restarts pod 0 with the cluster section, once the
	// new pods are ready: they wait for it up to the join grace (10 s).
	patchBroker(ctx, t, c, broker, func(b *v1alpha1.MQTTBroker) { b.Spec.Replicas = ptr.To[int32](3) })
	wctx, wcancel := context.WithTimeout(ctx, 90*time.Second)
	defer wcancel()
	if err := h.WaitReady(wctx, ns, "telemetry", 3); err != nil {
		t.Fatal(err)
	}
	eventually(t, 60*time.Second, "three pods in one mesh (Clustered, Joined)", func() error {
		return brokerCondition(ctx, c, broker, v1alpha1.ConditionClustered, controllers.ReasonClusterJoined, 3)
	})

	alicePassword := password(ctx, t, c, ns, "alice")
	addr := func(pod string) string { return h.PodAddr(ns, pod) + ":1883" }
	eventually(t, 10*time.Second, "alice can log in on every pod", func() error {
		for i := range 3 {
			if err := canConnect(addr(fmt.Sprintf("telemetry-%d", i)), "alice", alicePassword); err != nil {
				return err
			}
		}
		return nil
	})
	sub := mustConnect(t, addr("telemetry-2"), "alice", alicePassword)
	got := make(chan string, 4)
	if tok := sub.Subscribe("devices/cluster", 1, func(_ pahov3.Client, m pahov3.Message) { got <- string(m.Payload()) }); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribing on telemetry-2: %v", tok.Error())
	}
	pub := mustConnect(t, addr("telemetry-0"), "alice", alicePassword)
	if tok := pub.Publish("devices/cluster", 1, false, "across pods"); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("publishing on telemetry-0: %v", tok.Error())
	}
	select {
	case m := <-got:
		if m != "across pods" {
			t.Fatalf("got %q", m)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a QoS 1 message acknowledged on telemetry-0 did not reach the subscriber on telemetry-2")
	}
	pub.Disconnect(100)
	sub.Disconnect(100)

	// Back to one pod: it keeps serving.
	patchBroker(ctx, t, c, broker, func(b *v1alpha1.MQTTBroker) { b.Spec.Replicas = ptr.To[int32](1) })
	eventually(t, 60*time.Second, "one pod left, Ready", func() error {
		return brokerCondition(ctx, c, broker, v1alpha1.ConditionReady, controllers.ReasonPodsReady, 1)
	})
	alice := mustConnect(t, addr("telemetry-0"), "alice", alicePassword)
	if m, err := subscribeAndPublish(alice, "devices/alone", "still here"); err != nil || m != "still here" {
		t.Fatalf("the remaining pod: %q %v", m, err)
	}
	alice.Disconnect(100)
}
