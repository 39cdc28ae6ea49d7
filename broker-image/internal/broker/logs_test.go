package broker_test

import (
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mqtt-operator/mqtt-operator/test/secretscan"
)

// mochi logs the packet behind a protocol error at WARN: a second CONNECT on
// a live connection carried its password into the log (base64, as the JSON
// handler prints []byte), and a PUBLISH over the receive maximum its whole
// payload.
// Neither may appear in the log in any encoding; the summary that replaces
// them still says what happened.
func TestMochiLogsNoPasswordOrPayload(t *testing.T) {
	const (
		secondPassword = "second-connect-password-Zq81x"
		deniedPayload  = "denied-payload-do-not-log-4f1c9e"
	)
	cfg := testConfig(t.TempDir())
	cfg.Limits.MaxInflight = 1
	tb := startBroker(t, cfg, testBundle(t, 1))

	// bob's generated password is checked in microseconds: no bcrypt run
	// races the raw reads' deadline on a loaded machine.
	login := func(clientID string) net.Conn {
		conn, err := net.Dial("tcp", tb.tcp)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = conn.Close() })
		_, _ = conn.Write(mqttConnect(clientID, "bob", bobPassword, true))
		if ack := readPacket(t, conn); ack[0] != 0x20 || ack[3] != 0 {
			t.Fatalf("CONNECT refused: % x", ack)
		}
		return conn
	}
	conn := login("second-connect")
	_, _ = conn.Write(mqttConnect("second-connect", "alice", secondPassword, true))

	// With a receive maximum of 1, a second QoS 2 PUBLISH before the first
	// one's PUBREL is one too many: mochi disconnects the client and logs
	// the packet, payload and all.
	conn = login("over-quota")
	qos2 := func(id byte, payload string) {
		topic := "devices/bob/cmd"
		body := append([]byte{0, byte(len(topic))}, topic...)
		body = append(append(body, 0, id), payload...)
		_, _ = conn.Write(append([]byte{0x34, byte(len(body))}, body...))
	}
	qos2(1, "first")
	if p := readPacket(t, conn); p[0] != 0x50 {
		t.Fatalf("got % x, want PUBREC", p)
	}
	qos2(2, deniedPayload)

	deadline := time.Now().Add(5 * time.Second)
	for strings.Count(tb.logs.String(), `"error processing packet"`) < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("mochi did not log both refused packets:\n%s", tb.logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	logs := tb.logs.String()
	secretscan.Absent(t, "broker log", logs, map[string]string{
		"the second CONNECT's password": secondPassword,
		"the refused payload":           deniedPayload,
		"the first CONNECT's password":  bobPassword,
	})
	if !strings.Contains(logs, `"payloadBytes":`+strconv.Itoa(len(deniedPayload))) || !strings.Contains(logs, `"type":"Connect"`) {
		t.Errorf("the log does not summarise the refused packets:\n%s", logs)
	}
}
