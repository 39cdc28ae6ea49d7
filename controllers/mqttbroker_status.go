package controllers

import (
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha1 "github.com/mqtt-operator/mqtt-operator/api/v1alpha1"
	"github.com/mqtt-operator/mqtt-operator/internal/resources"
)

// Condition reasons of MQTTBroker. They are stable API: alerts and GitOps
// health checks may match on them.
const (
	ReasonCreating     = "Creating"
	ReasonRollingOut   = "RollingOut"
	ReasonScaling      = "Scaling"
	ReasonNoReadyPods  = "NoReadyPods"
	ReasonPodsReady    = "PodsReady"
	ReasonScaledToZero = "ScaledToZero"
	ReasonUpToDate     = "UpToDate"
	ReasonInvalidSpec  = "InvalidSpec"
	// ReasonNotAllowed: the spec asks for an image, priority class or
	// toleration the operator's allow-list does not have.
	ReasonNotAllowed = "NotAllowed"

	// Condition types that kstatus (Flux, kpt, cli-utils) reads: present and
	// True only while the broker is on its way (Reconciling) or stuck on
	// something only the user can fix (Stalled).
	ConditionReconciling = "Reconciling"
	ConditionStalled     = "Stalled"
)

// specFailure is a problem with the MQTTBroker spec that retrying cannot fix.
type specFailure struct {
	reason, message string
}

// computeStatus derives the broker's status from what was observed. It is pure:
// the caller passes the previous status so condition transition times survive.
// sts is nil when the StatefulSet does not exist (yet); failure is non-nil when
// the spec could not be applied.
func computeStatus(b *v1alpha1.MQTTBroker, sts *appsv1.StatefulSet, failure *specFailure, now metav1.Time) v1alpha1.MQTTBrokerStatus {
	st := *b.Status.DeepCopy()
	st.ObservedGeneration = b.Generation
	st.Selector = resources.Selector(b)
	st.Endpoints = resources.Endpoints(b)
	set := func(t string, ok bool, reason, msg string) {
		status := metav1.ConditionFalse
		if ok {
			status = metav1.ConditionTrue
		}
		c := metav1.Condition{Type: t, Status: status, Reason: reason, Message: msg, ObservedGeneration: b.Generation, LastTransitionTime: now}
		meta.SetStatusCondition(&st.Conditions, c)
	}
	kstatus := func(reconciling, stalled bool, reason, msg string) {
		for t, on := range map[string]bool{ConditionReconciling: reconciling, ConditionStalled: stalled} {
			if on {
				set(t, true, reason, msg)
			} else {
				meta.RemoveStatusCondition(&st.Conditions, t)
			}
		}
	}

	if failure != nil {
		set(v1alpha1.ConditionReady, false, failure.reason, failure.message)
		set(v1alpha1.ConditionProgressing, false, failure.reason, "the operator cannot apply this spec; the last applied broker keeps running")
		if meta.FindStatusCondition(st.Conditions, v1alpha1.ConditionAvailable) == nil {
			set(v1alpha1.ConditionAvailable, false, failure.reason, "no broker was created")
		}
		kstatus(false, true, failure.reason, failure.message)
		return st
	}

	desired := resources.Replicas(b)
	if sts == nil {
		st.Replicas, st.ReadyReplicas = 0, 0
		set(v1alpha1.ConditionAvailable, false, ReasonCreating, "the broker StatefulSet is being created")
		set(v1alpha1.ConditionProgressing, true, ReasonCreating, "the broker StatefulSet is being created")
		set(v1alpha1.ConditionReady, false, ReasonCreating, "the broker StatefulSet is being created")
		kstatus(true, false, ReasonCreating, "the broker StatefulSet is being created")
		return st
	}
	st.Replicas, st.ReadyReplicas = sts.Status.Replicas, sts.Status.ReadyReplicas

	progressReason, progressMsg := "", ""
	switch {
	case sts.Status.ObservedGeneration < sts.Generation ||
		(sts.Status.UpdateRevision != "" && sts.Status.CurrentRevision != sts.Status.UpdateRevision) ||
		sts.Status.UpdatedReplicas < desired:
		progressReason = ReasonRollingOut
		progressMsg = fmt.Sprintf("%d of %d pods run the current spec", sts.Status.UpdatedReplicas, desired)
	case sts.Status.Replicas != desired || sts.Status.ReadyReplicas != desired:
		progressReason = ReasonScaling
		progressMsg = fmt.Sprintf("%d of %d pods ready", sts.Status.ReadyReplicas, desired)
	}
	if progressReason != "" {
		set(v1alpha1.ConditionProgressing, true, progressReason, progressMsg)
	} else {
		set(v1alpha1.ConditionProgressing, false, ReasonUpToDate, fmt.Sprintf("all %d pods run the current spec", desired))
	}

	switch {
	case desired == 0:
		set(v1alpha1.ConditionAvailable, true, ReasonScaledToZero, "replicas is 0: the broker is stopped and its storage kept")
	case sts.Status.ReadyReplicas > 0:
		set(v1alpha1.ConditionAvailable, true, ReasonPodsReady, fmt.Sprintf("%d of %d pods ready", sts.Status.ReadyReplicas, desired))
	default:
		set(v1alpha1.ConditionAvailable, false, ReasonNoReadyPods, fmt.Sprintf("0 of %d pods ready", desired))
	}

	available := meta.IsStatusConditionTrue(st.Conditions, v1alpha1.ConditionAvailable)
	switch {
	case available && progressReason == "":
		ready := meta.FindStatusCondition(st.Conditions, v1alpha1.ConditionAvailable)
		set(v1alpha1.ConditionReady, true, ready.Reason, ready.Message)
		kstatus(false, false, "", "")
	case progressReason != "":
		set(v1alpha1.ConditionReady, false, progressReason, progressMsg)
		kstatus(true, false, progressReason, progressMsg)
	default:
		set(v1alpha1.ConditionReady, false, ReasonNoReadyPods, fmt.Sprintf("0 of %d pods ready", desired))
		kstatus(true, false, ReasonNoReadyPods, fmt.Sprintf("0 of %d pods ready", desired))
	}
	return st
}

// Reasons of the AuthSynced condition and of an auth failure.
const (
	ReasonAuthInSync   = "InSync"
	ReasonPushFailed   = "PushFailed"
	ReasonAuthTooLarge = "AuthBundleTooLarge"
)

// setAuthStatus reports which auth bundle the ready pods enforce. auth is
// nil when this reconcile did not get that far; the last report stays.
func setAuthStatus(st *v1alpha1.MQTTBrokerStatus, generation int64, auth *v1alpha1.AuthStatus, pushErr error, now metav1.Time) {
	if auth == nil {
		return
	}
	st.Auth = auth
	c := metav1.Condition{Type: v1alpha1.ConditionAuthSynced, ObservedGeneration: generation, LastTransitionTime: now}
	switch {
	case pushErr != nil:
		c.Status, c.Reason = metav1.ConditionFalse, ReasonPushFailed
		c.Message = fmt.Sprintf("%d of %d ready pods enforce revision %s; the others load it from their mounted Secret: %v",
			auth.PodsInSync, auth.ReadyPods, auth.Revision, pushErr)
	case auth.ReadyPods == 0:
		c.Status, c.Reason = metav1.ConditionFalse, ReasonNoReadyPods
		c.Message = fmt.Sprintf("no broker pod is ready; pods load revision %s (%d users, %d ACLs) when they start", auth.Revision, auth.Users, auth.ACLs)
	default:
		c.Status, c.Reason = metav1.ConditionTrue, ReasonAuthInSync
		c.Message = fmt.Sprintf("all %d ready pods enforce revision %s (%d users, %d ACLs)", auth.ReadyPods, auth.Revision, auth.Users, auth.ACLs)
	}
	meta.SetStatusCondition(&st.Conditions, c)
}
