// Package localpods runs the operator's broker pods as local processes, so
// the whole path (YAML, operator, StatefulSet, pod, broker, MQTT client) can
// be tested on envtest, which has no kubelet and no StatefulSet controller.
// The harness stands in for both.
//
// As the StatefulSet controller, for every StatefulSet labelled
// app.kubernetes.io/managed-by=mqtt-operator, it creates the Pods
// <sts>-0..N-1 from the template (controller reference, template labels and
// annotations, the controller-revision-hash, pod-name and pod-index labels,
// a PersistentVolumeClaim volume per claim template), deletes pods above
// spec.replicas, rolls template changes one pod at a time (highest ordinal
// first, each replacement Ready before the next), and reports status:
// observedGeneration, replicas, readyReplicas, availableReplicas,
// currentReplicas, updatedReplicas, currentRevision and updateRevision (a hash
// of the pod template).
//
// As the kubelet, it binds every pod to one "node" and runs the first
// container of each pod as a process of Options.BrokerBinary on the pod's own
// loopback address 127.0.0.N (N from 2; Linux routes all of 127/8 to lo). The
// files the pod mounts are materialised under Options.WorkDir: ConfigMap and
// Secret volumes exactly as the kubelet writes them (a timestamped directory,
// an atomic rename of the "..data" symlink, one symlink per key) and kept in
// sync with their sources Options.VolumeSyncDelay after a change; the
// emptyDirs and volumes live and die with the pod; a claim's directory
// outlives it (and scaling to zero), as a PersistentVolumeClaim does. A pod
// whose ConfigMap or Secret does not exist yet stays Pending and starts when
// it appears. Container args that are paths under a mount ("--config=/etc/...")
// are rewritten to the materialised paths. A process that exits is restarted
// in place (restartCount+1, exit code 128+signal in lastState); a deleted pod
// gets SIGTERM, SIGKILL after its grace period, and is replaced by a new pod
// (new UID, restartCount 0). Pod status follows the kubelet: phase, podIP(s),
// hostIP 127.0.0.1, startTime, conditions, and a container status whose ID
// changes with every process and whose readiness follows the container's
// HTTP readiness probe, polled every 200 ms.
//
// # The one change to what the operator rendered
//
// A ConfigMap key named broker.yaml is rewritten when it is materialised:
// every address in it (listeners, healthAddress, adminAddress) binds the
// pod's IP ("127.0.0.N:1883" instead of ":1883"), and storage and TLS paths
// point at the materialised volumes. In a cluster each pod has its own network
// namespace; here all pods share the host's, so binding all addresses would
// make the second broker's ports collide. This is a harness-only difference:
// the broker binary is unchanged and sees a configuration that differs only in
// those addresses and paths. A broker.yaml the broker would refuse is written
// unchanged, so the broker refuses it as it would in a pod.
//
// # What it does not simulate
//
//   - Services and DNS: clients connect to PodAddr directly; no kube-proxy,
//     no load balancing, no headless-service names.
//   - NetworkPolicy: every process can reach every other.
//   - Liveness and startup probes, exec and TCP probes, probe periods and
//     initial delays (readiness is polled every 200 ms with the probe's
//     thresholds and timeout).
//   - Resource requests and limits, OOM kills, CPU throttling; securityContext
//     (the process runs as the test's user, with a writable file system).
//   - Scheduling: one node, no affinity, tolerations or topology spreading;
//     PodDisruptionBudgets are not consulted.
//   - Images: every pod runs BrokerBinary, whatever image or command the
//     container names. Only the first container runs; init containers and
//     sidecars do not.
//   - Environment: literal values and the fieldRef values a pod knows
//     (metadata.name/namespace/uid, spec.nodeName, status.podIP/hostIP) only;
//     resourceFieldRef (MQTT_BROKER_MEMORY_LIMIT) and Secret/ConfigMap key
//     references are skipped, $(VAR) is not expanded.
//   - Volumes other than ConfigMap, Secret, emptyDir and claims are empty
//     directories; no PersistentVolumeClaim or ControllerRevision objects are
//     created; subPath mounts of ConfigMaps and Secrets follow updates here,
//     where a kubelet's do not.
//   - StatefulSet details: OrderedReady pod management (pods are always
//     handled in parallel), rollingUpdate.partition and maxUnavailable above
//     1, minReadySeconds, the claim retention policy (claims are always kept).
//   - Timing: the kubelet's sync period and cache delays are replaced by
//     VolumeSyncDelay alone; CrashLoopBackOff starts at 200 ms (not 10 s) and
//     caps at 10 s (not 5 min).
//   - Addresses: a re-created pod keeps its IP (like its DNS name on a
//     cluster), where a real one would usually get a new IP.
//   - Node loss: Stop behaves like a graceful node shutdown (processes
//     stopped, pods reported terminated and not ready), never like a node
//     that vanishes.
//
// It needs Linux (127/8 on lo, a parent-death signal so no broker outlives
// the test binary). Addresses are locked across processes under
// $TMPDIR/mqtt-operator-localpods-ips, so test binaries running in parallel
// never share one.
package localpods
