package cluster

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

// nats-server logs a removed route's URL with its password on every
// scale-in; nothing of the password reaches the broker's log.
func TestNatsLogRedactsThePassword(t *testing.T) {
	var buf bytes.Buffer
	password := "p@ss/word:0123456789"
	g := newNatsLog(slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})), password)
	g.Noticef("Removed route %v", "nats-route://cluster:p%40ss%2Fword:0123456789@10.0.0.1:6222")
	g.Warnf("route error with %s", password)
	g.Errorf("url nats-route://user:other-secret@host:1")
	out := buf.String()
	for _, secret := range []string{password, "p%40ss%2Fword", "0123456789", "other-secret"} {
		if strings.Contains(out, secret) {
			t.Fatalf("%q in the log:\n%s", secret, out)
		}
	}
	if !strings.Contains(out, "Removed route nats-route://[REDACTED]@10.0.0.1:6222") {
		t.Fatalf("the log lost what it was about:\n%s", out)
	}
}
