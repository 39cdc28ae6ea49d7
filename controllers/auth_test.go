package controllers

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/mqtt-operator/mqtt-operator/api/v1alpha1"
	"github.com/mqtt-operator/mqtt-operator/internal/brokerconfig"
	"github.com/mqtt-operator/mqtt-operator/internal/passwordhash"
	"github.com/mqtt-operator/mqtt-operator/internal/resources"
)

// These specs cover what the operator writes for users and ACLs: connection
// Secrets, the auth bundle Secret, and statuses. There are no broker pods in
// envtest (test/integration runs real ones), so users and ACLs report
// NoReadyPods once they are in the bundle.

func createUser(t *testing.T, ns, name string, mutate func(*v1alpha1.MQTTUser)) *v1alpha1.MQTTUser {
	t.Helper()
	u := &v1alpha1.MQTTUser{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: v1alpha1.MQTTUserSpec{BrokerRef: v1alpha1.BrokerReference{Name: "telemetry"}}}
	if mutate != nil {
		mutate(u)
	}
	if err := k8s.Create(context.Background(), u); err != nil {
		t.Fatal(err)
	}
	return u
}

func createACL(t *testing.T, ns, name string, subjects v1alpha1.ACLSubjects, rules ...v1alpha1.ACLRule) *v1alpha1.TopicACL {
	t.Helper()
	a := &v1alpha1.TopicACL{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: v1alpha1.TopicACLSpec{BrokerRef: v1alpha1.BrokerReference{Name: "telemetry"}, Subjects: subjects, Rules: rules}}
	if err := k8s.Create(context.Background(), a); err != nil {
		t.Fatal(err)
	}
	return a
}

// bundle reads the auth bundle the pods would mount.
func bundle(t *testing.T, ns string) (*brokerconfig.AuthBundle, *corev1.Secret) {
	t.Helper()
	s, err := get(t, ns, "telemetry-auth", &corev1.Secret{})
	if err != nil {
		return nil, nil
	}
	b, err := brokerconfig.ParseBundle(s.Data[brokerconfig.BundleFileName])
	if err != nil {
		t.Fatalf("the auth Secret holds a bundle the broker would refuse: %v", err)
	}
	return b, s
}

func hashOf(b *brokerconfig.AuthBundle, username string) string {
	if b == nil {
		return ""
	}
	for _, u := range b.Users {
		if u.Username == username {
			return u.PasswordHash
		}
	}
	return ""
}

func readyOf(conds []metav1.Condition) *metav1.Condition {
	return meta.FindStatusCondition(conds, v1alpha1.ConditionReady)
}

func waitUserReason(t *testing.T, ns, name, reason string) *v1alpha1.MQTTUser {
	t.Helper()
	var u *v1alpha1.MQTTUser
	eventually(t, wait, "user "+name+" Ready reason "+reason, func() error {
		var err error
		if u, err = get(t, ns, name, &v1alpha1.MQTTUser{}); err != nil {
			return err
		}
		if c := readyOf(u.Status.Conditions); c == nil || c.Reason != reason || c.ObservedGeneration != u.Generation {
			return fmt.Errorf("Ready is %+v", c)
		}
		return nil
	})
	return u
}

func TestGeneratedPasswordConnectionSecretAndBundle(t *testing.T) {
	ns := newNamespace(t)
	createBroker(t, ns, nil)
	user := createUser(t, ns, "sensor-gateway", nil)
	u := waitUserReason(t, ns, "sensor-gateway", ReasonNoReadyPods)
	if u.Status.Username != "sensor-gateway" || u.Status.ConnectionSecretName != "sensor-gateway-mqtt" {
		t.Errorf("status username %q secret %q", u.Status.Username, u.Status.ConnectionSecretName)
	}
	conn, err := get(t, ns, "sensor-gateway-mqtt", &corev1.Secret{})
	if err != nil {
		t.Fatal(err)
	}
	password := string(conn.Data["password"])
	if len(password) != 43 {
		t.Fatalf("generated password has %d characters, want 43 (32 random bytes)", len(password))
	}
	wantData := map[string]string{"host": "telemetry." + ns + ".svc", "port": "1883", "username": "sensor-gateway",
		"uri": "mqtt://sensor-gateway:" + password + "@telemetry." + ns + ".svc:1883"}
	for k, want := range wantData {
		if got := string(conn.Data[k]); got != want {
			t.Errorf("connection Secret %s = %q, want %q", k, got, want)
		}
	}
	if !metav1.IsControlledBy(conn, user) || conn.Labels[resources.LabelBroker] != "telemetry" {
		t.Errorf("connection Secret owner %v labels %v", conn.OwnerReferences, conn.Labels)
	}
	b, authSecret := bundle(t, ns)
	hash := hashOf(b, "sensor-gateway")
	if ok, _ := passwordhash.Verify(hash, password); !ok || !strings.HasPrefix(hash, "$sha256$") {
		t.Fatalf("bundle hash %q does not verify the generated password with salted SHA-256", hash)
	}
	if strings.Contains(string(authSecret.Data[brokerconfig.BundleFileName]), password) {
		t.Fatal("the plain password is in the auth bundle")
	}

	// Another reconcile keeps password and bundle; asking for rotation makes
	// a new password and a new bundle. The Secret's history, watched from
	// before the first change, must show exactly one new password, made for
	// the rotation: reconciles of one object run in order, so a wrongful
	// regeneration by the first would show up first.
	gen, _ := strconv.Atoi(authSecret.Annotations[resources.AnnotationAuthGeneration])
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	history, err := watcher.Watch(ctx, &corev1.SecretList{}, client.InNamespace(ns),
		client.MatchingFields{"metadata.name": "sensor-gateway-mqtt"}, &client.ListOptions{Raw: &metav1.ListOptions{ResourceVersion: conn.ResourceVersion}})
	if err != nil {
		t.Fatal(err)
	}
	defer history.Stop()
	patchUser(t, u, func(u *v1alpha1.MQTTUser) { u.Annotations = map[string]string{"other": "x"} })
	patchUser(t, u, func(u *v1alpha1.MQTTUser) { u.Annotations[resources.AnnotationRotatePassword] = "2026-11-28" })
	var rotated string
	for rotated == "" {
		select {
		case ev := <-history.ResultChan():
			s, ok := ev.Object.(*corev1.Secret)
			if !ok || string(s.Data["password"]) == password {
				continue
			}
			if s.Annotations[resources.AnnotationRotatePassword] != "2026-11-28" {
				t.Fatalf("the password changed without a rotation being asked for")
			}
			rotated = string(s.Data["password"])
		case <-ctx.Done():
			t.Fatal("the password was not rotated")
		}
	}
	eventually(t, wait, "the rotated password in the bundle, one generation on", func() error {
		b, s := bundle(t, ns)
		if ok, _ := passwordhash.Verify(hashOf(b, "sensor-gateway"), rotated); !ok {
			return errors.New("bundle not updated")
		}
		if g := s.Annotations[resources.AnnotationAuthGeneration]; g != strconv.Itoa(gen+1) {
			t.Fatalf("bundle generation %s after one rotation from %d: it changed without a reason", g, gen)
		}
		return nil
	})
}

func patchUser(t *testing.T, u *v1alpha1.MQTTUser, mutate func(*v1alpha1.MQTTUser)) {
	t.Helper()
	fresh, err := get(t, u.Namespace, u.Name, &v1alpha1.MQTTUser{})
	if err != nil {
		t.Fatal(err)
	}
	before := fresh.DeepCopy()
	mutate(fresh)
	if err := k8s.Patch(context.Background(), fresh, client.MergeFrom(before)); err != nil {
		t.Fatal(err)
	}
}

func TestPasswordFromASecret(t *testing.T) {
	ns := newNamespace(t)
	ctx := context.Background()
	createBroker(t, ns, nil)
	createUser(t, ns, "dashboard", func(u *v1alpha1.MQTTUser) {
		u.Spec.PasswordSecretRef = &v1alpha1.SecretKeyReference{Name: "dashboard-password", Key: "secret"}
	})
	waitUserReason(t, ns, "dashboard", ReasonSecretNotFound)
	if b, _ := bundle(t, ns); hashOf(b, "dashboard") != "" {
		t.Fatal("a user without its password Secret is in the bundle")
	}

	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "dashboard-password", Namespace: ns},
		Data: map[string][]byte{"other": []byte("x")}}
	if err := k8s.Create(ctx, secret); err != nil {
		t.Fatal(err)
	}
	waitUserReason(t, ns, "dashboard", ReasonSecretKeyMissing)

	secret.Data = map[string][]byte{"secret": []byte(strings.Repeat("p", 73))}
	if err := k8s.Update(ctx, secret); err != nil {
		t.Fatal(err)
	}
	waitUserReason(t, ns, "dashboard", ReasonPasswordInvalid)

	secret.Data = map[string][]byte{"secret": []byte("correct horse battery staple")}
	if err := k8s.Update(ctx, secret); err != nil {
		t.Fatal(err)
	}
	waitUserReason(t, ns, "dashboard", ReasonNoReadyPods)
	b, _ := bundle(t, ns)
	if ok, _ := passwordhash.Verify(hashOf(b, "dashboard"), "correct horse battery staple"); !ok || !strings.HasPrefix(hashOf(b, "dashboard"), "$2") {
		t.Fatalf("a chosen password must be bcrypt-hashed in the bundle, got %q", hashOf(b, "dashboard"))
	}
	conn, _ := get(t, ns, "dashboard-mqtt", &corev1.Secret{})
	if string(conn.Data["password"]) != "correct horse battery staple" {
		t.Error("the connection Secret does not carry the referenced password")
	}

	// Rotating the referenced Secret rotates the password in the bundle.
	secret.Data = map[string][]byte{"secret": []byte("a new passphrase entirely")}
	if err := k8s.Update(ctx, secret); err != nil {
		t.Fatal(err)
	}
	eventually(t, wait, "the rotated password in the bundle", func() error {
		b, _ := bundle(t, ns)
		if ok, _ := passwordhash.Verify(hashOf(b, "dashboard"), "a new passphrase entirely"); !ok {
			return errors.New("old hash still in the bundle")
		}
		return nil
	})
}

func TestUsernameConflictOlderUserWins(t *testing.T) {
	ns := newNamespace(t)
	ctx := context.Background()
	createBroker(t, ns, nil)
	first := createUser(t, ns, "first", func(u *v1alpha1.MQTTUser) { u.Spec.Username = "shared" })
	waitUserReason(t, ns, "first", ReasonNoReadyPods)
	// Created in the same second, the name decides: "first" still wins.
	createUser(t, ns, "second", func(u *v1alpha1.MQTTUser) { u.Spec.Username = "shared" })
	second := waitUserReason(t, ns, "second", ReasonUsernameConflict)
	if c := readyOf(second.Status.Conditions); !strings.Contains(c.Message, `MQTTUser "first"`) {
		t.Errorf("conflict message %q does not name the owner", c.Message)
	}
	conn, _ := get(t, ns, "first-mqtt", &corev1.Secret{})
	b, _ := bundle(t, ns)
	if ok, _ := passwordhash.Verify(hashOf(b, "shared"), string(conn.Data["password"])); !ok {
		t.Fatal("the bundle does not hold the older user's password")
	}

	// The owner goes; the other claimant takes the username over.
	if err := k8s.Delete(ctx, first); err != nil {
		t.Fatal(err)
	}
	waitUserReason(t, ns, "second", ReasonNoReadyPods)
	eventually(t, wait, "the second user's password in the bundle", func() error {
		conn, _ := get(t, ns, "second-mqtt", &corev1.Secret{})
		b, _ := bundle(t, ns)
		if ok, _ := passwordhash.Verify(hashOf(b, "shared"), string(conn.Data["password"])); !ok {
			return errors.New("not yet")
		}
		return nil
	})
}

func TestACLStatusPermissionsAndBundle(t *testing.T) {
	ns := newNamespace(t)
	createBroker(t, ns, nil)
	createUser(t, ns, "alice", nil)
	createACL(t, ns, "devices", v1alpha1.ACLSubjects{Users: []v1alpha1.Username{"alice", "ghost"}},
		v1alpha1.ACLRule{Topic: "telemetry/%u/#", Access: v1alpha1.AccessPublish},
		v1alpha1.ACLRule{Topic: "telemetry/secret/#", Access: v1alpha1.AccessSubscribe, Effect: v1alpha1.EffectDeny})
	createACL(t, ns, "all-read-status", v1alpha1.ACLSubjects{AllAuthenticated: true},
		v1alpha1.ACLRule{Topic: "status/+", Access: v1alpha1.AccessSubscribe})

	var acl *v1alpha1.TopicACL
	eventually(t, wait, "ACL status", func() error {
		var err error
		if acl, err = get(t, ns, "devices", &v1alpha1.TopicACL{}); err != nil {
			return err
		}
		if c := readyOf(acl.Status.Conditions); c == nil || c.Reason != ReasonNoReadyPods {
			return fmt.Errorf("Ready %+v", c)
		}
		return nil
	})
	if r := meta.FindStatusCondition(acl.Status.Conditions, ConditionSubjectsResolved); r == nil || r.Status != metav1.ConditionFalse ||
		len(acl.Status.UnknownUsers) != 1 || acl.Status.UnknownUsers[0] != "ghost" {
		t.Errorf("unknown users %v, condition %+v; want ghost reported", acl.Status.UnknownUsers, r)
	}
	b, _ := bundle(t, ns)
	if len(b.ACLs) != 2 || b.ACLs[0].Name != "all-read-status" || b.ACLs[1].Rules[1].Effect != "Deny" {
		t.Errorf("bundle ACLs %+v", b.ACLs)
	}
	want := []v1alpha1.EffectiveRule{
		{ACL: "all-read-status", Topic: "status/+", Access: v1alpha1.AccessSubscribe, Effect: v1alpha1.EffectAllow},
		{ACL: "devices", Topic: "telemetry/alice/#", Access: v1alpha1.AccessPublish, Effect: v1alpha1.EffectAllow},
		{ACL: "devices", Topic: "telemetry/secret/#", Access: v1alpha1.AccessSubscribe, Effect: v1alpha1.EffectDeny},
	}
	eventually(t, wait, "alice's effective permissions", func() error {
		u, err := get(t, ns, "alice", &v1alpha1.MQTTUser{})
		if err != nil {
			return err
		}
		if fmt.Sprint(u.Status.Permissions) != fmt.Sprint(want) {
			return fmt.Errorf("permissions %v", u.Status.Permissions)
		}
		return nil
	})

	// ghost appears: the ACL's subjects resolve.
	createUser(t, ns, "ghost", nil)
	eventually(t, wait, "subjects resolved", func() error {
		acl, _ := get(t, ns, "devices", &v1alpha1.TopicACL{})
		if r := meta.FindStatusCondition(acl.Status.Conditions, ConditionSubjectsResolved); r == nil || r.Status != metav1.ConditionTrue {
			return fmt.Errorf("SubjectsResolved %+v", r)
		}
		return nil
	})
}

func TestMissingBrokerIsReported(t *testing.T) {
	ns := newNamespace(t)
	createUser(t, ns, "orphan", func(u *v1alpha1.MQTTUser) { u.Spec.BrokerRef.Name = "nowhere" })
	waitUserReason(t, ns, "orphan", ReasonBrokerNotFound)
	createACL(t, ns, "orphan", v1alpha1.ACLSubjects{AllAuthenticated: true}, v1alpha1.ACLRule{Topic: "#", Access: v1alpha1.AccessSubscribe})
	eventually(t, wait, "ACL BrokerNotFound", func() error {
		acl, _ := get(t, ns, "orphan", &v1alpha1.TopicACL{})
		if c := readyOf(acl.Status.Conditions); c == nil || c.Reason != ReasonBrokerNotFound {
			return fmt.Errorf("Ready %+v", c)
		}
		return nil
	})
	eventually(t, wait, "one Warning event for the user", func() error {
		var list eventsv1.EventList
		if err := k8s.List(context.Background(), &list, client.InNamespace(ns)); err != nil {
			return err
		}
		n := 0
		for _, e := range list.Items {
			if e.Regarding.Kind == "MQTTUser" && e.Reason == ReasonBrokerNotFound && e.Type == corev1.EventTypeWarning {
				n++
			}
		}
		if n != 1 {
			return fmt.Errorf("%d BrokerNotFound warnings", n)
		}
		return nil
	})
}

// spec.limits reaches the pods' bundle with the user, and a change to it
// (a new generation of the user) reaches it too.
func TestUserLimitsReachTheBundle(t *testing.T) {
	ns := newNamespace(t)
	createBroker(t, ns, nil)
	createUser(t, ns, "fleet", func(u *v1alpha1.MQTTUser) {
		u.Spec.Limits = &v1alpha1.UserLimits{MaxConnections: 500, MaxSubscriptions: 4, PublishRate: 10, PublishBytesPerSecond: 4096, MaxInflight: 8}
	})
	createUser(t, ns, "free", nil)
	limitsIs := func(want *brokerconfig.UserLimits) func() error {
		return func() error {
			b, _ := bundle(t, ns)
			if b == nil {
				return errors.New("no bundle yet")
			}
			var fleet, free *brokerconfig.User
			for i := range b.Users {
				switch b.Users[i].Username {
				case "fleet":
					fleet = &b.Users[i]
				case "free":
					free = &b.Users[i]
				}
			}
			if fleet == nil || free == nil {
				return fmt.Errorf("users %+v", b.Users)
			}
			if free.Limits != nil {
				return fmt.Errorf("free has limits %+v", free.Limits)
			}
			if (want == nil) != (fleet.Limits == nil) || (want != nil && *want != *fleet.Limits) {
				return fmt.Errorf("fleet's limits %+v, want %+v", fleet.Limits, want)
			}
			return nil
		}
	}
	eventually(t, wait, "fleet's limits in the bundle", limitsIs(&brokerconfig.UserLimits{MaxConnections: 500, MaxSubscriptions: 4, PublishRate: 10, PublishBytesPerSecond: 4096, MaxInflight: 8}))
	update := func(mutate func(*v1alpha1.MQTTUser)) {
		eventually(t, wait, "user updated", func() error {
			u, err := get(t, ns, "fleet", &v1alpha1.MQTTUser{})
			if err != nil {
				return err
			}
			mutate(u)
			return k8s.Update(context.Background(), u)
		})
	}
	update(func(u *v1alpha1.MQTTUser) { u.Spec.Limits = &v1alpha1.UserLimits{MaxConnections: 1000} })
	eventually(t, wait, "the raised limit in the bundle", limitsIs(&brokerconfig.UserLimits{MaxConnections: 1000}))
	update(func(u *v1alpha1.MQTTUser) { u.Spec.Limits = nil })
	eventually(t, wait, "no limits in the bundle", limitsIs(nil))
}
