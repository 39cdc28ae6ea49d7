// Package controllers holds the reconcilers of the broker.mqtt-operator.io API.
package controllers

import (
	"context"
	"errors"
	"fmt"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	v1alpha1 "github.com/mqtt-operator/mqtt-operator/api/v1alpha1"
	"github.com/mqtt-operator/mqtt-operator/internal/brokerpolicy"
	"github.com/mqtt-operator/mqtt-operator/internal/resources"
)

// MQTTBrokerReconciler turns an MQTTBroker into the objects that run it, and
// its MQTTUsers and TopicACLs into the auth bundle its pods enforce. It is
// the single writer of everything derived from a broker.
type MQTTBrokerReconciler struct {
	Client client.Client
	// APIReader reads past the cache, for the rare object the cache cannot
	// have seen yet.
	APIReader client.Reader
	Recorder  events.EventRecorder
	Options   resources.Options
	// Policy is the operator's allow-list for images, priority classes and
	// tolerations; the zero Policy allows only the default image.
	Policy      brokerpolicy.Policy
	Enforcement *Enforcement
	// Now is the clock for condition transition times; tests may fix it.
	Now func() metav1.Time
	// Clock decides certificate renewal and CA rollover; tests move it
	// forward instead of waiting. Nil is the system clock.
	Clock        func() time.Time
	pusher       *pusher
	clusterWatch *clusterWatch
	rebalancer   *rebalancer
	scaling      scaleTracker
	seen         transitions
	terminating  terminatingNamespaces
	bundleHashes bundleHashes
	// secrets reads the Secrets users and the broker point at; secretEvents
	// is the metadata-only informer that reports changes to them.
	secrets      secretReader
	secretEvents cache.Cache
	// podMonitorKind remembers whether prometheus-operator is installed
	// (mqttbroker_monitoring.go).
	podMonitorKind kindPresence
}

// +kubebuilder:rbac:groups=broker.mqtt-operator.io,resources=mqttbrokers,verbs=get;list;watch
// +kubebuilder:rbac:groups=broker.mqtt-operator.io,resources=mqttbrokers/status,verbs=patch
// +kubebuilder:rbac:groups=broker.mqtt-operator.io,resources=mqttusers;topicacls,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=configmaps;services;serviceaccounts,verbs=get;list;watch;create;patch
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get;list;watch;create;patch
// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch
// +kubebuilder:rbac:groups=apps,resources=statefulsets,verbs=get;list;watch;create;patch
// +kubebuilder:rbac:groups=policy,resources=poddisruptionbudgets,verbs=get;list;watch;create;patch
// +kubebuilder:rbac:groups=networking.k8s.io,resources=networkpolicies,verbs=get;list;watch;create;patch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch
// +kubebuilder:rbac:groups=cert-manager.io,resources=certificates,verbs=get;create;patch

// Reconcile applies the broker's children, renders and pushes its auth
// bundle, and reports what it observes.
func (r *MQTTBrokerReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	result, err := r.reconcile(ctx, req)
	return result, r.terminating.quiet(ctx, req.NamespacedName, err)
}

func (r *MQTTBrokerReconciler) reconcile(ctx context.Context, req ctrl.Request) (_ ctrl.Result, err error) {
	broker := &v1alpha1.MQTTBroker{}
	if err := r.Client.Get(ctx, req.NamespacedName, broker); err != nil {
		if apierrors.IsNotFound(err) {
			r.Enforcement.forget(req.NamespacedName)
			r.pusher.forget(req.NamespacedName)
			r.seen.forget(req.NamespacedName)
			r.terminating.forget(req.NamespacedName)
			r.bundleHashes.forget(req.NamespacedName)
			r.clusterWatch.forget(req.NamespacedName)
			r.rebalancer.forget(req.NamespacedName)
			r.scaling.forget(req.NamespacedName)
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !broker.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, nil // owner references let the garbage collector remove the children
	}
	s := &brokerScope{broker: broker, before: broker.DeepCopy()}
	defer func() {
		// A transient error keeps the last status, and the retry writes it;
		// a failed push is reported, as pods then converge from their files.
		if err == nil || errors.Is(err, errPush) {
			err = errors.Join(err, r.writeStatus(ctx, s))
		}
	}()

	// Whether the broker is clustered, and its cluster credentials, before
	// the children: its config, Services and pods depend on it.
	pods, err := r.brokerPods(ctx, broker)
	if err != nil {
		return ctrl.Result{}, err
	}
	cluster, err := r.reconcileCluster(ctx, broker, pods)
	if err != nil {
		return ctrl.Result{}, err
	}
	children, failure := gatherChildren(broker, cluster.clustering, r.Options)
	if failure != nil {
		s.failure = failure
		return ctrl.Result{}, nil
	}
	if why := r.Policy.Check(broker, r.Options.BrokerImage); why != "" {
		// Nothing of the pods' spec is applied, so the running pods stay as
		// they are; their users, ACLs and certificates below stay current,
		// so a revoked user is still cut off.
		s.failure, children = &specFailure{ReasonNotAllowed, why}, nil
	}
	// Certificates before the StatefulSet: its pods mount them.
	if s.tls, err = r.reconcileTLS(ctx, broker); err != nil {
		return ctrl.Result{}, err
	}
	// Renewals and CA rollovers happen on time, not on the next event.
	result := ctrl.Result{RequeueAfter: cluster.after}
	if s.tls != nil {
		result.RequeueAfter = soonest(result.RequeueAfter, s.tls.after)
	}
	auth, err := r.gatherAuth(ctx, broker)
	if err != nil {
		return result, err
	}
	authErr := r.applyAuth(ctx, broker, auth)
	if authErr != nil && !errors.Is(authErr, errAuthTooLarge) {
		return result, authErr
	}
	if err := r.applyChildren(ctx, s, children); err != nil || (s.failure != nil && s.failure.reason != ReasonNotAllowed) {
		return result, err
	}
	r.recordScaling(broker, s.sts, pods)
	if err := r.syncPodMonitor(ctx, broker); err != nil {
		return result, err
	}
	if err := r.syncAutoscaler(ctx, broker); err != nil {
		return result, err
	}
	if authErr != nil { // the pods keep the last bundle that fitted
		s.failure = &specFailure{ReasonAuthTooLarge, authErr.Error()}
		return result, nil
	}
	pushErr := r.syncAuth(ctx, s, auth)
	s.cluster = &clusterView{}
	if cluster.clustering != nil {
		var again time.Duration
		s.cluster, again = r.clusterWatch.observeCluster(ctx, broker, pods, auth.token)
		result.RequeueAfter = soonest(result.RequeueAfter, again)
		s.rebalance, again = r.rebalance(ctx, broker, s.sts, s.cluster, auth.token)
		result.RequeueAfter = soonest(result.RequeueAfter, again)
	}
	return result, pushErr
}

// soonest is the earlier of two requeue delays, 0 meaning none.
func soonest(a, b time.Duration) time.Duration {
	if a == 0 || (b != 0 && b < a) {
		return b
	}
	return a
}

// clock is the reconciler's time source: Clock when set (tests), else the
// system clock.
func (r *MQTTBrokerReconciler) clock() time.Time {
	if r.Clock != nil {
		return r.Clock()
	}
	return time.Now()
}

// brokerScope carries what one reconcile learns to the status write.
type brokerScope struct {
	broker  *v1alpha1.MQTTBroker
	before  *v1alpha1.MQTTBroker
	sts     *appsv1.StatefulSet
	failure *specFailure
	auth    *v1alpha1.AuthStatus
	pushErr error
	tls     *tlsOutcome
	cluster *clusterView
	// rebalance is status.rebalance to write; nil keeps it.
	rebalance *rebalanceOutcome
}

// gatherChildren builds every child of the broker, in the order they are
// applied: the StatefulSet last, so its pods find their ConfigMap, Services
// and ServiceAccount in place.
func gatherChildren(b *v1alpha1.MQTTBroker, cl *resources.Clustering, opts resources.Options) ([]client.Object, *specFailure) {
	cfg, err := resources.BrokerConfig(b, cl, opts)
	if err != nil {
		return nil, &specFailure{ReasonInvalidSpec, err.Error()}
	}
	cm, err := resources.ConfigMap(b, cfg)
	if err != nil {
		return nil, &specFailure{ReasonInvalidSpec, err.Error()}
	}
	return []client.Object{
		cm,
		resources.ServiceAccount(b),
		resources.HeadlessService(b, cfg),
		resources.ClientService(b),
		resources.PodDisruptionBudget(b),
		resources.NetworkPolicy(b, cfg, opts),
		resources.StatefulSet(b, cfg, opts),
	}, nil
}

func (r *MQTTBrokerReconciler) applyChildren(ctx context.Context, s *brokerScope, children []client.Object) error {
	for _, child := range children {
		err := apply(ctx, r.Client, child)
		if apierrors.IsInvalid(err) || apierrors.IsBadRequest(err) {
			// The API server refused what the spec produced (for example an
			// affinity term it considers invalid): only a spec change can fix it.
			s.failure = &specFailure{ReasonInvalidSpec, err.Error()}
			return nil
		}
		if err != nil {
			return err
		}
		if sts, ok := child.(*appsv1.StatefulSet); ok {
			s.sts = sts // as the server returned it, with its current status
		}
	}
	return nil
}

// writeStatus patches the status when it changed, and records an event when
// the Ready condition changes: once per transition, never per reconcile.
func (r *MQTTBrokerReconciler) writeStatus(ctx context.Context, s *brokerScope) error {
	now := metav1.Now()
	if r.Now != nil {
		now = r.Now()
	}
	s.broker.Status = computeStatus(s.before, s.sts, s.failure, now)
	setAuthStatus(&s.broker.Status, s.broker.Generation, s.auth, s.pushErr, now)
	setTLSStatus(&s.broker.Status, s.broker.Generation, s.tls, resources.TLSEnabled(s.broker), now)
	setClusterStatus(&s.broker.Status, s.broker.Generation, s.cluster, now)
	if s.rebalance != nil {
		s.broker.Status.Rebalance = s.rebalance.status
	}
	if equality.Semantic.DeepEqual(s.before.Status, s.broker.Status) {
		return nil
	}
	if err := r.Client.Status().Patch(ctx, s.broker, client.MergeFrom(s.before)); err != nil {
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("writing MQTTBroker status: %w", err)
	}
	if ready := meta.FindStatusCondition(s.broker.Status.Conditions, v1alpha1.ConditionReady); ready != nil {
		recordTransition(ctx, r.Recorder, &r.seen, s.broker, s.before.Status.Conditions, *ready)
	}
	return nil
}

// SetupWithManager registers the reconciler. Broker events pass only on spec
// changes, so the operator's own status writes do not wake it again; child
// events bring it back to repair drift and to track the StatefulSet's rollout.
// MQTTUsers, TopicACLs, password Secrets and broker pods lead to the broker
// whose auth bundle they change.
func (r *MQTTBrokerReconciler) SetupWithManager(mgr ctrl.Manager, concurrency int) error {
	if r.Recorder == nil || r.Enforcement == nil || r.secretEvents == nil {
		return errors.New("MQTTBrokerReconciler needs an event recorder, an enforcement report and a Secret metadata cache: build it with Setup")
	}
	r.pusher = newPusher()
	r.clusterWatch = newClusterWatch()
	r.rebalancer = newRebalancer()
	return ctrl.NewControllerManagedBy(mgr).
		For(&v1alpha1.MQTTBroker{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Owns(&corev1.ConfigMap{}).
		Owns(&corev1.Secret{}).
		Owns(&corev1.ServiceAccount{}).
		Owns(&corev1.Service{}).
		Owns(&policyv1.PodDisruptionBudget{}).
		Owns(&autoscalingv2.HorizontalPodAutoscaler{}).
		Owns(&networkingv1.NetworkPolicy{}).
		Owns(&appsv1.StatefulSet{}).
		Watches(&v1alpha1.MQTTUser{}, handler.EnqueueRequestsFromMapFunc(brokerOfUser),
			builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Watches(&v1alpha1.TopicACL{}, handler.EnqueueRequestsFromMapFunc(brokerOfACL),
			builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		WatchesRawSource(secretWatch(r.secretEvents, r.brokersOfPasswordSecret)).
		// The metadata informer can report a change of a managed Secret (a
		// connection Secret with a rotated password) before the data cache
		// the reconcile reads it from has it; this watch on the data cache
		// reconciles again once it does.
		Watches(&corev1.Secret{}, handler.EnqueueRequestsFromMapFunc(r.brokersOfPasswordSecret)).
		Watches(&corev1.Pod{}, handler.EnqueueRequestsFromMapFunc(brokerOfPod)).
		Named("mqttbroker").
		WithOptions(controller.Options{MaxConcurrentReconciles: max(concurrency, 1)}).
		Complete(r)
}

func brokerRequest(namespace, name string) []reconcile.Request {
	return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: namespace, Name: name}}}
}

func brokerOfUser(_ context.Context, o client.Object) []reconcile.Request {
	return brokerRequest(o.GetNamespace(), o.(*v1alpha1.MQTTUser).Spec.BrokerRef.Name)
}

func brokerOfACL(_ context.Context, o client.Object) []reconcile.Request {
	return brokerRequest(o.GetNamespace(), o.(*v1alpha1.TopicACL).Spec.BrokerRef.Name)
}

func brokerOfPod(_ context.Context, o client.Object) []reconcile.Request {
	l := o.GetLabels()
	if l[resources.LabelManagedBy] != resources.OperatorName || l[resources.LabelInstance] == "" {
		return nil
	}
	return brokerRequest(o.GetNamespace(), l[resources.LabelInstance])
}

// brokersOfPasswordSecret maps a Secret to the brokers that read it: a
// connection Secret (and the Secret cert-manager issues for a broker) names
// its broker in a label; a password Secret a user references, and a TLS
// Secret a broker references, are found through indexes.
func (r *MQTTBrokerReconciler) brokersOfPasswordSecret(ctx context.Context, o client.Object) []reconcile.Request {
	if broker := o.GetLabels()[resources.LabelBroker]; broker != "" {
		return brokerRequest(o.GetNamespace(), broker)
	}
	var users v1alpha1.MQTTUserList
	if err := r.Client.List(ctx, &users, client.InNamespace(o.GetNamespace()), client.MatchingFields{indexPasswordSecretRef: o.GetName()}); err != nil {
		log.FromContext(ctx).Error(err, "finding the users of a password Secret", "secret", o.GetName())
		return nil
	}
	var out []reconcile.Request
	for _, u := range users.Items {
		out = append(out, brokerRequest(u.Namespace, u.Spec.BrokerRef.Name)...)
	}
	var brokers v1alpha1.MQTTBrokerList
	if err := r.Client.List(ctx, &brokers, client.InNamespace(o.GetNamespace()), client.MatchingFields{indexTLSSecret: o.GetName()}); err != nil {
		log.FromContext(ctx).Error(err, "finding the brokers of a TLS Secret", "secret", o.GetName())
		return out
	}
	for _, b := range brokers.Items {
		out = append(out, brokerRequest(b.Namespace, b.Name)...)
	}
	return out
}
