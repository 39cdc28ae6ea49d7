package controllers

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/mqtt-operator/mqtt-operator/api/v1alpha1"
)

// TestUnrelatedSecretsStayOutOfMemory: the operator may watch every Secret,
// but holds the data of only those it manages. A tenant's unrelated Secret
// (here with the manifest `kubectl apply` leaves in an annotation) and even
// the password Secret a user points at are not in its caches; the password
// still reaches the connection Secret.
func TestUnrelatedSecretsStayOutOfMemory(t *testing.T) {
	ns := newNamespace(t)
	ctx := context.Background()
	const unrelatedValue = "registry-token-that-is-none-of-our-business"
	unrelated := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "registry-credentials", Namespace: ns, Annotations: map[string]string{
			"kubectl.kubernetes.io/last-applied-configuration": `{"stringData":{"token":"` + unrelatedValue + `"}}`,
		}},
		Type: corev1.SecretTypeOpaque,
		Data: map[string][]byte{"token": []byte(unrelatedValue)},
	}
	const chosen = "a passphrase the tenant chose"
	password := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "dashboard-password", Namespace: ns},
		Data: map[string][]byte{"password": []byte(chosen)}}
	for _, s := range []*corev1.Secret{unrelated, password} {
		if err := k8s.Create(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	createBroker(t, ns, nil)
	createUser(t, ns, "dashboard", func(u *v1alpha1.MQTTUser) {
		u.Spec.PasswordSecretRef = &v1alpha1.SecretKeyReference{Name: "dashboard-password"}
	})
	waitUserReason(t, ns, "dashboard", ReasonNoReadyPods)
	if conn, _ := get(t, ns, "dashboard-mqtt", &corev1.Secret{}); string(conn.Data["password"]) != chosen {
		t.Fatal("the connection Secret does not carry the referenced password")
	}

	// The operator has seen the unrelated Secret, as metadata without
	// annotations.
	eventually(t, wait, "the unrelated Secret in the metadata cache", func() error {
		m := secretMetadata()
		if err := operatorSecrets.metadata.Get(ctx, client.ObjectKeyFromObject(unrelated), m); err != nil {
			return err
		}
		if len(m.Annotations) > 0 {
			return fmt.Errorf("metadata cache keeps annotations %v", m.Annotations)
		}
		return nil
	})
	for _, s := range []*corev1.Secret{unrelated, password} {
		err := operatorCache.Get(ctx, client.ObjectKeyFromObject(s), &corev1.Secret{})
		if !apierrors.IsNotFound(err) {
			t.Errorf("Secret %s is in the operator's cache (err=%v): its data is in the operator's memory", s.Name, err)
		}
	}
	var cached corev1.SecretList
	if err := operatorCache.List(ctx, &cached, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	for _, s := range cached.Items {
		if s.Labels["app.kubernetes.io/managed-by"] != "mqtt-operator" {
			t.Errorf("cached Secret %s is not one the operator manages", s.Name)
		}
		for _, v := range s.Data {
			if strings.Contains(string(v), unrelatedValue) {
				t.Errorf("cached Secret %s holds the unrelated Secret's value", s.Name)
			}
		}
	}
	metadata := &metav1.PartialObjectMetadataList{}
	metadata.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("SecretList"))
	if err := operatorSecrets.metadata.List(ctx, metadata, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	if len(metadata.Items) < 2 {
		t.Errorf("the metadata cache lists %d Secrets in the namespace, want every one", len(metadata.Items))
	}
	for _, m := range metadata.Items {
		if len(m.Annotations) > 0 {
			t.Errorf("metadata of Secret %s keeps its annotations", m.Name)
		}
	}

	// A change of the uncached password Secret still reaches the user.
	password.Data = map[string][]byte{"password": []byte("and now another passphrase")}
	if err := k8s.Update(ctx, password); err != nil {
		t.Fatal(err)
	}
	eventually(t, wait, "the new password in the connection Secret", func() error {
		conn, err := get(t, ns, "dashboard-mqtt", &corev1.Secret{})
		if err != nil {
			return err
		}
		if string(conn.Data["password"]) != "and now another passphrase" {
			return errors.New("still the old password")
		}
		return nil
	})
}
