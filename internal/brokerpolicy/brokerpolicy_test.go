package brokerpolicy

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	v1alpha1 "github.com/mqtt-operator/mqtt-operator/api/v1alpha1"
)

const defaultImage = "mqtt-operator/broker:0.1.0"

func broker(mutate func(*v1alpha1.MQTTBroker)) *v1alpha1.MQTTBroker {
	b := &v1alpha1.MQTTBroker{}
	mutate(b)
	return b
}

func TestCheck(t *testing.T) {
	withImage := func(img string) *v1alpha1.MQTTBroker {
		return broker(func(b *v1alpha1.MQTTBroker) { b.Spec.Image = img })
	}
	withPriority := func(pc string) *v1alpha1.MQTTBroker {
		return broker(func(b *v1alpha1.MQTTBroker) { b.Spec.Pod.PriorityClassName = pc })
	}
	withToleration := func(key string) *v1alpha1.MQTTBroker {
		return broker(func(b *v1alpha1.MQTTBroker) {
			b.Spec.Pod.Tolerations = []corev1.Toleration{{Key: key, Operator: corev1.TolerationOpExists}}
		})
	}
	company := Policy{Images: []string{"registry.example.com/mqtt/*", "docker.io/eclipse-mosquitto"},
		PriorityClasses: []string{"mqtt-high"}, TolerationKeys: []string{"dedicated"}}
	for _, c := range []struct {
		name   string
		policy Policy
		broker *v1alpha1.MQTTBroker
		denied string // a part of the message; "" when allowed
	}{
		{"no overrides", Policy{}, withImage(""), ""},
		{"the default image spelled out", Policy{}, withImage(defaultImage), ""},
		{"another tag of the default repository", Policy{}, withImage("mqtt-operator/broker:0.2.0"), ""},
		{"a digest of the default repository", Policy{}, withImage("mqtt-operator/broker@sha256:0123"), ""},
		{"any other image", Policy{}, withImage("attacker/miner:1"), `spec.image "attacker/miner:1"`},
		{"a repository that only starts like the default", Policy{}, withImage("mqtt-operator/broker-evil:1"), "allowed broker images (mqtt-operator/broker)"},
		{"a prefix entry", company, withImage("registry.example.com/mqtt/broker:2"), ""},
		{"outside the prefix", company, withImage("registry.example.com/other/broker:2"), "spec.image"},
		{"a repository entry", company, withImage("docker.io/eclipse-mosquitto:2.0"), ""},
		{"the default image under a listed policy", company, withImage(defaultImage), ""},
		{"a priority class by default", Policy{}, withPriority("system-node-critical"), `priorityClassName "system-node-critical"`},
		{"a listed priority class", company, withPriority("mqtt-high"), ""},
		{"an unlisted priority class", company, withPriority("system-cluster-critical"), "allowed: mqtt-high"},
		{"any priority class", Policy{PriorityClasses: []string{Any}}, withPriority("anything"), ""},
		{"a toleration by default", Policy{}, withToleration("dedicated"), "allowed keys: none"},
		{"a listed toleration key", company, withToleration("dedicated"), ""},
		{"an unlisted key", company, withToleration("node-role.kubernetes.io/control-plane"), "node-role.kubernetes.io/control-plane"},
		{"tolerating every taint", company, withToleration(""), "(every taint)"},
		{"any toleration", Policy{TolerationKeys: []string{Any}}, withToleration(""), ""},
	} {
		got := c.policy.Check(c.broker, defaultImage)
		if c.denied == "" && got != "" {
			t.Errorf("%s: denied: %s", c.name, got)
		}
		if c.denied != "" && !strings.Contains(got, c.denied) {
			t.Errorf("%s: got %q, want a denial mentioning %q", c.name, got, c.denied)
		}
	}
}

func TestRepository(t *testing.T) {
	for in, want := range map[string]string{
		"broker":                             "broker",
		"broker:1":                           "broker",
		"registry:5000/team/broker":          "registry:5000/team/broker",
		"registry:5000/team/broker:1.2":      "registry:5000/team/broker",
		"registry:5000/team/broker@sha256:a": "registry:5000/team/broker",
		"team/broker:1@sha256:a":             "team/broker",
	} {
		if got := Repository(in); got != want {
			t.Errorf("Repository(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestParseList(t *testing.T) {
	if got := ParseList(" a, ,b ,"); strings.Join(got, "|") != "a|b" {
		t.Errorf("ParseList = %q", got)
	}
	if got := ParseList(""); got != nil {
		t.Errorf("ParseList(\"\") = %q", got)
	}
}
