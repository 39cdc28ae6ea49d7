package controllers

import (
	"context"
	"fmt"
	"sync"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	v1alpha1 "github.com/mqtt-operator/mqtt-operator/api/v1alpha1"
)

// Condition reasons of MQTTUser and TopicACL. They are stable API.
const (
	ReasonEnforced         = "Enforced"
	ReasonPending          = "Pending"
	ReasonBrokerNotFound   = "BrokerNotFound"
	ReasonSecretNotFound   = "SecretNotFound"
	ReasonSecretKeyMissing = "SecretKeyMissing"
	ReasonSecretConflict   = "SecretConflict"
	ReasonPasswordInvalid  = "PasswordInvalid"
	ReasonUsernameConflict = "UsernameConflict"
	ReasonInvalidRules     = "InvalidRules"
	ReasonUnknownUsers     = "UnknownUsers"
	ReasonAllResolved      = "AllResolved"
	ReasonBrokerTLSOff     = "BrokerTLSDisabled"
	ReasonCertificateWait  = "CertificatePending"

	// ConditionSubjectsResolved says whether every user a TopicACL names
	// exists.
	ConditionSubjectsResolved = "SubjectsResolved"
)

// enforcementState is what the broker controller reported about one user or
// ACL: whether it reported at all, whether the pods enforce the object as it
// is now, and how many pods that is.
type enforcementState struct {
	known, current bool
	readyPods      int32
	scaledToZero   bool
}

// readyCondition is the Ready condition of a user or ACL: False with the
// reason of a problem the user must fix, False while the broker pods do not
// yet enforce the latest change, True once every ready pod does.
func readyCondition(kind string, generation int64, now metav1.Time, problem *userProblem, e *enforcementState) metav1.Condition {
	c := metav1.Condition{Type: v1alpha1.ConditionReady, Status: metav1.ConditionFalse, ObservedGeneration: generation, LastTransitionTime: now}
	switch {
	case problem != nil:
		c.Reason, c.Message = problem.reason, problem.message
	case e == nil || !e.known:
		c.Reason, c.Message = ReasonPending, "waiting for the broker controller to render the auth bundle"
	case !e.current:
		c.Reason, c.Message = ReasonPending, fmt.Sprintf("waiting for the broker pods to enforce this %s's latest change", kind)
	case e.readyPods == 0 && e.scaledToZero:
		c.Status, c.Reason = metav1.ConditionTrue, ReasonScaledToZero
		c.Message = fmt.Sprintf("the broker is scaled to zero; its pods enforce this %s as soon as they start", kind)
	case e.readyPods == 0:
		c.Reason, c.Message = ReasonNoReadyPods, fmt.Sprintf("no broker pod is ready; they enforce this %s as soon as they start", kind)
	default:
		c.Status, c.Reason = metav1.ConditionTrue, ReasonEnforced
		c.Message = fmt.Sprintf("enforced by all %d ready broker pods", e.readyPods)
	}
	return c
}

// userFixable are the reasons that need a change by the user (of any of the
// three kinds); they get a Warning event, once, when the condition turns to
// them.
var userFixable = map[string]bool{
	ReasonBrokerNotFound: true, ReasonSecretNotFound: true, ReasonSecretKeyMissing: true, ReasonSecretConflict: true,
	ReasonPasswordInvalid: true, ReasonUsernameConflict: true, ReasonInvalidRules: true,
	ReasonInvalidSpec: true, ReasonAuthTooLarge: true, ReasonNotAllowed: true,
}

// transitions remembers the last Ready status and reason an event was
// recorded for, per object. Two reconciles can start from the same cached
// status (the cache lags behind the operator's own writes); the second must
// not announce the same transition again.
type transitions struct {
	mu   sync.Mutex
	last map[types.NamespacedName]announced
}

type announced struct {
	uid       types.UID // a recreated object starts afresh
	condition string
}

// first reports whether c is a transition not yet announced for obj.
func (t *transitions) first(obj client.Object, c metav1.Condition) bool {
	key, now := client.ObjectKeyFromObject(obj), announced{obj.GetUID(), string(c.Status) + "/" + c.Reason}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.last == nil {
		t.last = map[types.NamespacedName]announced{}
	}
	if t.last[key] == now {
		return false
	}
	t.last[key] = now
	return true
}

// forget drops a deleted object.
func (t *transitions) forget(key types.NamespacedName) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.last, key)
}

// recordTransition records one event when the Ready condition changes status
// or reason, never on every reconcile.
func recordTransition(ctx context.Context, rec events.EventRecorder, seen *transitions, obj client.Object, before []metav1.Condition, now metav1.Condition) {
	old := meta.FindStatusCondition(before, now.Type)
	if old != nil && old.Status == now.Status && old.Reason == now.Reason {
		return
	}
	if !seen.first(obj, now) {
		return
	}
	eventType := corev1.EventTypeNormal
	if userFixable[now.Reason] {
		eventType = corev1.EventTypeWarning
	}
	rec.Eventf(obj, nil, eventType, now.Reason, "Reconcile", "%s", now.Message)
	log.FromContext(ctx).Info("status changed", "ready", now.Status, "reason", now.Reason)
}
