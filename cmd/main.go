// Command manager runs the mqtt-operator controllers.
package main

import (
	"flag"
	"os"
	"strings"

	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	v1alpha1 "github.com/mqtt-operator/mqtt-operator/api/v1alpha1"
	"github.com/mqtt-operator/mqtt-operator/controllers"
	"github.com/mqtt-operator/mqtt-operator/internal/brokerpolicy"
	"github.com/mqtt-operator/mqtt-operator/internal/memlimit"
	"github.com/mqtt-operator/mqtt-operator/internal/resources"
	"github.com/mqtt-operator/mqtt-operator/internal/version"
)

// memoryLimitEnv carries the container's memory limit in bytes (the pod's
// downward API); the operator sets its Go memory limit to 90% of it.
const memoryLimitEnv = "MQTT_OPERATOR_MEMORY_LIMIT"

func main() {
	var (
		metricsAddr, probeAddr, brokerImage, watchNamespaces, operatorNamespace, clusterDomain string
		allowedImages, allowedPriorityClasses, allowedTolerationKeys                           string
		podMonitorLabels, podMonitorInterval                                                   string
		leaderElect                                                                            bool
		concurrency, burst                                                                     int
		qps                                                                                    float64
	)
	flag.StringVar(&metricsAddr, "metrics-bind-address", ":8080", "address of the Prometheus metrics endpoint; 0 turns it off")
	flag.StringVar(&probeAddr, "health-probe-bind-address", ":8081", "address of /healthz and /readyz")
	flag.BoolVar(&leaderElect, "leader-elect", false, "elect a leader so that only one replica reconciles at a time")
	flag.StringVar(&brokerImage, "broker-image", version.DefaultBrokerImage(), "broker image for MQTTBrokers that do not set spec.image")
	flag.StringVar(&allowedImages, "allowed-broker-images", "",
		"comma-separated images MQTTBrokers may set in spec.image: an image, a repository (any tag or digest), or a prefix ending in '*'; empty allows only the repository of --broker-image")
	flag.StringVar(&allowedPriorityClasses, "allowed-priority-classes", "", "comma-separated priority classes broker pods may use; '*' allows any; empty allows none")
	flag.StringVar(&allowedTolerationKeys, "allowed-toleration-keys", "",
		"comma-separated taint keys broker pods may tolerate; '*' allows any, including tolerating every taint; empty allows none")
	flag.StringVar(&watchNamespaces, "watch-namespaces", "", "comma-separated namespaces to watch; empty watches all")
	flag.StringVar(&operatorNamespace, "operator-namespace", os.Getenv("POD_NAMESPACE"),
		"namespace the operator runs in; only its pods may reach broker admin ports")
	flag.StringVar(&clusterDomain, "cluster-domain", resources.DefaultClusterDomain, "DNS suffix of Services in this cluster, for the names in broker server certificates")
	flag.StringVar(&podMonitorLabels, "pod-monitor-labels", "", "comma-separated key=value labels on every broker's PodMonitor (those your Prometheus selects monitors by)")
	flag.StringVar(&podMonitorInterval, "pod-monitor-interval", "30s", "scrape interval of the brokers' PodMonitors; empty for Prometheus' own")
	flag.IntVar(&concurrency, "max-concurrent-reconciles", 4, "brokers reconciled in parallel")
	// Each MQTTUser costs a connection Secret and a few status writes, so
	// client-go's defaults (5/10) would take an hour for 10,000 users; the
	// API server's priority and fairness still protects everyone else.
	flag.Float64Var(&qps, "kube-api-qps", 200, "sustained requests per second to the Kubernetes API")
	flag.IntVar(&burst, "kube-api-burst", 400, "burst of requests to the Kubernetes API")
	zapOpts := zap.Options{}
	zapOpts.BindFlags(flag.CommandLine)
	flag.Parse()
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&zapOpts)))
	log := ctrl.Log.WithName("setup")
	if limit, err := memlimit.Apply(memoryLimitEnv); err != nil {
		log.Error(err, "no Go memory limit set")
	} else if limit > 0 {
		log.Info("Go memory limit set from the container limit", "goMemLimitBytes", limit)
	}

	monitorLabels, err := resources.ParseLabels(podMonitorLabels)
	if err == nil {
		err = resources.ValidScrapeInterval(podMonitorInterval)
	}
	if err != nil {
		log.Error(err, "invalid --pod-monitor-labels or --pod-monitor-interval")
		os.Exit(1)
	}

	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(v1alpha1.AddToScheme(scheme))

	var namespaces []string
	for _, ns := range strings.Split(watchNamespaces, ",") {
		if ns = strings.TrimSpace(ns); ns != "" {
			namespaces = append(namespaces, ns)
		}
	}
	restConfig := ctrl.GetConfigOrDie()
	restConfig.QPS, restConfig.Burst = float32(qps), burst
	mgr, err := ctrl.NewManager(restConfig, ctrl.Options{
		Scheme:                 scheme,
		Metrics:                metricsserver.Options{BindAddress: metricsAddr},
		HealthProbeBindAddress: probeAddr,
		LeaderElection:         leaderElect,
		LeaderElectionID:       "mqtt-operator.broker.mqtt-operator.io",
		Cache:                  controllers.CacheOptions(namespaces),
	})
	if err != nil {
		log.Error(err, "creating manager")
		os.Exit(1)
	}
	if err := controllers.Setup(mgr, controllers.Config{
		Options: resources.Options{BrokerImage: brokerImage, OperatorNamespace: operatorNamespace, ClusterDomain: clusterDomain,
			PodMonitorLabels: monitorLabels, PodMonitorInterval: podMonitorInterval},
		Concurrency: concurrency,
		Namespaces:  namespaces,
		BrokerPolicy: brokerpolicy.Policy{
			Images: brokerpolicy.ParseList(allowedImages), PriorityClasses: brokerpolicy.ParseList(allowedPriorityClasses),
			TolerationKeys: brokerpolicy.ParseList(allowedTolerationKeys),
		},
	}); err != nil {
		log.Error(err, "setting up the controllers")
		os.Exit(1)
	}
	utilruntime.Must(mgr.AddHealthzCheck("healthz", healthz.Ping))
	utilruntime.Must(mgr.AddReadyzCheck("readyz", healthz.Ping))

	log.Info("starting mqtt-operator", "version", version.Version, "brokerImage", brokerImage, "namespaces", namespaces)
	if err := mgr.Start(ctrl.SetupSignalHandler()); err != nil {
		log.Error(err, "running manager")
		os.Exit(1)
	}
}
