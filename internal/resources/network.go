package resources

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	v1alpha1 "github.com/mqtt-operator/mqtt-operator/api/v1alpha1"
	"github.com/mqtt-operator/mqtt-operator/internal/brokerconfig"
)

const (
	healthPortName = "health"
	adminPortName  = "admin"
)

func listenerServicePorts(b *v1alpha1.MQTTBroker) []corev1.ServicePort {
	var ports []corev1.ServicePort
	for _, l := range enabledListeners(b) {
		ports = append(ports, corev1.ServicePort{
			Name: l.name, Protocol: corev1.ProtocolTCP, Port: l.port, TargetPort: intstr.FromString(l.name),
		})
	}
	return ports
}

// ClientService is what MQTT clients connect to.
func ClientService(b *v1alpha1.MQTTBroker) *corev1.Service {
	meta := objectMeta(b, ClientServiceName(b))
	meta.Annotations = b.Spec.Service.Annotations
	svcType := b.Spec.Service.Type
	if svcType == "" {
		svcType = corev1.ServiceTypeClusterIP
	}
	return &corev1.Service{
		ObjectMeta: meta,
		Spec: corev1.ServiceSpec{
			Type:     svcType,
			Selector: SelectorLabels(b),
			Ports:    listenerServicePorts(b),
		},
	}
}

// HeadlessService gives each broker pod a stable DNS name. It publishes pods
// before they are ready so the operator can reach a starting pod's admin API
// and, in a clustered broker (cfg has a cluster section), so starting pods
// find each other: a pod is ready only once it has joined the mesh.
func HeadlessService(b *v1alpha1.MQTTBroker, cfg *brokerconfig.Config) *corev1.Service {
	ports := append(listenerServicePorts(b), corev1.ServicePort{
		Name: adminPortName, Protocol: corev1.ProtocolTCP, Port: v1alpha1.AdminPort, TargetPort: intstr.FromString(adminPortName),
	})
	if cfg.Cluster != nil {
		ports = append(ports, corev1.ServicePort{
			Name: clusterPortName, Protocol: corev1.ProtocolTCP, Port: ClusterPort, TargetPort: intstr.FromString(clusterPortName),
		})
	}
	return &corev1.Service{
		ObjectMeta: objectMeta(b, HeadlessServiceName(b)),
		Spec: corev1.ServiceSpec{
			Type:                     corev1.ServiceTypeClusterIP,
			ClusterIP:                corev1.ClusterIPNone,
			PublishNotReadyAddresses: true,
			Selector:                 SelectorLabels(b),
			Ports:                    ports,
		},
	}
}

// NetworkPolicy admits MQTT clients and metrics scrapers from anywhere, the
// admin API only from the operator's own pods and, in a clustered broker,
// the cluster port only from the pods of this same broker: the pod selector
// names its instance, so another broker's pods in the namespace are not let
// in (their certificates and password would not be accepted either).
func NetworkPolicy(b *v1alpha1.MQTTBroker, cfg *brokerconfig.Config, opts Options) *networkingv1.NetworkPolicy {
	tcp := ptr.To(corev1.ProtocolTCP)
	var public []networkingv1.NetworkPolicyPort
	for _, l := range enabledListeners(b) {
		public = append(public, networkingv1.NetworkPolicyPort{Protocol: tcp, Port: ptr.To(intstr.FromInt32(l.port))})
	}
	public = append(public, networkingv1.NetworkPolicyPort{Protocol: tcp, Port: ptr.To(intstr.FromInt32(v1alpha1.HealthPort))})
	rules := []networkingv1.NetworkPolicyIngressRule{{Ports: public}}
	if opts.OperatorNamespace != "" {
		rules = append(rules, networkingv1.NetworkPolicyIngressRule{
			Ports: []networkingv1.NetworkPolicyPort{{Protocol: tcp, Port: ptr.To(intstr.FromInt32(v1alpha1.AdminPort))}},
			From: []networkingv1.NetworkPolicyPeer{{
				NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": opts.OperatorNamespace}},
				PodSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{LabelName: OperatorName}},
			}},
		})
	}
	if cfg.Cluster != nil {
		rules = append(rules, networkingv1.NetworkPolicyIngressRule{
			Ports: []networkingv1.NetworkPolicyPort{{Protocol: tcp, Port: ptr.To(intstr.FromInt32(ClusterPort))}},
			From:  []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: SelectorLabels(b)}}},
		})
	}
	return &networkingv1.NetworkPolicy{
		ObjectMeta: objectMeta(b, b.Name),
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: SelectorLabels(b)},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
			Ingress:     rules,
		},
	}
}

// Endpoints are the in-cluster addresses of the enabled listeners, for status.
func Endpoints(b *v1alpha1.MQTTBroker) []v1alpha1.Endpoint {
	host := fmt.Sprintf("%s.%s.svc", ClientServiceName(b), b.Namespace)
	scheme := map[string]string{"mqtt": "mqtt", "mqtts": "mqtts", "ws": "ws", "wss": "wss"}
	path := map[string]string{"ws": "/mqtt", "wss": "/mqtt"}
	var out []v1alpha1.Endpoint
	for _, l := range enabledListeners(b) {
		out = append(out, v1alpha1.Endpoint{
			Name: l.protocol, Host: host, Port: l.port,
			URL: fmt.Sprintf("%s://%s:%d%s", scheme[l.name], host, l.port, path[l.name]),
		})
	}
	return out
}
