package broker_test

import (
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

// The fuzz targets send arbitrary bytes from a real socket into a real
// broker, the way a hostile or broken client would. Whatever arrives must
// close at most that one connection: the process must not crash (a panic on
// any broker goroutine fails the target), no panic may even be recovered on a
// connection (that would be a decoder bug the guard only contained), and the
// broker must keep serving.
//
//	go test ./broker-image/internal/broker -run '^$' -fuzz FuzzRawStream -fuzztime 10m
//	go test ./broker-image/internal/broker -run '^$' -fuzz FuzzAfterConnect -fuzztime 10m
//
// Without -fuzz, `go test` runs every seed (in code and in testdata/fuzz).

// fuzzBroker starts one broker per fuzz process.
func fuzzBroker(f *testing.F) *testBroker {
	cfg := testConfig(f.TempDir())
	cfg.Limits.MaxConnections = 100000
	cfg.Limits.MaxPacketSize = 4096
	tb := startBroker(f, cfg, testBundle(f, 1))
	if os.Getenv("BROKER_TEST_LOGS") == "" {
		tb.logs.discardLogs()
	}
	return tb
}

// exchange writes data on a fresh connection, half-closes it so the broker
// sees the end of the stream, and reads until the broker closes its side.
func exchange(t *testing.T, addr string, data []byte) {
	conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatalf("the broker stopped accepting connections: %v", err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Write(data); err != nil {
		return // the broker closed early, which is allowed
	}
	_ = conn.(*net.TCPConn).CloseWrite()
	if _, err := io.Copy(io.Discard, conn); err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("the broker kept a connection open 5s after its client finished sending")
		}
	}
}

func checkHealthy(t *testing.T, tb *testBroker, panicsBefore uint64) {
	if p := tb.Stats().Panics; p != panicsBefore {
		t.Fatalf("a panic was recovered on a connection (see the log): the decoder or a hook has a bug")
	}
	if err := tb.Ready(); err != nil {
		t.Fatalf("broker not ready after the input: %v", err)
	}
}

func FuzzRawStream(f *testing.F) {
	for _, seed := range fuzzSeeds() {
		f.Add(seed)
	}
	tb := fuzzBroker(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		before := tb.Stats().Panics
		exchange(t, tb.tcp, data)
		checkHealthy(t, tb, before)
	})
}

// FuzzAfterConnect spends its effort past authentication, where SUBSCRIBE,
// PUBLISH, the QoS 2 flow, properties and the ACL hook are reached.
func FuzzAfterConnect(f *testing.F) {
	for _, seed := range fuzzSeeds() {
		f.Add(seed)
	}
	tb := fuzzBroker(f)
	connect := mqttConnect("fuzz-client", "bob", bobPassword, true)
	f.Fuzz(func(t *testing.T, data []byte) {
		before := tb.Stats().Panics
		exchange(t, tb.tcp, append(append([]byte{}, connect...), data...))
		checkHealthy(t, tb, before)
	})
}

// fuzzSeeds are well-formed packets (and a few near misses) that start the
// fuzzer inside the interesting parts of the protocol.
func fuzzSeeds() [][]byte {
	str := func(s string) []byte { return append([]byte{byte(len(s) >> 8), byte(len(s))}, s...) }
	subscribe := append([]byte{0x82, byte(2 + 2 + len("devices/+/status") + 1), 0, 1}, append(str("devices/+/status"), 1)...)
	publish := func(flags byte, topic string, id bool, payload string) []byte {
		body := str(topic)
		if id {
			body = append(body, 0, 7)
		}
		body = append(body, payload...)
		return append([]byte{0x30 | flags, byte(len(body))}, body...)
	}
	v5connect := append([]byte{0x10, 0}, append(str("MQTT"), 5, 0x02, 0, 30, 5, 0x11, 0, 0, 0, 10)...)
	v5connect = append(v5connect, str("v5")...)
	v5connect[1] = byte(len(v5connect) - 2)
	return [][]byte{
		{},
		mqttConnect("seed", "bob", bobPassword, true),
		mqttConnect("seed", "alice", "wrong", false),
		v5connect,
		subscribe,
		publish(0x00, "devices/bob/temp", false, "21.5"),
		publish(0x02, "devices/bob/temp", true, "qos1"),
		publish(0x04, "devices/bob/temp", true, "qos2"),
		publish(0x01, "devices/bob/status", false, "retained"),
		{0x62, 0x02, 0, 7},                   // PUBREL
		{0xa2, 0x05, 0, 2, 0, 1, '#'},        // UNSUBSCRIBE
		{0xc0, 0x00},                         // PINGREQ
		{0xe0, 0x00},                         // DISCONNECT
		{0x30, 0xff, 0xff, 0xff, 0xff, 0x7f}, // remaining length longer than 4 bytes
		{0x30, 0xff, 0xff, 0xff, 0x7f},       // 256 MiB declared
		{0x00, 0x00},                         // reserved packet type
		{0x82, 0x03, 0, 1, 0},                // SUBSCRIBE without a filter
	}
}
