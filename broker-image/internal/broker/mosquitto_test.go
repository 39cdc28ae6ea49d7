package broker_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Interoperability with an independent MQTT implementation: Eclipse
// mosquitto's command-line clients (Debian's mosquitto-clients; make test
// installs them on Debian). They speak MQTT 3.1.1 and 5, with and without
// TLS.

func mosquittoClients(t *testing.T) (pub, sub string) {
	t.Helper()
	pub, errPub := exec.LookPath("mosquitto_pub")
	sub, errSub := exec.LookPath("mosquitto_sub")
	if errPub != nil || errSub != nil {
		t.Skip("mosquitto_pub/mosquitto_sub not installed (apt-get install mosquitto-clients); hack/test.sh installs them on Debian")
	}
	return pub, sub
}

func hostPort(t *testing.T, addr string) (string, string) {
	t.Helper()
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return host, port
}

// startSub runs mosquitto_sub until it has received count messages.
func startSub(t *testing.T, sub string, args ...string) (*exec.Cmd, *bytes.Buffer) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	cmd := exec.CommandContext(ctx, sub, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return cmd, &out
}

func TestMosquittoClientsPublishAndSubscribe(t *testing.T) {
	pub, sub := mosquittoClients(t)
	dir := t.TempDir()
	ca := newTestCA(t)
	ca.issue(t, dir, 7, time.Now().Add(time.Hour))
	caFile := filepath.Join(dir, "ca.crt")
	writeFile(t, caFile, pemCert(ca.cert))
	tb := startBroker(t, tlsConfig(dir), testBundle(t, 1))
	host, port := hostPort(t, tb.tcp)
	_, tlsPort := hostPort(t, tb.ListenerAddress("mqtts"))

	for _, tc := range []struct {
		name      string
		transport []string
	}{
		{"MQTT 3.1.1 over TCP", []string{"-V", "mqttv311", "-p", port}},
		{"MQTT 5 over TCP", []string{"-V", "mqttv5", "-p", port}},
		{"MQTT 5 over TLS", []string{"-V", "mqttv5", "-p", tlsPort, "--cafile", caFile}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			payload := "from mosquitto: " + tc.name
			base := append([]string{"-h", host}, tc.transport...)
			cmd, out := startSub(t, sub, append(base, "-u", "bob", "-P", bobPassword, "-t", "devices/alice/#", "-q", "1", "-C", "1", "-i", "bob-"+strings.ReplaceAll(tc.name, " ", "-"))...)
			// Publish until the subscriber has its subscription and exits
			// with the message: no sleeping for a guessed set-up time.
			deadline := time.Now().Add(8 * time.Second)
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			for {
				pubOut, err := exec.Command(pub, append(base, "-u", "alice", "-P", alicePassword, "-t", "devices/alice/temp", "-q", "1", "-m", payload)...).CombinedOutput()
				if err != nil {
					t.Fatalf("mosquitto_pub failed: %v\n%s", err, pubOut)
				}
				select {
				case err := <-done:
					if err != nil || !strings.Contains(out.String(), payload) {
						t.Fatalf("mosquitto_sub: %v\n%s", err, out.String())
					}
					return
				case <-time.After(200 * time.Millisecond):
				}
				if time.Now().After(deadline) {
					t.Fatalf("mosquitto_sub received nothing:\n%s", out.String())
				}
			}
		})
	}

	t.Run("wrong password is refused", func(t *testing.T) {
		out, err := exec.Command(pub, "-h", host, "-p", port, "-u", "alice", "-P", "wrong", "-t", "devices/alice/temp", "-m", "x").CombinedOutput()
		if err == nil {
			t.Errorf("mosquitto_pub with a wrong password succeeded:\n%s", out)
		}
	})
	t.Run("a client that does not trust the CA cannot connect over TLS", func(t *testing.T) {
		other := filepath.Join(dir, "other-ca.crt")
		writeFile(t, other, pemCert(newTestCA(t).cert))
		out, err := exec.Command(pub, "-h", host, "-p", tlsPort, "--cafile", other, "-u", "alice", "-P", alicePassword, "-t", "devices/alice/temp", "-m", "x").CombinedOutput()
		if err == nil {
			t.Errorf("mosquitto_pub trusted a certificate from another CA:\n%s", out)
		}
	})
}

func pemCert(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}
