// Command metrics-adapter serves the brokers' clients and message rates per
// pod through the Kubernetes custom metrics API (custom.metrics.k8s.io), for
// MQTTBrokers that autoscale on them. The Helm chart runs it next to the
// operator and registers it as an APIService.
package main

import (
	"fmt"
	"os"

	"k8s.io/component-base/logs"
	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/mqtt-operator/mqtt-operator/internal/metricsadapter"
)

func main() {
	logs.InitLogs()
	defer logs.FlushLogs()
	if err := metricsadapter.Run(ctrl.SetupSignalHandler(), os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "metrics-adapter:", err)
		os.Exit(1)
	}
}
