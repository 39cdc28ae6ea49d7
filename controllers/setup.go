package controllers

import (
	"context"
	"time"

	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/mqtt-operator/mqtt-operator/internal/brokerpolicy"
	"github.com/mqtt-operator/mqtt-operator/internal/resources"
)

// Config is what the operator's controllers need to run.
type Config struct {
	// Options are the builders' operator-wide settings.
	Options resources.Options
	// Concurrency is how many objects of each kind reconcile in parallel.
	Concurrency int
	// Clock decides certificate renewals and CA rollovers; nil is the
	// system clock. Tests move it instead of waiting.
	Clock func() time.Time
	// BrokerPolicy is what MQTTBrokers may ask for beyond their tenant:
	// images, priority classes, tolerations. The zero value allows only
	// the default broker image.
	BrokerPolicy brokerpolicy.Policy
	// Namespaces the operator watches, as given to CacheOptions; nil is
	// all. The Secret metadata informer lists only these, so namespaced
	// mode needs no cluster-wide right.
	Namespaces []string
}

// Setup registers every controller of the operator with mgr. The operator's
// main, make dev, the tests and the benchmarks all start the operator
// through it, so they run the same thing.
func Setup(mgr ctrl.Manager, cfg Config) error {
	_, err := setup(mgr, cfg)
	return err
}

// setup is Setup, returning the operator's Secret reader for tests to
// look into.
func setup(mgr ctrl.Manager, cfg Config) (secretReader, error) {
	var secrets secretReader
	if err := registerIndexes(context.Background(), mgr); err != nil {
		return secrets, err
	}
	secretEvents, err := newSecretMetadataCache(mgr, cfg.Namespaces)
	if err != nil {
		return secrets, err
	}
	secrets = secretReader{cached: mgr.GetClient(), metadata: secretEvents, api: mgr.GetAPIReader()}
	enforcement := NewEnforcement()
	recorder := mgr.GetEventRecorder(resources.OperatorName)
	if err := (&MQTTBrokerReconciler{
		Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Recorder: recorder,
		Options: cfg.Options, Policy: cfg.BrokerPolicy, Enforcement: enforcement, Clock: cfg.Clock,
		secrets: secrets, secretEvents: secretEvents,
	}).SetupWithManager(mgr, cfg.Concurrency); err != nil {
		return secrets, err
	}
	if err := (&MQTTUserReconciler{
		Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Recorder: recorder, Enforcement: enforcement, Clock: cfg.Clock,
		secrets: secrets, secretEvents: secretEvents,
	}).SetupWithManager(mgr, cfg.Concurrency); err != nil {
		return secrets, err
	}
	return secrets, (&TopicACLReconciler{
		Client: mgr.GetClient(), Recorder: recorder, Enforcement: enforcement,
	}).SetupWithManager(mgr, cfg.Concurrency)
}
