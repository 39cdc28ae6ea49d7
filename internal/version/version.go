// Package version holds build-time facts about the operator, set with
// -ldflags "-X github.com/mqtt-operator/mqtt-operator/internal/version.Version=...".
package version

// Version of the operator, and the tag of the broker image it defaults to.
var Version = "0.1.0-dev"

// BrokerImageRepository is the repository of the default broker image.
var BrokerImageRepository = "mqtt-operator/broker"

// DefaultBrokerImage is the broker image this operator was built and tested with.
func DefaultBrokerImage() string { return BrokerImageRepository + ":" + Version }
