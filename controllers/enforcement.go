package controllers

import (
	"sync"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/event"

	v1alpha1 "github.com/mqtt-operator/mqtt-operator/api/v1alpha1"
)

// member is what of one MQTTUser or TopicACL went into an auth bundle: its
// spec generation and, for users, the version of its password source.
type member struct {
	generation int64
	source     string
}

// brokerAuth is what every ready pod of one broker enforces.
type brokerAuth struct {
	// revision of the bundle the ready pods enforce.
	revision string
	// users and acls in that bundle, by object name.
	users, acls map[string]member
	// readyPods is how many pods enforce it; zero with scaledToZero means the
	// broker is deliberately off and the bundle waits in its Secret.
	readyPods    int32
	scaledToZero bool
}

// Enforcement is the broker controller's report, kept in memory, of which
// users and ACLs the broker pods enforce. The broker controller is the only
// writer; the user and ACL controllers read it to set their Ready condition,
// and are woken through the channels when their answer may have changed. It
// is rebuilt by the broker reconciles that follow an operator start.
type Enforcement struct {
	mu      sync.RWMutex
	brokers map[types.NamespacedName]brokerAuth
	// Users and ACLs receive an event for every MQTTUser or TopicACL whose
	// enforcement changed.
	Users, ACLs chan event.GenericEvent
}

// NewEnforcement returns an empty report.
func NewEnforcement() *Enforcement {
	return &Enforcement{
		brokers: map[types.NamespacedName]brokerAuth{},
		Users:   make(chan event.GenericEvent, 1024),
		ACLs:    make(chan event.GenericEvent, 1024),
	}
}

// set records what broker's pods now enforce and wakes the users and ACLs
// whose entry changed (added, removed or at another generation or source).
func (e *Enforcement) set(broker types.NamespacedName, now brokerAuth) {
	e.mu.Lock()
	before, known := e.brokers[broker]
	e.brokers[broker] = now
	e.mu.Unlock()
	wakeAll := !known || before.readyPods != now.readyPods || before.scaledToZero != now.scaledToZero
	for _, name := range changed(before.users, now.users, wakeAll) {
		e.Users <- event.GenericEvent{Object: &v1alpha1.MQTTUser{ObjectMeta: objectKey(broker.Namespace, name)}}
	}
	for _, name := range changed(before.acls, now.acls, wakeAll) {
		e.ACLs <- event.GenericEvent{Object: &v1alpha1.TopicACL{ObjectMeta: objectKey(broker.Namespace, name)}}
	}
}

// forget drops a deleted broker; its users and ACLs learn from the broker's
// own deletion event.
func (e *Enforcement) forget(broker types.NamespacedName) {
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.brokers, broker)
}

// get returns what broker's pods enforce; ok is false until the broker
// controller has reported on it.
func (e *Enforcement) get(broker types.NamespacedName) (brokerAuth, bool) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	a, ok := e.brokers[broker]
	return a, ok
}

func changed(before, after map[string]member, all bool) []string {
	var out []string
	for name, m := range after {
		if b, ok := before[name]; all || !ok || b != m {
			out = append(out, name)
		}
	}
	for name := range before {
		if _, ok := after[name]; !ok {
			out = append(out, name)
		}
	}
	return out
}

func objectKey(namespace, name string) metav1.ObjectMeta {
	return metav1.ObjectMeta{Namespace: namespace, Name: name}
}
