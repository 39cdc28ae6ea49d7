package integration

import (
	"context"
	"errors"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/mqtt-operator/mqtt-operator/api/v1alpha1"
	"github.com/mqtt-operator/mqtt-operator/test/mqtttest"
)

// credentials are what an application reads from its connection Secret.
type credentials = mqtttest.Credentials

func connectionSecret(t *testing.T, ns, name string) credentials {
	t.Helper()
	var s corev1.Secret
	if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, &s); err != nil {
		t.Fatalf("connection Secret %s: %v", name, err)
	}
	return credentials{Username: string(s.Data["username"]), Password: string(s.Data["password"])}
}

// readyReason returns the reason of an object's Ready condition.
func readyReason(t *testing.T, ns, name string, obj client.Object) (string, error) {
	t.Helper()
	if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, obj); err != nil {
		return "", err
	}
	var conds []metav1.Condition
	switch o := obj.(type) {
	case *v1alpha1.MQTTUser:
		conds = o.Status.Conditions
	case *v1alpha1.TopicACL:
		conds = o.Status.Conditions
	case *v1alpha1.MQTTBroker:
		conds = o.Status.Conditions
	default:
		return "", errors.New("no conditions")
	}
	for _, c := range conds {
		if c.Type == v1alpha1.ConditionReady {
			return c.Reason, nil
		}
	}
	return "", errors.New("no Ready condition")
}
