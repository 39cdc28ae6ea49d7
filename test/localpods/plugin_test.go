package localpods

import (
	"context"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/rest"

	"github.com/mqtt-operator/mqtt-operator/internal/kubectlmqtt"
	"github.com/mqtt-operator/mqtt-operator/test/secretscan"
)

// The kubectl plugin against the operator and a real broker pod: status with
// live figures read through the API server's pod proxy, users with their
// permissions, a subscriber and a publisher as MQTTUsers (dialling the pod
// directly: local pods have no kubelet to port-forward through; make
// test-e2e's kind cluster does), refusals explained, and a user without RBAC
// rights told what they lack. No password is printed.
func TestKubectlPlugin(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s := startSample(ctx, t)
	env, c, ns := s.env, s.env.Client, s.ns
	alicePassword := password(ctx, t, c, ns, "alice")

	run := func(cfg *rest.Config, args ...string) (string, string, error) {
		var out, errOut syncBuffer
		err := kubectlmqtt.Run(ctx, kubectlmqtt.Env{Config: cfg, Namespace: ns, Direct: true, Out: &out, Err: &errOut}, args)
		return out.String(), errOut.String(), err
	}
	var all strings.Builder
	check := func(what string, args []string, want ...string) string {
		t.Helper()
		var out, errOut string
		var err error
		eventually(t, 20*time.Second, what, func() error {
			out, errOut, err = run(env.Config, args...)
			if err != nil {
				return err
			}
			for _, w := range want {
				if !strings.Contains(out, w) {
					return &missing{w, out}
				}
			}
			return nil
		})
		all.WriteString(out + errOut)
		return out
	}
	check("status", []string{"status"}, "telemetry-0", "True (PodsReady)", "(generation ")
	check("users -o wide", []string{"users", "-o", "wide"}, "alice", "True", "Allow PublishSubscribe devices/# (devices)")

	// A subscriber as alice, then a message published as alice.
	var subOut, subErr syncBuffer
	subDone := make(chan error, 1)
	go func() {
		subDone <- kubectlmqtt.Run(ctx, kubectlmqtt.Env{Config: env.Config, Namespace: ns, Direct: true, Out: &subOut, Err: &subErr},
			[]string{"sub", "--as", "alice", "--count", "1", "--timeout", "30s", "devices/#"})
	}()
	eventually(t, 20*time.Second, "the subscriber subscribed", func() error {
		if !strings.Contains(subErr.String(), "subscribed to devices/#") {
			return &missing{"subscribed", subErr.String()}
		}
		return nil
	})
	if _, _, err := run(env.Config, "pub", "--as", "alice", "devices/kubectl", "hello from the plugin"); err != nil {
		t.Fatal(err)
	}
	if err := <-subDone; err != nil || !strings.Contains(subOut.String(), "devices/kubectl hello from the plugin") {
		t.Fatalf("sub: %v, output %q", err, subOut.String())
	}
	all.WriteString(subOut.String() + subErr.String())

	// Refusals say why.
	if _, _, err := run(env.Config, "pub", "--as", "alice", "elsewhere/x", "no"); err == nil || !strings.Contains(err.Error(), "0x87") {
		t.Errorf("a publish the ACLs deny: %v, want a refusal with 0x87", err)
	}
	if _, _, err := run(env.Config, "pub", "--as", "nobody", "devices/x", "no"); err == nil || !strings.Contains(err.Error(), "MQTTUser nobody not found") {
		t.Errorf("an unknown user: %v", err)
	}
	// Without RBAC rights: what is missing.
	stranger := rest.CopyConfig(env.Config)
	stranger.Impersonate = rest.ImpersonationConfig{UserName: "stranger"}
	if _, _, err := run(stranger, "status"); err == nil || !strings.Contains(err.Error(), "you may not list MQTTBrokers in namespace "+ns) {
		t.Errorf("status without rights: %v", err)
	}
	secretscan.Absent(t, "the plugin's output", all.String(), map[string]string{"alice's password": alicePassword})
}

type missing struct{ want, got string }

func (m *missing) Error() string { return "no " + m.want + " in:\n" + m.got }
