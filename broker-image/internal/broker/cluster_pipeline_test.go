package broker_test

import (
	"fmt"
	"net"
	"testing"
	"time"
)

// rawQoS1 encodes an MQTT 3.1.1 QoS 1 PUBLISH (dup sets the DUP flag).
func rawQoS1(id uint16, topic, payload string, dup bool) []byte {
	body := append([]byte{0, byte(len(topic))}, topic...)
	body = append(body, byte(id>>8), byte(id))
	body = append(body, payload...)
	head := byte(0x32)
	if dup {
		head |= 0x08
	}
	return append([]byte{head, byte(len(body))}, body...)
}

// A QoS 1 message for subscribers on another pod is acknowledged only once
// that pod took it, but the publisher is not held back meanwhile: its next
// packets are handled (a PINGREQ is answered, this pod's subscribers get
// the messages), and the PUBACKs come, in order, when the other pod
// answers, including that of a message only this pod had subscribers for
// and that of a message sent twice (once).
func TestClusterQoS1PublisherIsNotHeldBackByTheOtherPods(t *testing.T) {
	pods := startCluster(t, 2, clusterOpts{})
	remote := mustV5(t, pods[1].tcp, "alice", alicePassword)
	remote.subscribe(t, "pipe/#", 1)
	local := mustV5(t, pods[0].tcp, "bob", bobPassword)
	local.subscribe(t, "pipe/#", 1)
	local.subscribe(t, "pipelocal/#", 1)

	conn, err := net.Dial("tcp", pods[0].tcp)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, _ = conn.Write(mqttConnect("pipelined", "alice", alicePassword, true))
	if ack := readPacket(t, conn); ack[0] != 0x20 || ack[3] != 0 {
		t.Fatalf("CONNACK % x", ack)
	}

	// The other pod has the interest but takes nothing for now.
	pods[1].Cluster().HoldInbound(true)
	released := false
	defer func() {
		if !released {
			pods[1].Cluster().HoldInbound(false)
		}
	}()
	var burst []byte
	const n = 10
	for i := 1; i <= n; i++ {
		burst = append(burst, rawQoS1(uint16(i), "pipe/x", fmt.Sprintf("m%d", i), false)...)
	}
	burst = append(burst, rawQoS1(n+1, "pipelocal/x", "local only", false)...)
	burst = append(burst, rawQoS1(n+2, "pipe/x", "twice", false)...)
	burst = append(burst, rawQoS1(n+2, "pipe/x", "twice", true)...)
	burst = append(burst, 0xC0, 0) // PINGREQ
	start := time.Now()
	_, _ = conn.Write(burst)
	if p := readPacket(t, conn); p[0] != 0xD0 {
		t.Fatalf("first packet back % x; want PINGRESP, before any PUBACK (the other pod took nothing yet)", p)
	}
	if waited := time.Since(start); waited > 500*time.Millisecond {
		t.Fatalf("the PINGREQ waited %v behind the QoS 1 messages", waited)
	}
	pods[1].Cluster().HoldInbound(false)
	released = true

	for i := 1; i <= n+2; i++ {
		if ack := readPacket(t, conn); ack[0] != 0x40 || ack[2] != 0 || ack[3] != byte(i) {
			t.Fatalf("acknowledgement %d: % x; want the PUBACK of packet %d (in order)", i, ack, i)
		}
	}
	expectAlive(t, conn, "after the PUBACKs") // and no second PUBACK for the copy sent twice
	for i := 1; i <= n; i++ {
		local.expect(t, fmt.Sprintf("m%d", i))
		remote.expect(t, fmt.Sprintf("m%d", i))
	}
	local.expect(t, "local only")
	local.expect(t, "twice")
	remote.expect(t, "twice")
	marker := append([]byte{0, 6}, "pipe/x"...)
	marker = append(marker, "marker"...)
	_, _ = conn.Write(append([]byte{0x30, byte(len(marker))}, marker...))
	remote.expectNoneBefore(t, "twice", "marker")
	local.expectNoneBefore(t, "twice", "marker")
}
