package main

import (
	"fmt"
	"sync"
	"testing"
	"time"

	pahov3 "github.com/eclipse/paho.mqtt.golang"
)

// The durable promise: once the broker acknowledged a QoS 1 message, killing
// it (SIGKILL, no drain) does not lose it. The subscriber's persistent session
// receives every acknowledged message after the restart.
func TestDurableModeKeepsEveryAcknowledgedMessageAcrossSIGKILL(t *testing.T) {
	f := newBrokerFiles(t)
	f.durable = true
	f.writeConfig(t)
	f.writeBundle(t, f.authBundle())
	p := f.start(t)

	sub := mustConnect(t, f.mqtt, "bob", bobPass, "bob-durable", false)
	if tok := sub.Subscribe("devices/alice/#", 1, nil); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	sub.Disconnect(100)

	const n = 300
	pub := mustConnect(t, f.mqtt, "alice", alicePass, "alice-durable", true)
	tokens := make([]pahov3.Token, n)
	for i := range n {
		tokens[i] = pub.Publish("devices/alice/seq", 1, false, fmt.Sprintf("m-%04d", i))
	}
	for i, tok := range tokens {
		if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("message %d not acknowledged: %v", i, tok.Error())
		}
	}
	kill(t, p) // every message above was acknowledged; none may be lost

	f.start(t)
	var mu sync.Mutex
	got := map[string]int{}
	o := pahov3.NewClientOptions().AddBroker("tcp://" + f.mqtt).SetClientID("bob-durable").SetUsername("bob").SetPassword(bobPass).
		SetCleanSession(false).SetAutoReconnect(false).SetProtocolVersion(4).
		SetDefaultPublishHandler(func(_ pahov3.Client, m pahov3.Message) {
			mu.Lock()
			got[string(m.Payload())]++
			mu.Unlock()
		})
	c := pahov3.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("reconnect: %v", tok.Error())
	}
	defer c.Disconnect(0)
	waitFor(t, "every acknowledged message", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got) == n
	})
	for i := range n {
		if got[fmt.Sprintf("m-%04d", i)] == 0 {
			t.Errorf("message %d lost", i)
		}
	}
}
