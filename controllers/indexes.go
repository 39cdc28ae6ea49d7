package controllers

import (
	"context"
	"fmt"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/mqtt-operator/mqtt-operator/api/v1alpha1"
	"github.com/mqtt-operator/mqtt-operator/internal/authbundle"
)

// Field indexes, so a reconcile lists the users and ACLs of one broker (or
// the users of one Secret) from the cache without scanning the namespace.
const (
	indexBrokerRef         = "spec.brokerRef.name"
	indexPasswordSecretRef = "spec.passwordSecretRef.name"
	// indexBrokerUsername is "<broker>/<username>": the claimants of one
	// username, without listing every user of a broker.
	indexBrokerUsername = "broker.username"
	// indexTLSSecret finds the brokers that take their certificate from a
	// Secret (mode ExistingSecret).
	indexTLSSecret = "spec.tls.secretName"
)

func brokerUsername(broker, username string) string { return broker + "/" + username }

func registerIndexes(ctx context.Context, mgr ctrl.Manager) error {
	fi := mgr.GetFieldIndexer()
	if err := fi.IndexField(ctx, &v1alpha1.MQTTUser{}, indexBrokerRef, func(o client.Object) []string {
		return []string{o.(*v1alpha1.MQTTUser).Spec.BrokerRef.Name}
	}); err != nil {
		return fmt.Errorf("indexing MQTTUsers by broker: %w", err)
	}
	if err := fi.IndexField(ctx, &v1alpha1.TopicACL{}, indexBrokerRef, func(o client.Object) []string {
		return []string{o.(*v1alpha1.TopicACL).Spec.BrokerRef.Name}
	}); err != nil {
		return fmt.Errorf("indexing TopicACLs by broker: %w", err)
	}
	if err := fi.IndexField(ctx, &v1alpha1.MQTTUser{}, indexBrokerUsername, func(o client.Object) []string {
		u := o.(*v1alpha1.MQTTUser)
		return []string{brokerUsername(u.Spec.BrokerRef.Name, authbundle.Username(u))}
	}); err != nil {
		return fmt.Errorf("indexing MQTTUsers by username: %w", err)
	}
	if err := fi.IndexField(ctx, &v1alpha1.MQTTUser{}, indexPasswordSecretRef, func(o client.Object) []string {
		if ref := o.(*v1alpha1.MQTTUser).Spec.PasswordSecretRef; ref != nil {
			return []string{ref.Name}
		}
		return nil
	}); err != nil {
		return fmt.Errorf("indexing MQTTUsers by password Secret: %w", err)
	}
	if err := fi.IndexField(ctx, &v1alpha1.MQTTBroker{}, indexTLSSecret, func(o client.Object) []string {
		if t := o.(*v1alpha1.MQTTBroker).Spec.TLS; t != nil && t.Mode == v1alpha1.TLSExistingSecret && t.SecretName != "" {
			return []string{t.SecretName}
		}
		return nil
	}); err != nil {
		return fmt.Errorf("indexing MQTTBrokers by TLS Secret: %w", err)
	}
	return nil
}

func usersOf(ctx context.Context, c client.Reader, namespace, broker string) ([]v1alpha1.MQTTUser, error) {
	var list v1alpha1.MQTTUserList
	if err := c.List(ctx, &list, client.InNamespace(namespace), client.MatchingFields{indexBrokerRef: broker}); err != nil {
		return nil, fmt.Errorf("listing the MQTTUsers of broker %s: %w", broker, err)
	}
	return list.Items, nil
}

func aclsOf(ctx context.Context, c client.Reader, namespace, broker string) ([]v1alpha1.TopicACL, error) {
	var list v1alpha1.TopicACLList
	if err := c.List(ctx, &list, client.InNamespace(namespace), client.MatchingFields{indexBrokerRef: broker}); err != nil {
		return nil, fmt.Errorf("listing the TopicACLs of broker %s: %w", broker, err)
	}
	return list.Items, nil
}

// claimants lists the users of a broker that log in with username.
func claimants(ctx context.Context, c client.Reader, namespace, broker, username string) ([]v1alpha1.MQTTUser, error) {
	var list v1alpha1.MQTTUserList
	if err := c.List(ctx, &list, client.InNamespace(namespace), client.MatchingFields{indexBrokerUsername: brokerUsername(broker, username)}); err != nil {
		return nil, fmt.Errorf("listing the MQTTUsers named %s: %w", username, err)
	}
	return list.Items, nil
}
