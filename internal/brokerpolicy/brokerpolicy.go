// Package brokerpolicy is the operator-wide allow-list for the parts of an
// MQTTBroker that reach past its tenant: the image its pods run, the
// tainted nodes they may land on (tolerations) and the priority they take
// from other workloads. Whoever may create an MQTTBroker would otherwise
// run any image on any node, ahead of anything else, under the operator's
// name. Deny by default: only what the platform team lists is allowed.
package brokerpolicy

import (
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"

	v1alpha1 "github.com/mqtt-operator/mqtt-operator/api/v1alpha1"
)

// Any, as an entry of a list, allows everything of its kind.
const Any = "*"

// Policy lists what MQTTBrokers may ask for. The zero Policy allows only
// the operator's own broker image, no priority class and no toleration.
type Policy struct {
	// Images a broker's spec.image may name. An entry ending in '*' is a
	// prefix ("registry.example.com/mqtt/*"); any other entry is an image,
	// or a repository whose every tag and digest is allowed. Empty: the
	// repository of the operator's default broker image. A broker without
	// spec.image runs the default image, always allowed.
	Images []string
	// PriorityClasses a broker's pods may use; "*" allows any.
	PriorityClasses []string
	// TolerationKeys are the taint keys a broker's pods may tolerate; "*"
	// allows any, including a toleration without a key (which tolerates
	// every taint).
	TolerationKeys []string
}

// ParseList splits a comma-separated flag value, dropping blanks.
func ParseList(s string) []string {
	var out []string
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
}

// Check returns why b's spec is not allowed, or "" when it is. defaultImage
// is the operator's broker image. The message names the field and value
// and the flag that would allow it, for the tenant and the platform team.
func (p Policy) Check(b *v1alpha1.MQTTBroker, defaultImage string) string {
	if img := b.Spec.Image; img != "" && img != defaultImage && !p.imageAllowed(img, defaultImage) {
		return fmt.Sprintf("spec.image %q is not in the operator's allowed broker images (%s); use one of them, or ask the platform team to add it (--allowed-broker-images)",
			img, strings.Join(p.images(defaultImage), ", "))
	}
	if pc := b.Spec.Pod.PriorityClassName; pc != "" && !allowed(p.PriorityClasses, pc) {
		return fmt.Sprintf("spec.pod.priorityClassName %q is not allowed by the operator (allowed: %s); remove it, or ask the platform team to allow it (--allowed-priority-classes)",
			pc, listed(p.PriorityClasses))
	}
	for _, t := range b.Spec.Pod.Tolerations {
		if !p.tolerationAllowed(t) {
			key := t.Key
			if key == "" {
				key = "(every taint)"
			}
			return fmt.Sprintf("spec.pod.tolerations: tolerating taint key %s is not allowed by the operator (allowed keys: %s); remove it, or ask the platform team to allow it (--allowed-toleration-keys)",
				key, listed(p.TolerationKeys))
		}
	}
	return ""
}

func (p Policy) images(defaultImage string) []string {
	if len(p.Images) > 0 {
		return p.Images
	}
	return []string{Repository(defaultImage)}
}

func (p Policy) imageAllowed(image, defaultImage string) bool {
	for _, pattern := range p.images(defaultImage) {
		if prefix, ok := strings.CutSuffix(pattern, "*"); ok {
			if strings.HasPrefix(image, prefix) {
				return true
			}
		} else if image == pattern || Repository(image) == pattern {
			return true
		}
	}
	return false
}

func (p Policy) tolerationAllowed(t corev1.Toleration) bool {
	if slices.Contains(p.TolerationKeys, Any) {
		return true
	}
	return t.Key != "" && slices.Contains(p.TolerationKeys, t.Key)
}

func allowed(list []string, v string) bool {
	return slices.Contains(list, Any) || slices.Contains(list, v)
}

func listed(list []string) string {
	if len(list) == 0 {
		return "none"
	}
	return strings.Join(list, ", ")
}

// Repository is an image reference without its tag and digest:
// "registry:5000/team/broker:1.2@sha256:…" is "registry:5000/team/broker".
func Repository(image string) string {
	if i := strings.Index(image, "@"); i >= 0 {
		image = image[:i]
	}
	if i := strings.LastIndex(image, ":"); i > strings.LastIndex(image, "/") {
		image = image[:i]
	}
	return image
}
