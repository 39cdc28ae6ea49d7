package resources

import (
	"strconv"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	v1alpha1 "github.com/mqtt-operator/mqtt-operator/api/v1alpha1"
	"github.com/mqtt-operator/mqtt-operator/internal/brokerconfig"
)

// brokerUID is the numeric non-root user and group the broker runs as.
const brokerUID = 65532

// terminationGraceSeconds bounds a broker pod's drain on SIGTERM.
const terminationGraceSeconds = 60

// defaultResources apply when spec.resources is empty. An idle connection
// costs the broker about 40 KiB (docs/benchmarks.md), so the memory limit
// holds the default maxConnections of 10,000 (~400 MiB) with room for
// message buffers; one broker still cannot starve a node.
var defaultResources = corev1.ResourceRequirements{
	Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("128Mi")},
	Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("1Gi")},
}

// memoryLimitEnv tells the broker its container memory limit, so the Go
// runtime collects garbage harder as it nears the limit instead of being
// OOM-killed (the broker sets GOMEMLIMIT to 90% of it).
const memoryLimitEnv = "MQTT_BROKER_MEMORY_LIMIT"

// ServiceAccount is the broker pods' identity. Brokers never call the
// Kubernetes API, so its token is not mounted.
func ServiceAccount(b *v1alpha1.MQTTBroker) *corev1.ServiceAccount {
	return &corev1.ServiceAccount{
		ObjectMeta:                   objectMeta(b, ServiceAccountName(b)),
		AutomountServiceAccountToken: ptr.To(false),
	}
}

// PodDisruptionBudget lets voluntary disruptions (node drains) take one broker
// pod at a time. It never blocks a drain of a single-replica broker forever.
func PodDisruptionBudget(b *v1alpha1.MQTTBroker) *policyv1.PodDisruptionBudget {
	return &policyv1.PodDisruptionBudget{
		ObjectMeta: objectMeta(b, b.Name),
		Spec: policyv1.PodDisruptionBudgetSpec{
			MaxUnavailable: ptr.To(intstr.FromInt32(1)),
			Selector:       &metav1.LabelSelector{MatchLabels: SelectorLabels(b)},
		},
	}
}

// StatefulSet runs the broker pods. Pod template changes (image, resources,
// listeners via the restart hash) roll the pods one at a time; everything the
// broker reloads in place stays out of the template.
func StatefulSet(b *v1alpha1.MQTTBroker, cfg *brokerconfig.Config, opts Options) *appsv1.StatefulSet {
	image := b.Spec.Image
	if image == "" {
		image = opts.BrokerImage
	}
	res := b.Spec.Resources
	if len(res.Requests) == 0 && len(res.Limits) == 0 {
		res = defaultResources
	}
	podLabels := commonLabels(b)
	for k, v := range b.Spec.Pod.Labels {
		if _, reserved := podLabels[k]; !reserved {
			podLabels[k] = v
		}
	}
	podAnnotations := map[string]string{AnnotationRestartHash: cfg.RestartHash()}
	for k, v := range b.Spec.Pod.Annotations {
		if k != AnnotationRestartHash {
			podAnnotations[k] = v
		}
	}
	ports := []corev1.ContainerPort{}
	for _, l := range enabledListeners(b) {
		ports = append(ports, corev1.ContainerPort{Name: l.name, ContainerPort: l.port, Protocol: corev1.ProtocolTCP})
	}
	ports = append(ports,
		corev1.ContainerPort{Name: healthPortName, ContainerPort: v1alpha1.HealthPort, Protocol: corev1.ProtocolTCP},
		corev1.ContainerPort{Name: adminPortName, ContainerPort: v1alpha1.AdminPort, Protocol: corev1.ProtocolTCP},
	)
	probe := func(path string, period, failures int32) *corev1.Probe {
		return &corev1.Probe{
			ProbeHandler:     corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: path, Port: intstr.FromString(healthPortName)}},
			PeriodSeconds:    period,
			FailureThreshold: failures,
			TimeoutSeconds:   2,
		}
	}
	container := corev1.Container{
		Name:            "broker",
		Image:           image,
		ImagePullPolicy: b.Spec.ImagePullPolicy,
		Args: []string{
			"--config=" + configDir + "/" + brokerconfig.FileName,
			"--auth-bundle=" + authDir + "/" + brokerconfig.BundleFileName,
			"--admin-token-file=" + adminDir + "/" + AdminTokenKey,
			// The drain takes its period plus at most 10 s (handing the
			// last persistent sessions over): 5 s of the grace are left.
			"--drain-period=" + strconv.Itoa(terminationGraceSeconds-15) + "s",
			// A broker created again under the same name gets the old one's
			// volume: its cached auth bundle must not be used.
			"--incarnation=" + string(b.UID),
		},
		Ports: ports,
		Env: []corev1.EnvVar{{Name: memoryLimitEnv, ValueFrom: &corev1.EnvVarSource{
			ResourceFieldRef: &corev1.ResourceFieldSelector{ContainerName: "broker", Resource: "limits.memory"},
		}}},
		Resources:      res,
		ReadinessProbe: probe("/readyz", 5, 2),
		LivenessProbe:  probe("/healthz", 10, 3),
		StartupProbe:   startupProbe(probe("/healthz", 1, 30)),
		SecurityContext: &corev1.SecurityContext{
			RunAsNonRoot:             ptr.To(true),
			ReadOnlyRootFilesystem:   ptr.To(true),
			AllowPrivilegeEscalation: ptr.To(false),
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
			SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		},
		VolumeMounts: []corev1.VolumeMount{
			{Name: "config", MountPath: configDir, ReadOnly: true},
			{Name: "auth", MountPath: authDir, ReadOnly: true},
			{Name: "admin", MountPath: adminDir, ReadOnly: true},
			{Name: "data", MountPath: dataDir},
			{Name: "tmp", MountPath: "/tmp"},
		},
	}
	volumes := []corev1.Volume{
		{Name: "config", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
			LocalObjectReference: corev1.LocalObjectReference{Name: ConfigMapName(b)},
		}}},
		// Secret files readable by the broker's group (fsGroup), no one else.
		{Name: "auth", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
			SecretName: AuthSecretName(b), DefaultMode: ptr.To(int32(0o440)),
		}}},
		{Name: "admin", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
			SecretName: AdminSecretName(b), DefaultMode: ptr.To(int32(0o440)),
		}}},
		{Name: "tmp", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{SizeLimit: ptr.To(resource.MustParse("64Mi"))}}},
	}
	if cfg.Cluster != nil {
		addClusterMember(&container, &volumes, b)
	}
	if TLSEnabled(b) {
		container.VolumeMounts = append(container.VolumeMounts, corev1.VolumeMount{Name: "tls", MountPath: tlsDir, ReadOnly: true})
		volumes = append(volumes, corev1.Volume{Name: "tls", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
			SecretName: TLSSecretName(b), DefaultMode: ptr.To(int32(0o440)),
		}}})
	}
	var claims []corev1.PersistentVolumeClaim
	if b.Spec.Storage.Type == v1alpha1.StoragePersistent {
		claims = []corev1.PersistentVolumeClaim{dataClaim(b)}
	} else {
		volumes = append(volumes, corev1.Volume{Name: "data", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}})
	}
	return &appsv1.StatefulSet{
		ObjectMeta: objectMeta(b, StatefulSetName(b)),
		Spec: appsv1.StatefulSetSpec{
			Replicas:            ptr.To(Replicas(b)),
			ServiceName:         HeadlessServiceName(b),
			PodManagementPolicy: appsv1.ParallelPodManagement,
			Selector:            &metav1.LabelSelector{MatchLabels: SelectorLabels(b)},
			UpdateStrategy:      appsv1.StatefulSetUpdateStrategy{Type: appsv1.RollingUpdateStatefulSetStrategyType},
			// Broker state must outlive scale-downs and deletions: an
			// acknowledged message is never thrown away by the operator.
			PersistentVolumeClaimRetentionPolicy: &appsv1.StatefulSetPersistentVolumeClaimRetentionPolicy{
				WhenDeleted: appsv1.RetainPersistentVolumeClaimRetentionPolicyType,
				WhenScaled:  appsv1.RetainPersistentVolumeClaimRetentionPolicyType,
			},
			VolumeClaimTemplates: claims,
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: podLabels, Annotations: podAnnotations},
				Spec: corev1.PodSpec{
					ServiceAccountName:            ServiceAccountName(b),
					AutomountServiceAccountToken:  ptr.To(false),
					EnableServiceLinks:            ptr.To(false),
					TerminationGracePeriodSeconds: ptr.To(int64(terminationGraceSeconds)),
					SecurityContext: &corev1.PodSecurityContext{
						RunAsNonRoot:   ptr.To(true),
						RunAsUser:      ptr.To(int64(brokerUID)),
						RunAsGroup:     ptr.To(int64(brokerUID)),
						FSGroup:        ptr.To(int64(brokerUID)),
						SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
					},
					Containers:                []corev1.Container{container},
					Volumes:                   volumes,
					NodeSelector:              b.Spec.Pod.NodeSelector,
					Tolerations:               b.Spec.Pod.Tolerations,
					Affinity:                  b.Spec.Pod.Affinity,
					TopologySpreadConstraints: b.Spec.Pod.TopologySpreadConstraints,
					PriorityClassName:         b.Spec.Pod.PriorityClassName,
				},
			},
		},
	}
}

// addClusterMember gives a clustered broker's container what it needs to
// join its peers: the cluster port, its pod name as its node name (one
// ConfigMap serves every pod) and the cluster Secret. None of it depends on
// the number of replicas, so scaling leaves the pod template alone.
func addClusterMember(c *corev1.Container, volumes *[]corev1.Volume, b *v1alpha1.MQTTBroker) {
	c.Ports = append(c.Ports, corev1.ContainerPort{Name: clusterPortName, ContainerPort: ClusterPort, Protocol: corev1.ProtocolTCP})
	c.Env = append(c.Env, corev1.EnvVar{Name: brokerconfig.NodeNameEnv, ValueFrom: &corev1.EnvVarSource{
		FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "metadata.name"},
	}})
	c.VolumeMounts = append(c.VolumeMounts, corev1.VolumeMount{Name: "cluster", MountPath: clusterDir, ReadOnly: true})
	*volumes = append(*volumes, corev1.Volume{Name: "cluster", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
		SecretName: ClusterSecretName(b), DefaultMode: ptr.To(int32(0o440)),
	}}})
}

// Replicas is the number of broker pods the spec asks for.
func Replicas(b *v1alpha1.MQTTBroker) int32 { return valueOr(b.Spec.Replicas, 1) }

func dataClaim(b *v1alpha1.MQTTBroker) corev1.PersistentVolumeClaim {
	size := resource.MustParse("1Gi")
	if b.Spec.Storage.Size != nil {
		size = *b.Spec.Storage.Size
	}
	return corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: "data", Labels: SelectorLabels(b)},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			StorageClassName: b.Spec.Storage.StorageClassName,
			Resources:        corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: size}},
		},
	}
}

// startupProbeDelay is how long after the container starts the first startup
// probe comes. The broker opens its health port 130-370 ms after exec on a
// loaded 2-core machine (measured, --allow-anonymous); probed earlier, a
// healthy start logs a "Startup probe failed ... connection refused" Warning
// event. The kubelet compares whole seconds, so 2 s leaves a margin above 1.
const startupProbeDelay = 2

// startupProbe delays the first probe past the broker's start; the budget
// (delay + period x failures, 32 s) stays above the 30 s it was.
func startupProbe(p *corev1.Probe) *corev1.Probe {
	p.InitialDelaySeconds = startupProbeDelay
	return p
}
