package broker_test

import (
	"context"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

func TestClusterCrossPodDeliveryWithProperties(t *testing.T) {
	pods := startCluster(t, 3, clusterOpts{})
	sub1 := mustV5(t, pods[1].tcp, "alice", alicePassword)
	sub2 := mustV5(t, pods[2].tcp, "alice", alicePassword)
	sub1.subscribe(t, "x/+/c", 2)
	sub2.subscribe(t, "x/#", 2)
	pub := mustV5(t, pods[0].tcp, "alice", alicePassword)
	for qos := byte(0); qos <= 2; qos++ {
		expiry := uint32(60)
		format := byte(1)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := pub.Publish(ctx, &paho.Publish{Topic: "x/b/c", QoS: qos, Payload: []byte{'q', '0' + qos}, Properties: &paho.PublishProperties{
			ContentType: "text/plain", ResponseTopic: "reply/here", CorrelationData: []byte{0, 1, 2, 0xff},
			MessageExpiry: &expiry, PayloadFormat: &format,
			User: paho.UserProperties{{Key: "k", Value: "v1"}, {Key: "k", Value: "v2"}, {Key: "weird: key\n", Value: "ü"}},
		}})
		cancel()
		if err != nil {
			t.Fatalf("QoS %d publish: %v", qos, err)
		}
		for _, s := range []*v5{sub1, sub2} {
			m := s.expect(t, string([]byte{'q', '0' + qos}))
			p := m.Properties
			if m.QoS != qos || p == nil || p.ContentType != "text/plain" || p.ResponseTopic != "reply/here" ||
				string(p.CorrelationData) != "\x00\x01\x02\xff" || p.PayloadFormat == nil || *p.PayloadFormat != 1 ||
				p.MessageExpiry == nil || *p.MessageExpiry > 60 || *p.MessageExpiry < 58 {
				t.Fatalf("QoS %d: got QoS %d, properties %+v", qos, m.QoS, p)
			}
			if len(p.User) != 3 || p.User[0] != (paho.UserProperty{Key: "k", Value: "v1"}) || p.User[1].Value != "v2" ||
				p.User[2] != (paho.UserProperty{Key: "weird: key\n", Value: "ü"}) {
				t.Fatalf("QoS %d: user properties %+v", qos, p.User)
			}
		}
	}
	// And MQTT 3.1.1 on both ends.
	got := make(chan string, 10)
	v3sub, err := connectV3("tcp://"+pods[2].tcp, "alice", alicePassword, "v3-sub")
	if err != nil {
		t.Fatal(err)
	}
	defer v3sub.Disconnect(0)
	if tok := v3sub.Subscribe("v3/t", 1, func(_ pahov3Client, m pahov3Message) { got <- string(m.Payload()) }); !tok.WaitTimeout(3*time.Second) || tok.Error() != nil {
		t.Fatal("v3 subscribe failed")
	}
	v3pub, err := connectV3("tcp://"+pods[1].tcp, "alice", alicePassword, "v3-pub")
	if err != nil {
		t.Fatal(err)
	}
	defer v3pub.Disconnect(0)
	if tok := v3pub.Publish("v3/t", 1, false, "hello 3.1.1"); !tok.WaitTimeout(3*time.Second) || tok.Error() != nil {
		t.Fatal("v3 publish failed")
	}
	select {
	case m := <-got:
		if m != "hello 3.1.1" {
			t.Fatalf("got %q", m)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("3.1.1 message not delivered across pods")
	}
}
