package controllers

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
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
	"sigs.k8s.io/controller-runtime/pkg/source"

	v1alpha1 "github.com/mqtt-operator/mqtt-operator/api/v1alpha1"
	"github.com/mqtt-operator/mqtt-operator/internal/authbundle"
	"github.com/mqtt-operator/mqtt-operator/internal/passwordhash"
	"github.com/mqtt-operator/mqtt-operator/internal/resources"
)

// MQTTUserReconciler resolves an MQTTUser's broker and password, writes the
// connection Secret applications read, and reports whether the broker pods
// enforce the user. The broker controller puts the user in the auth bundle.
type MQTTUserReconciler struct {
	Client      client.Client
	APIReader   client.Reader
	Recorder    events.EventRecorder
	Enforcement *Enforcement
	Now         func() metav1.Time
	// Clock decides client certificate renewal; nil is the system clock.
	Clock       func() time.Time
	seen        transitions
	terminating terminatingNamespaces
	// secrets reads password Secrets; secretEvents is the metadata-only
	// informer that reports changes to them.
	secrets      secretReader
	secretEvents cache.Cache
}

// +kubebuilder:rbac:groups=broker.mqtt-operator.io,resources=mqttusers/status,verbs=patch

// Reconcile writes the user's connection Secret and status.
func (r *MQTTUserReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	result, err := r.reconcile(ctx, req)
	return result, r.terminating.quiet(ctx, req.NamespacedName, err)
}

func (r *MQTTUserReconciler) reconcile(ctx context.Context, req ctrl.Request) (_ ctrl.Result, err error) {
	user := &v1alpha1.MQTTUser{}
	if err := r.Client.Get(ctx, req.NamespacedName, user); err != nil || !user.DeletionTimestamp.IsZero() {
		if apierrors.IsNotFound(err) {
			r.seen.forget(req.NamespacedName)
			r.terminating.forget(req.NamespacedName)
		}
		return ctrl.Result{}, client.IgnoreNotFound(err) // the connection Secret goes with its owner
	}
	s := &userScope{user: user, before: user.DeepCopy(), username: authbundle.Username(user)}
	defer func() {
		if err == nil {
			err = r.writeStatus(ctx, s)
		}
	}()
	if err := r.gatherBroker(ctx, s); err != nil || s.problem != nil {
		return ctrl.Result{}, err
	}
	creds := resources.Credentials{Username: s.username}
	result := ctrl.Result{}
	var precondition string // resourceVersion the connection Secret must still have
	if user.Spec.Authentication == v1alpha1.AuthenticationClientCertificate {
		if result, precondition, err = r.gatherCertificate(ctx, s, &creds); err != nil || s.problem != nil {
			return ctrl.Result{}, err
		}
	} else {
		if err := r.gatherPassword(ctx, s); err != nil || s.problem != nil {
			return ctrl.Result{}, err
		}
		creds.Password, creds.Rotation, creds.PasswordSource = s.password, s.rotation, s.source
	}
	if creds.CA, err = r.serverCA(ctx, s.broker); err != nil {
		return ctrl.Result{}, err
	}
	conn := resources.ConnectionSecret(user, s.broker, creds)
	conn.ResourceVersion = precondition
	if err := apply(ctx, r.Client, conn); err != nil {
		return ctrl.Result{}, err
	}
	return result, r.observeEnforcement(ctx, s)
}

// userScope carries what one reconcile learns to the status write. It never
// holds a password longer than the reconcile, and never puts it in status.
type userScope struct {
	user, before *v1alpha1.MQTTUser
	username     string
	broker       *v1alpha1.MQTTBroker
	password     string
	rotation     string
	source       string // version of the referenced password Secret
	permissions  []v1alpha1.EffectiveRule
	problem      *userProblem
	enforced     *enforcementState
}

// userProblem is something only a change to the user, its Secret or its
// broker can fix; the user stays out of the bundle until then.
type userProblem struct{ reason, message string }

func (r *MQTTUserReconciler) gatherBroker(ctx context.Context, s *userScope) error {
	u := s.user
	broker := &v1alpha1.MQTTBroker{}
	err := r.Client.Get(ctx, client.ObjectKey{Namespace: u.Namespace, Name: u.Spec.BrokerRef.Name}, broker)
	if apierrors.IsNotFound(err) {
		s.problem = &userProblem{ReasonBrokerNotFound, fmt.Sprintf("MQTTBroker %q does not exist in namespace %s", u.Spec.BrokerRef.Name, u.Namespace)}
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading MQTTBroker %s: %w", u.Spec.BrokerRef.Name, err)
	}
	s.broker = broker
	users, err := claimants(ctx, r.Client, u.Namespace, broker.Name, s.username)
	if err != nil {
		return err
	}
	acls, err := aclsOf(ctx, r.Client, u.Namespace, broker.Name)
	if err != nil {
		return err
	}
	s.permissions = authbundle.Permissions(s.username, acls)
	if _, conflicts := authbundle.Owners(users); conflicts[u.Name] != "" {
		s.problem = &userProblem{ReasonUsernameConflict, fmt.Sprintf("username %q belongs to MQTTUser %q, which is older; give this user another username", s.username, conflicts[u.Name])}
	}
	return nil
}

// gatherPassword finds the user's password: from the referenced Secret, or
// the generated one kept in the connection Secret (generated once, and again
// only when the rotate-password annotation changes).
func (r *MQTTUserReconciler) gatherPassword(ctx context.Context, s *userScope) error {
	u := s.user
	if u.Spec.PasswordSecretRef != nil {
		return r.gatherChosenPassword(ctx, s)
	}
	want := u.Annotations[resources.AnnotationRotatePassword]
	conn, err := r.readConnectionSecret(ctx, u)
	switch {
	case err == nil && metav1.IsControlledBy(conn, u) && len(conn.Data[resources.ConnectionPasswordKey]) >= minGeneratedPassword &&
		conn.Annotations[resources.AnnotationRotatePassword] == want:
		s.password, s.rotation = string(conn.Data[resources.ConnectionPasswordKey]), want
	case err == nil && !metav1.IsControlledBy(conn, u):
		s.problem = &userProblem{ReasonSecretConflict, fmt.Sprintf("Secret %q exists and does not belong to this MQTTUser; set connectionSecretName to another name", conn.Name)}
	case err == nil || apierrors.IsNotFound(err):
		s.password, s.rotation = generatePassword(), want
		if err == nil {
			log.FromContext(ctx).Info("generated a new password", "reason", "rotation requested or stored password unusable")
		}
	default:
		return fmt.Errorf("reading the connection Secret: %w", err)
	}
	return nil
}

// gatherChosenPassword reads the password from the Secret the user points
// at. That Secret is not cached (the operator does not manage it), so it is
// read from the API server only when its version differs from the one the
// connection Secret was written from: a broker or ACL change that wakes
// every user of a broker costs no read of their password Secrets.
func (r *MQTTUserReconciler) gatherChosenPassword(ctx context.Context, s *userScope) error {
	u := s.user
	name, key := passwordSource(u)
	ref := client.ObjectKey{Namespace: u.Namespace, Name: name}
	version, err := r.secrets.version(ctx, ref)
	if err == nil {
		conn := &corev1.Secret{}
		if r.Client.Get(ctx, client.ObjectKey{Namespace: u.Namespace, Name: resources.ConnectionSecretName(u)}, conn) == nil &&
			metav1.IsControlledBy(conn, u) && len(conn.Data[resources.ConnectionPasswordKey]) > 0 &&
			conn.Annotations[resources.AnnotationPasswordSource] == sourceVersion(version, key) {
			s.password, s.source = string(conn.Data[resources.ConnectionPasswordKey]), sourceVersion(version, key)
			return nil
		}
	}
	secret := &corev1.Secret{}
	if err == nil {
		err = r.secrets.get(ctx, ref, secret)
	}
	switch {
	case apierrors.IsNotFound(err):
		s.problem = &userProblem{ReasonSecretNotFound, fmt.Sprintf("Secret %q (passwordSecretRef) does not exist", name)}
		return nil
	case err != nil:
		return fmt.Errorf("reading the password Secret: %w", err)
	case len(secret.Data[key]) == 0:
		s.problem = &userProblem{ReasonSecretKeyMissing, fmt.Sprintf("Secret %q has no key %q, or it is empty", name, key)}
		return nil
	}
	if err := passwordhash.ValidateChosen(string(secret.Data[key])); err != nil {
		s.problem = &userProblem{ReasonPasswordInvalid, fmt.Sprintf("the password in Secret %q key %q cannot be used: %v", name, key, err)}
		return nil
	}
	s.password, s.source = string(secret.Data[key]), sourceVersion(secret.ResourceVersion, key)
	return nil
}

// readConnectionSecret reads the user's connection Secret, past the cache
// when the cache has not seen it: what it holds (a generated password, a
// client certificate) must never be replaced because of a stale cache.
func (r *MQTTUserReconciler) readConnectionSecret(ctx context.Context, u *v1alpha1.MQTTUser) (*corev1.Secret, error) {
	conn := &corev1.Secret{}
	err := r.Client.Get(ctx, client.ObjectKey{Namespace: u.Namespace, Name: resources.ConnectionSecretName(u)}, conn)
	if apierrors.IsNotFound(err) {
		err = r.APIReader.Get(ctx, client.ObjectKey{Namespace: u.Namespace, Name: resources.ConnectionSecretName(u)}, conn)
	}
	if err != nil {
		return nil, err
	}
	return conn, nil
}

// minGeneratedPassword is the length of a generated password (32 random
// bytes, base64url): anything shorter was not generated by the operator.
const minGeneratedPassword = 43

func generatePassword() string {
	raw := make([]byte, 32)
	_, _ = rand.Read(raw) // crypto/rand.Read does not fail on supported platforms
	return base64.RawURLEncoding.EncodeToString(raw)
}

// observeEnforcement compares what the broker pods enforce with this user as
// it is now: its generation and the version of its password Secret.
func (r *MQTTUserReconciler) observeEnforcement(ctx context.Context, s *userScope) error {
	u := s.user
	name, key := passwordSource(u)
	version, err := r.secrets.version(ctx, client.ObjectKey{Namespace: u.Namespace, Name: name})
	if err != nil {
		return client.IgnoreNotFound(err) // the write above is not in the cache yet; its event brings us back
	}
	want := member{generation: u.Generation, source: sourceVersion(version, key)}
	auth, known := r.Enforcement.get(types.NamespacedName{Namespace: u.Namespace, Name: s.broker.Name})
	got, in := auth.users[u.Name]
	s.enforced = &enforcementState{known: known, current: in && got == want, readyPods: auth.readyPods, scaledToZero: auth.scaledToZero}
	return nil
}

func (r *MQTTUserReconciler) writeStatus(ctx context.Context, s *userScope) error {
	now := metav1.Now()
	if r.Now != nil {
		now = r.Now()
	}
	st := &s.user.Status
	st.ObservedGeneration = s.user.Generation
	st.Username = s.username
	st.ConnectionSecretName = resources.ConnectionSecretName(s.user)
	st.Permissions = s.permissions
	ready := readyCondition("user", s.user.Generation, now, s.problem, s.enforced)
	meta.SetStatusCondition(&st.Conditions, ready)
	if equality.Semantic.DeepEqual(s.before.Status, s.user.Status) {
		return nil
	}
	if err := r.Client.Status().Patch(ctx, s.user, client.MergeFrom(s.before)); err != nil {
		return client.IgnoreNotFound(err)
	}
	recordTransition(ctx, r.Recorder, &r.seen, s.user, s.before.Status.Conditions, ready)
	return nil
}

// SetupWithManager registers the reconciler.
func (r *MQTTUserReconciler) SetupWithManager(mgr ctrl.Manager, concurrency int) error {
	if r.Recorder == nil || r.Enforcement == nil || r.secretEvents == nil {
		return errors.New("MQTTUserReconciler needs an event recorder, an enforcement report and a Secret metadata cache: build it with Setup")
	}
	return ctrl.NewControllerManagedBy(mgr).
		For(&v1alpha1.MQTTUser{}, builder.WithPredicates(predicate.Or[client.Object](predicate.GenerationChangedPredicate{}, predicate.AnnotationChangedPredicate{}))).
		Owns(&corev1.Secret{}).
		WatchesRawSource(secretWatch(r.secretEvents, r.usersOfSecret)).
		Watches(&v1alpha1.MQTTBroker{}, handler.EnqueueRequestsFromMapFunc(r.usersOfBroker),
			builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Watches(&v1alpha1.TopicACL{}, handler.EnqueueRequestsFromMapFunc(r.usersOfBrokerOf),
			builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Watches(&v1alpha1.MQTTUser{}, handler.EnqueueRequestsFromMapFunc(r.sameUsername),
			builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		WatchesRawSource(source.Channel(r.Enforcement.Users, &handler.EnqueueRequestForObject{})).
		Named("mqttuser").
		WithOptions(controller.Options{MaxConcurrentReconciles: max(concurrency, 1)}).
		Complete(r)
}

func (r *MQTTUserReconciler) requestsFor(ctx context.Context, namespace, broker string) []reconcile.Request {
	users, err := usersOf(ctx, r.Client, namespace, broker)
	if err != nil {
		log.FromContext(ctx).Error(err, "finding the users of a broker", "broker", broker)
		return nil
	}
	var out []reconcile.Request
	for i := range users {
		out = append(out, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&users[i])})
	}
	return out
}

func (r *MQTTUserReconciler) usersOfBroker(ctx context.Context, o client.Object) []reconcile.Request {
	return r.requestsFor(ctx, o.GetNamespace(), o.GetName())
}

func (r *MQTTUserReconciler) usersOfBrokerOf(ctx context.Context, o client.Object) []reconcile.Request {
	return r.requestsFor(ctx, o.GetNamespace(), o.(*v1alpha1.TopicACL).Spec.BrokerRef.Name)
}

// sameUsername wakes the other claimants of a username when one changes or
// goes, so a conflict resolves as soon as it can.
func (r *MQTTUserReconciler) sameUsername(ctx context.Context, o client.Object) []reconcile.Request {
	u := o.(*v1alpha1.MQTTUser)
	users, err := claimants(ctx, r.Client, u.Namespace, u.Spec.BrokerRef.Name, authbundle.Username(u))
	if err != nil {
		log.FromContext(ctx).Error(err, "finding the claimants of a username")
		return nil
	}
	var out []reconcile.Request
	for i := range users {
		if users[i].Name != u.Name {
			out = append(out, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&users[i])})
		}
	}
	return out
}

func (r *MQTTUserReconciler) usersOfSecret(ctx context.Context, o client.Object) []reconcile.Request {
	// A broker's TLS and CA Secrets: every user's connection Secret carries
	// the CA bundle, and certificate users are issued from the CA.
	if l := o.GetLabels(); l[resources.LabelBroker] != "" && l[resources.LabelUser] == "" {
		return r.requestsFor(ctx, o.GetNamespace(), l[resources.LabelBroker])
	}
	var users v1alpha1.MQTTUserList
	if err := r.Client.List(ctx, &users, client.InNamespace(o.GetNamespace()), client.MatchingFields{indexPasswordSecretRef: o.GetName()}); err != nil {
		log.FromContext(ctx).Error(err, "finding the users of a password Secret", "secret", o.GetName())
		return nil
	}
	var out []reconcile.Request
	for i := range users.Items {
		out = append(out, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&users.Items[i])})
	}
	return out
}
