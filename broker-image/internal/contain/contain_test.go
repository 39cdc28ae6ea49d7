package contain_test

import (
	"bytes"
	"log/slog"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	pahov3 "github.com/eclipse/paho.mqtt.golang"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/mqtt-operator/mqtt-operator/broker-image/internal/contain"
)

// faulty panics where a bug in one of our hooks would: on a client's write
// loop (OnPacketSent) and in an ACL check.
type faulty struct {
	mqtt.HookBase
	sentPanics atomic.Int32 // OnPacketSent panics this many more times
}

func (f *faulty) ID() string { return "faulty" }

func (f *faulty) Provides(b byte) bool {
	return b == mqtt.OnPacketSent || b == mqtt.OnACLCheck || b == mqtt.OnConnectAuthenticate
}

func (f *faulty) OnConnectAuthenticate(*mqtt.Client, packets.Packet) bool { return true }

func (f *faulty) OnPacketSent(_ *mqtt.Client, pk packets.Packet, _ []byte) {
	if pk.FixedHeader.Type == packets.Publish && f.sentPanics.Add(-1) >= 0 {
		panic("bug in OnPacketSent")
	}
}

func (f *faulty) OnACLCheck(_ *mqtt.Client, topic string, _ bool) bool {
	if strings.HasPrefix(topic, "boom/") {
		panic("bug in OnACLCheck")
	}
	return true
}

// Without the wrapper, the first panic on the write loop ends this test's
// process: nobody recovers mochi's write loop.
func TestPanicsInHooksAreContained(t *testing.T) {
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	r := &contain.Recoverer{Log: log}
	f := &faulty{}
	f.sentPanics.Store(3)

	server := mqtt.New(&mqtt.Options{InlineClient: true, Logger: slog.New(slog.NewTextHandler(&bytes.Buffer{}, nil))})
	if err := server.AddHook(contain.Hook(f, r), nil); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	if err := server.AddListener(listeners.NewTCP(listeners.Config{ID: "t", Address: addr})); err != nil {
		t.Fatal(err)
	}
	if err := server.Serve(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = server.Close() })

	got := make(chan string, 100)
	opts := pahov3.NewClientOptions().AddBroker("tcp://" + addr).SetClientID("sub").SetAutoReconnect(false)
	sub := pahov3.NewClient(opts)
	if tok := sub.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	defer sub.Disconnect(100)
	for _, filter := range []string{"ok/#", "boom/#"} {
		if tok := sub.Subscribe(filter, 1, func(_ pahov3.Client, m pahov3.Message) { got <- m.Topic() + "=" + string(m.Payload()) }); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatalf("subscribe %s: %v", filter, tok.Error())
		}
	}
	// boom/x: the ACL check panics on the publisher's side, so it is denied;
	// ok/1..5: the first three writes to the subscriber panic after writing.
	for _, m := range []struct{ topic, payload string }{{"boom/x", "no"}, {"ok/1", "1"}, {"ok/2", "2"}, {"ok/3", "3"}, {"ok/4", "4"}, {"ok/5", "5"}} {
		if err := server.Publish(m.topic, []byte(m.payload), false, 1); err != nil {
			t.Fatal(err)
		}
	}
	var seen []string
	deadline := time.After(10 * time.Second)
	for len(seen) < 5 {
		select {
		case m := <-got:
			seen = append(seen, m)
		case <-deadline:
			t.Fatalf("got %v, want ok/1..5", seen)
		}
	}
	for _, m := range seen {
		if strings.HasPrefix(m, "boom/") {
			t.Errorf("a message whose ACL check panicked was delivered: %s", m)
		}
	}
	// The inline publisher's ACL check is skipped by mochi; the subscriber's
	// delivery check is where boom/x panicked, once.
	if n := r.Count.Load(); n != 4 {
		t.Errorf("panics counted: %d, want 4 (3 write-loop, 1 ACL check)\n%s", n, logs.String())
	}
	if c := strings.Count(logs.String(), "stack="); c != 2 {
		t.Errorf("stacks logged: %d, want 2 (once per hook method)\n%s", c, logs.String())
	}
}
