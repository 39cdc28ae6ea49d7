package controllers

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	v1alpha1 "github.com/mqtt-operator/mqtt-operator/api/v1alpha1"
	"github.com/mqtt-operator/mqtt-operator/internal/authbundle"
)

// TopicACLReconciler checks a TopicACL against its broker and users and
// reports whether the broker pods enforce it. The broker controller puts it
// in the auth bundle.
type TopicACLReconciler struct {
	Client      client.Client
	Recorder    events.EventRecorder
	Enforcement *Enforcement
	Now         func() metav1.Time
	seen        transitions
}

// +kubebuilder:rbac:groups=broker.mqtt-operator.io,resources=topicacls/status,verbs=patch

// Reconcile writes the ACL's status.
func (r *TopicACLReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	acl := &v1alpha1.TopicACL{}
	if err := r.Client.Get(ctx, req.NamespacedName, acl); err != nil || !acl.DeletionTimestamp.IsZero() {
		if apierrors.IsNotFound(err) {
			r.seen.forget(req.NamespacedName)
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	before := acl.DeepCopy()
	problem, unknown, enforced, err := r.observe(ctx, acl)
	if err != nil {
		return ctrl.Result{}, err
	}
	now := metav1.Now()
	if r.Now != nil {
		now = r.Now()
	}
	acl.Status.ObservedGeneration = acl.Generation
	acl.Status.UnknownUsers = unknown
	ready := readyCondition("ACL", acl.Generation, now, problem, enforced)
	if ready.Status == metav1.ConditionTrue && len(unknown) > 0 {
		// Not an error (GitOps may apply an ACL before its users), but what
		// Argo CD and kubectl describe show should say it.
		ready.Message += fmt.Sprintf("; %d named user(s) do not exist yet (see SubjectsResolved)", len(unknown))
	}
	meta.SetStatusCondition(&acl.Status.Conditions, ready)
	resolved := metav1.Condition{Type: ConditionSubjectsResolved, Status: metav1.ConditionTrue, Reason: ReasonAllResolved,
		Message: "every user named in subjects exists", ObservedGeneration: acl.Generation, LastTransitionTime: now}
	if len(unknown) > 0 {
		resolved.Status, resolved.Reason = metav1.ConditionFalse, ReasonUnknownUsers
		resolved.Message = fmt.Sprintf("no MQTTUser of broker %s has the username %s; the rules apply to them once they exist",
			acl.Spec.BrokerRef.Name, strings.Join(unknown, ", "))
	}
	meta.SetStatusCondition(&acl.Status.Conditions, resolved)
	if equality.Semantic.DeepEqual(before.Status, acl.Status) {
		return ctrl.Result{}, nil
	}
	if err := r.Client.Status().Patch(ctx, acl, client.MergeFrom(before)); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	recordTransition(ctx, r.Recorder, &r.seen, acl, before.Status.Conditions, ready)
	return ctrl.Result{}, nil
}

// observe checks the ACL as the broker will, lists the users it names that
// do not exist, and reads whether the pods enforce its current generation.
func (r *TopicACLReconciler) observe(ctx context.Context, acl *v1alpha1.TopicACL) (*userProblem, []string, *enforcementState, error) {
	broker := &v1alpha1.MQTTBroker{}
	err := r.Client.Get(ctx, client.ObjectKey{Namespace: acl.Namespace, Name: acl.Spec.BrokerRef.Name}, broker)
	if apierrors.IsNotFound(err) {
		return &userProblem{ReasonBrokerNotFound, fmt.Sprintf("MQTTBroker %q does not exist in namespace %s", acl.Spec.BrokerRef.Name, acl.Namespace)}, nil, nil, nil
	}
	if err != nil {
		return nil, nil, nil, fmt.Errorf("reading MQTTBroker %s: %w", acl.Spec.BrokerRef.Name, err)
	}
	users, err := usersOf(ctx, r.Client, acl.Namespace, broker.Name)
	if err != nil {
		return nil, nil, nil, err
	}
	owners, _ := authbundle.Owners(users)
	unknown := authbundle.UnknownUsers(acl, owners)
	if _, err := authbundle.ConvertACL(acl); err != nil {
		return &userProblem{ReasonInvalidRules, err.Error() + "; the broker pods keep enforcing the other ACLs"}, unknown, nil, nil
	}
	auth, known := r.Enforcement.get(types.NamespacedName{Namespace: acl.Namespace, Name: broker.Name})
	got, in := auth.acls[acl.Name]
	return nil, unknown, &enforcementState{known: known, current: in && got.generation == acl.Generation,
		readyPods: auth.readyPods, scaledToZero: auth.scaledToZero}, nil
}

// SetupWithManager registers the reconciler.
func (r *TopicACLReconciler) SetupWithManager(mgr ctrl.Manager, concurrency int) error {
	if r.Recorder == nil || r.Enforcement == nil {
		return errors.New("TopicACLReconciler needs an event recorder and an enforcement report")
	}
	return ctrl.NewControllerManagedBy(mgr).
		For(&v1alpha1.TopicACL{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Watches(&v1alpha1.MQTTBroker{}, handler.EnqueueRequestsFromMapFunc(r.aclsOfBroker),
			builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		// A user appearing, going or changing its username resolves subjects.
		Watches(&v1alpha1.MQTTUser{}, handler.EnqueueRequestsFromMapFunc(r.aclsOfUsersBroker),
			builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		WatchesRawSource(source.Channel(r.Enforcement.ACLs, &handler.EnqueueRequestForObject{})).
		Named("topicacl").
		WithOptions(controller.Options{MaxConcurrentReconciles: max(concurrency, 1)}).
		Complete(r)
}

func (r *TopicACLReconciler) requests(ctx context.Context, namespace, broker string) []reconcile.Request {
	acls, err := aclsOf(ctx, r.Client, namespace, broker)
	if err != nil {
		log.FromContext(ctx).Error(err, "finding the ACLs of a broker", "broker", broker)
		return nil
	}
	out := make([]reconcile.Request, 0, len(acls))
	for i := range acls {
		out = append(out, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&acls[i])})
	}
	return out
}

func (r *TopicACLReconciler) aclsOfBroker(ctx context.Context, o client.Object) []reconcile.Request {
	return r.requests(ctx, o.GetNamespace(), o.GetName())
}

func (r *TopicACLReconciler) aclsOfUsersBroker(ctx context.Context, o client.Object) []reconcile.Request {
	return r.requests(ctx, o.GetNamespace(), o.(*v1alpha1.MQTTUser).Spec.BrokerRef.Name)
}
