package broker_test

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	pahov3 "github.com/eclipse/paho.mqtt.golang"

	"github.com/mqtt-operator/mqtt-operator/internal/brokerconfig"
)

// Shared subscriptions (issue 11, item 1).

// A shared subscription is judged by its topic filter: bob may read
// devices/alice/#, so he may join any group on it, over MQTT 5 and 3.1.1;
// a filter he may not read stays refused.
func TestSharedSubscriptionIsJudgedByItsTopicFilter(t *testing.T) {
	tb := startBroker(t, testConfig(t.TempDir()), testBundle(t, 1))
	bob := mustV5(t, tb.tcp, "bob", bobPassword)
	for filter, want := range map[string]byte{
		"$share/readers/devices/alice/#":  1,
		"$share/readers/devices/+/status": 1,
		"$share/readers/commands/alice/#": 0x87, // bob reads only his own commands
		"$share/readers/#":                0x87,
	} {
		if got := bob.subscribe(t, filter, 1); got != want {
			t.Errorf("SUBACK for %s: 0x%02x, want 0x%02x", filter, got, want)
		}
	}

	v3, err := connectV3("tcp://"+tb.tcp, "bob", bobPassword, "bob-v3-shared")
	if err != nil {
		t.Fatal(err)
	}
	defer v3.Disconnect(0)
	got := make(chan string, 1)
	tok := v3.Subscribe("$share/readers/devices/alice/#", 1, func(_ pahov3.Client, m pahov3.Message) { got <- m.Topic() })
	if !tok.WaitTimeout(3 * time.Second) {
		t.Fatal("3.1.1 SUBSCRIBE not answered")
	}
	for _, code := range tok.(*pahov3.SubscribeToken).Result() { // keyed by the filter after the group
		if code != 1 {
			t.Fatalf("3.1.1 SUBACK 0x%02x for a shared subscription on a readable filter, want 1", code)
		}
	}
	_, _ = bob.Unsubscribe(context.Background(), &paho.Unsubscribe{Topics: []string{"$share/readers/devices/alice/#"}})
	alice := mustV5(t, tb.tcp, "alice", alicePassword)
	_ = alice.publish(t, "devices/alice/temp", "21", 1, false)
	select {
	case topic := <-got:
		if topic != "devices/alice/temp" {
			t.Errorf("3.1.1 member got topic %q", topic)
		}
	case <-time.After(3 * time.Second):
		t.Error("the 3.1.1 member got nothing")
	}
}

// With anonymous access, an anonymous client may share what it may read.
func TestSharedSubscriptionWithAnonymousAccess(t *testing.T) {
	cfg := testConfig(t.TempDir())
	cfg.AllowAnonymous = true
	tb := startBroker(t, cfg, testBundle(t, 1))
	guest, err := connectV5(t, tb.tcp, v5opts{keepAlive: 30})
	if err != nil {
		t.Fatal(err)
	}
	if code := guest.subscribe(t, "$share/g/public/#", 0); code != 0 {
		t.Fatalf("anonymous SUBACK 0x%02x for $share/g/public/#, want 0", code)
	}
	other, err := connectV5(t, tb.tcp, v5opts{keepAlive: 30})
	if err != nil {
		t.Fatal(err)
	}
	_ = other.publish(t, "public/news", "hello", 0, false)
	guest.expect(t, "hello")
}

// A group name must be non-empty and free of wildcards, and a topic filter
// must follow it: otherwise 0x8F (topic filter invalid), 0x80 for 3.1.1.
func TestMalformedSharedSubscriptionsAreInvalid(t *testing.T) {
	tb := startBroker(t, testConfig(t.TempDir()), testBundle(t, 1))
	bob := mustV5(t, tb.tcp, "bob", bobPassword)
	malformed := []string{"$share//devices/alice/#", "$share/g+/devices/alice/#", "$share/#/devices/alice/#", "$share/readers", "$share/readers/"}
	for _, filter := range malformed {
		if got := bob.subscribe(t, filter, 1); got != 0x8F {
			t.Errorf("MQTT 5 SUBACK for %q: 0x%02x, want 0x8F", filter, got)
		}
	}
	// paho's 3.1.1 client checks filters itself: raw packets.
	conn := rawLogin(t, tb.tcp, "bob-v3-malformed", "bob", bobPassword)
	var body []byte
	for _, filter := range malformed {
		body = append(append(append(body, 0, byte(len(filter))), filter...), 1)
	}
	body = append([]byte{0, 7}, body...)
	_, _ = conn.Write(append([]byte{0x82, byte(len(body))}, body...))
	suback := readPacket(t, conn)
	if suback[0] != 0x90 || len(suback) != 4+len(malformed) {
		t.Fatalf("3.1.1 SUBACK %x", suback)
	}
	for i, filter := range malformed {
		if got := suback[4+i]; got != 0x80 {
			t.Errorf("3.1.1 SUBACK for %q: 0x%02x, want 0x80", filter, got)
		}
	}
	if n := tb.Server().Info.Subscriptions; n != 0 {
		t.Errorf("%d subscriptions made from malformed filters", n)
	}
}

// Each message reaches exactly one member of a group, and every member gets
// some; a plain subscriber of the same topics gets them all.
func TestSharedSubscriptionDeliversEachMessageToOneMember(t *testing.T) {
	tb := startBroker(t, testConfig(t.TempDir()), testBundle(t, 1))
	members := []*v5{mustV5(t, tb.tcp, "bob", bobPassword), mustV5(t, tb.tcp, "bob", bobPassword)}
	for _, m := range members {
		if code := m.subscribe(t, "$share/workers/devices/alice/#", 1); code != 1 {
			t.Fatalf("SUBACK 0x%02x", code)
		}
	}
	plain := mustV5(t, tb.tcp, "bob", bobPassword)
	plain.subscribe(t, "devices/alice/#", 1)
	alice := mustV5(t, tb.tcp, "alice", alicePassword)
	const n = 60
	for i := range n {
		if err := alice.publish(t, "devices/alice/jobs", fmt.Sprintf("job-%d", i), byte(i%2), false); err != nil {
			t.Fatal(err)
		}
	}
	for i := range n {
		plain.expect(t, fmt.Sprintf("job-%d", i))
	}
	// Each member gets its messages in order: once both have an end
	// marker (each marker goes to one of them), every job is in.
	got := []map[string]int{{}, {}}
	ended := []bool{false, false}
	for k := 0; !ended[0] || !ended[1]; k++ {
		if k == 50 {
			t.Fatalf("after 50 end markers, members ended: %v", ended)
		}
		_ = alice.publish(t, "devices/alice/jobs", fmt.Sprintf("end-%d", k), 1, false)
		received := false
		for !received {
			select {
			case m := <-members[0].messages:
				ended[0] = ended[0] || strings.HasPrefix(string(m.Payload), "end-")
				got[0][string(m.Payload)]++
				received = strings.HasPrefix(string(m.Payload), "end-")
			case m := <-members[1].messages:
				ended[1] = ended[1] || strings.HasPrefix(string(m.Payload), "end-")
				got[1][string(m.Payload)]++
				received = strings.HasPrefix(string(m.Payload), "end-")
			case <-time.After(3 * time.Second):
				t.Fatalf("end marker %d reached no member", k)
			}
		}
	}
	for i := range n {
		p := fmt.Sprintf("job-%d", i)
		if c := got[0][p] + got[1][p]; c != 1 {
			t.Errorf("%s reached the group %d times, want once", p, c)
		}
	}
	if len(got[0]) <= 1 || len(got[1]) <= 1 {
		t.Errorf("one member got everything (%d and %d messages): the group does not share", len(got[0]), len(got[1]))
	}
}

// A shared subscription gets no retained messages when it subscribes.
func TestSharedSubscriptionGetsNoRetainedMessages(t *testing.T) {
	tb := startBroker(t, testConfig(t.TempDir()), testBundle(t, 1))
	alice := mustV5(t, tb.tcp, "alice", alicePassword)
	if err := alice.publish(t, "devices/alice/status", "retained-online", 1, true); err != nil {
		t.Fatal(err)
	}
	bob := mustV5(t, tb.tcp, "bob", bobPassword)
	bob.subscribe(t, "$share/g/devices/alice/#", 1)
	_ = alice.publish(t, "devices/alice/status", "live", 1, false)
	bob.expectNoneBefore(t, "retained-online", "live")
}

// When the ACLs no longer let a member read a topic, the group's messages
// on it go to the members that may: none is lost to the narrowed one.
func TestSharedSubscriptionSkipsMembersTheACLsNoLongerAllow(t *testing.T) {
	tb := startBroker(t, testConfig(t.TempDir()), testBundle(t, 1))
	aliceMember := mustV5(t, tb.tcp, "alice", alicePassword)
	bobMember := mustV5(t, tb.tcp, "bob", bobPassword)
	for _, m := range []*v5{aliceMember, bobMember} {
		if code := m.subscribe(t, "$share/status/devices/+/status", 1); code != 1 {
			t.Fatalf("SUBACK 0x%02x", code)
		}
	}
	narrowed := testBundle(t, 2)
	narrowed.ACLs = append(narrowed.ACLs, brokerconfig.ACL{Name: "test/alice-reads-no-status", Subjects: brokerconfig.Subjects{Users: []string{"alice"}},
		Rules: []brokerconfig.Rule{{Topic: "devices/+/status", Access: brokerconfig.AccessSubscribe, Effect: brokerconfig.EffectDeny}}})
	tb.apply(t, narrowed)

	alice := mustV5(t, tb.tcp, "alice", alicePassword)
	const n = 30
	for i := range n {
		if err := alice.publish(t, "devices/alice/status", fmt.Sprintf("s-%d", i), 1, false); err != nil {
			t.Fatal(err)
		}
	}
	for i := range n {
		bobMember.expect(t, fmt.Sprintf("s-%d", i))
	}
	if len(aliceMember.messages) != 0 {
		t.Errorf("the member the ACLs no longer allow got %d messages", len(aliceMember.messages))
	}
}

// No client may publish to a topic that starts with the share prefix: no
// subscription can match it, and the ACLs judge what follows the prefix.
func TestPublishingToSharePrefixIsRefused(t *testing.T) {
	bundle := testBundle(t, 1)
	bundle.ACLs = append(bundle.ACLs, brokerconfig.ACL{Name: "test/odd", Subjects: brokerconfig.Subjects{Users: []string{"alice"}},
		Rules: []brokerconfig.Rule{{Topic: "$share/g/devices/alice/temp", Access: brokerconfig.AccessPublish, Effect: brokerconfig.EffectAllow}}})
	tb := startBroker(t, testConfig(t.TempDir()), bundle)
	alice := mustV5(t, tb.tcp, "alice", alicePassword)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, _ := alice.Publish(ctx, &paho.Publish{Topic: "$share/g/devices/alice/temp", QoS: 1, Payload: []byte("x")})
	if resp == nil || resp.ReasonCode != 0x87 {
		t.Fatalf("publish to $share/g/devices/alice/temp: %+v, want PUBACK 0x87", resp)
	}
}

// The byte budget holds for members of a shared subscription as for any
// subscriber: one that stops reading is disconnected once over it, and the
// group's messages go on to the member that reads.
func TestStuckSharedMemberOverByteBudgetIsDisconnected(t *testing.T) {
	quietBroker(t)
	cfg := testConfig(t.TempDir())
	cfg.Limits.MaxQueuedBytesPerClient = 1 << 20
	tb := startBroker(t, cfg, testBundle(t, 1))
	smallBufferSubscriber(t, tb.tcp, "stuck-member", "$share/g/devices/alice/#") // does not read
	_, r := smallBufferSubscriber(t, tb.tcp, "reading-member", "$share/g/devices/alice/#")
	const n = 200
	var got atomic.Int64
	done := make(chan error, 1)
	go func() { done <- countPublishes(r, n, &got, nil) }()
	publishBig(t, tb.tcp, "devices/alice/big", n)
	deadline := time.Now().Add(20 * time.Second)
	for tb.Stats().OverBudgetDisconnects == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if d := tb.Stats().OverBudgetDisconnects; d != 1 {
		t.Fatalf("members disconnected over budget: %d, want 1", d)
	}
	// What the stuck member held is lost with it; the reader gets the rest.
	for got.Load() < n/2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got.Load() < n/2 {
		t.Errorf("the reading member got %d of %d messages", got.Load(), n)
	}
}
