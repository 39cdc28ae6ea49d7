package broker_test

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// A subscriber with a small Receive Maximum gets a burst of QoS 1 and 2
// messages, all of them, in order (mochi stalled after a few dozen and
// reordered the ones it held back).
func TestReceiveMaximumKeepsOrderAndDelivers(t *testing.T) {
	tb := startBroker(t, testConfig(t.TempDir()), testBundle(t, 1))
	for _, tc := range []struct {
		window uint16
		qos    byte
	}{{1, 1}, {20, 1}, {20, 2}} {
		t.Run(fmt.Sprintf("receiveMaximum=%d,qos=%d", tc.window, tc.qos), func(t *testing.T) {
			conn, err := net.Dial("tcp", tb.tcp)
			if err != nil {
				t.Fatal(err)
			}
			got := make(chan string, 1000)
			c := paho.NewClient(paho.ClientConfig{Conn: &packetLocked{Conn: conn},
				OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
					got <- string(pr.Packet.Payload)
					return true, nil
				}}})
			rm := tc.window
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if _, err := c.Connect(ctx, &paho.Connect{ClientID: fmt.Sprintf("rm-%d-%d", tc.window, tc.qos), CleanStart: true, KeepAlive: 30,
				Username: "bob", UsernameFlag: true, Password: []byte(bobPassword), PasswordFlag: true,
				Properties: &paho.ConnectProperties{ReceiveMaximum: &rm}}); err != nil {
				t.Fatal(err)
			}
			defer c.Disconnect(&paho.Disconnect{})
			if _, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "devices/alice/#", QoS: tc.qos}}}); err != nil {
				t.Fatal(err)
			}
			alice := mustV5(t, tb.tcp, "alice", alicePassword)
			const n = 300
			for i := range n {
				pctx, pcancel := context.WithTimeout(context.Background(), 5*time.Second)
				_, err := alice.Publish(pctx, &paho.Publish{Topic: "devices/alice/rm", Payload: []byte(fmt.Sprint(i)), QoS: tc.qos})
				pcancel()
				if err != nil {
					t.Fatal(err)
				}
			}
			deadline := time.After(5 * time.Second)
			for i := range n {
				select {
				case m := <-got:
					if m != fmt.Sprint(i) {
						t.Fatalf("message %d arrived as %s: out of order", i, m)
					}
				case <-deadline:
					t.Fatalf("only %d of %d messages arrived", i, n)
				}
			}
		})
	}
}
