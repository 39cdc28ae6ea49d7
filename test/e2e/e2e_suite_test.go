//go:build e2e

// Package e2e runs the operator where users run it: a kind cluster with a
// real kubelet, Services, DNS, probes and rollouts, the operator installed
// by its Helm chart (hack/kind/install-operator.sh, run by make test-e2e).
// Clients reach brokers as an application outside the cluster would:
// through NodePort Services on the node's address.
package e2e

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/mqtt-operator/mqtt-operator/internal/testenv"
)

var (
	k8s    client.Client
	cfg    *rest.Config
	nodeIP string
)

func TestE2E(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "mqtt-operator on kind")
}

var _ = BeforeSuite(func() {
	path := os.Getenv("KUBECONFIG")
	Expect(path).NotTo(BeEmpty(), "KUBECONFIG must point at the kind cluster: run make test-e2e")
	var err error
	cfg, err = clientcmd.BuildConfigFromFlags("", path)
	Expect(err).NotTo(HaveOccurred())
	k8s, err = client.New(cfg, client.Options{Scheme: testenv.Scheme()})
	Expect(err).NotTo(HaveOccurred())

	var nodes corev1.NodeList
	Expect(k8s.List(context.Background(), &nodes)).To(Succeed())
	Expect(nodes.Items).NotTo(BeEmpty())
	for _, a := range nodes.Items[0].Status.Addresses {
		if a.Type == corev1.NodeInternalIP {
			nodeIP = a.Address
		}
	}
	Expect(nodeIP).NotTo(BeEmpty(), "the node has no InternalIP")
	deleteLeftoverNamespaces()
})

// deleteLeftoverNamespaces deletes the e2e-* namespaces an earlier run left
// (a failed run stops before its last spec deletes them) and waits until
// they are gone: their broker pods' CPU requests would keep this run's pods
// Pending on the 2-CPU node.
func deleteLeftoverNamespaces() {
	ctx := context.Background()
	var list corev1.NamespaceList
	Expect(k8s.List(ctx, &list)).To(Succeed())
	var left []string
	for i := range list.Items {
		ns := &list.Items[i]
		if strings.HasPrefix(ns.Name, "e2e-") {
			left = append(left, ns.Name)
			if ns.DeletionTimestamp.IsZero() {
				Expect(client.IgnoreNotFound(k8s.Delete(ctx, ns))).To(Succeed())
			}
		}
	}
	if len(left) == 0 {
		return
	}
	GinkgoWriter.Printf("deleting %d namespaces an earlier run left: %v (up to 3 min)\n", len(left), left)
	Eventually(func() []string {
		var still []string
		for _, name := range left {
			if err := k8s.Get(ctx, client.ObjectKey{Name: name}, &corev1.Namespace{}); err == nil {
				still = append(still, name)
			}
		}
		return still
	}).WithTimeout(3 * time.Minute).WithPolling(2 * time.Second).Should(BeEmpty())
}
