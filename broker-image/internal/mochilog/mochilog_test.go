package mochilog

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/mqtt-operator/mqtt-operator/test/secretscan"
)

// Every value mochi logs, or might log, reaches the output as a summary:
// through Logger.With, inside groups and behind a LogValuer too.
func TestClientDataNeverReachesTheOutput(t *testing.T) {
	const secret = "will-payload-or-password-7c1e"
	var out bytes.Buffer
	log := slog.New(New(slog.NewJSONHandler(&out, &slog.HandlerOptions{Level: slog.LevelDebug})))
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, Payload: []byte(secret)}
	pk.Connect.Password = []byte(secret)
	pk.Properties.CorrelationData = []byte(secret)
	pk.Properties.AuthenticationData = []byte(secret)
	will := mqtt.Will{TopicName: secret, Payload: []byte(secret)}
	cl := &mqtt.Client{ID: "device-1"}
	cl.Properties.Username = []byte(secret)

	log.With("pk", pk, "raw", []byte(secret)).Warn("with", "will", will)
	log.Debug("values", "pk", &pk, "will", &will, "client", cl, "map", map[string]string{"p": secret},
		slog.Group("nested", "bytes", []byte(secret), "valuer", valuer{secret}))
	secretscan.Absent(t, "log", out.String(), map[string]string{"the secret": secret})
	for _, want := range []string{`"type":"Connect"`, `"payloadBytes":29`, `"id":"device-1"`, `(map[string]string withheld)`, `"bytes":29`} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("the log lacks %s:\n%s", want, out.String())
		}
	}
}

type valuer struct{ s string }

func (v valuer) LogValue() slog.Value { return slog.AnyValue([]byte(v.s)) }
