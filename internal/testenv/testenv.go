// Package testenv starts a real kube-apiserver and etcd (controller-runtime's
// envtest) with this project's CRDs installed. Tests, `make dev` and the
// benchmarks share it. The binaries come from KUBEBUILDER_ASSETS, which the
// Makefile fills with hack/envtest-assets.sh.
package testenv

import (
	"context"
	"errors"
	"fmt"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"os"
	"path/filepath"
	"runtime"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	apiruntime "k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"

	v1alpha1 "github.com/mqtt-operator/mqtt-operator/api/v1alpha1"
	"github.com/mqtt-operator/mqtt-operator/internal/pki"
)

// Env is a running control plane.
type Env struct {
	Config *rest.Config
	Client client.Client
	Scheme *apiruntime.Scheme
	env    *envtest.Environment
	// proxyDir holds the front-proxy certificates kube-apiserver reads.
	proxyDir string
}

// RepoRoot is the module's root directory, found from this source file.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// Scheme knows the built-in kinds and this project's API.
func Scheme() *apiruntime.Scheme {
	s := apiruntime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(s))
	utilruntime.Must(v1alpha1.AddToScheme(s))
	utilruntime.Must(apiextensionsv1.AddToScheme(s))
	return s
}

// Start runs kube-apiserver and etcd with the CRDs from config/crd/bases.
func Start() (*Env, error) {
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		return nil, errors.New("KUBEBUILDER_ASSETS is not set: run through `make test` (or export KUBEBUILDER_ASSETS=$(hack/envtest-assets.sh))")
	}
	env := &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join(RepoRoot(), "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
	}
	proxyDir, err := aggregation(env)
	if err != nil {
		_ = os.RemoveAll(proxyDir)
		return nil, err
	}
	cfg, err := env.Start()
	if err != nil {
		_ = os.RemoveAll(proxyDir)
		// Start fails after launching the processes when, say, a CRD is
		// refused; without Stop they would outlive the test binary.
		_ = env.Stop()
		return nil, fmt.Errorf("starting envtest control plane: %w", err)
	}
	// Benchmarks create hundreds of objects quickly; the default client limits
	// (5 QPS) would measure the client, not the operator.
	cfg.QPS, cfg.Burst = 500, 1000
	scheme := Scheme()
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		_ = env.Stop()
		_ = os.RemoveAll(proxyDir)
		return nil, fmt.Errorf("creating client: %w", err)
	}
	return &Env{Config: cfg, Client: c, Scheme: scheme, env: env, proxyDir: proxyDir}, nil
}

// Stop ends the control plane.
func (e *Env) Stop() error {
	defer func() { _ = os.RemoveAll(e.proxyDir) }()
	return e.env.Stop()
}

// ConfigFor returns a client configuration that authenticates as user, with
// no groups: it can do only what RBAC bindings grant that user. Tests run the
// operator this way to prove config/rbac/role.yaml is enough.
func (e *Env) ConfigFor(user string) (*rest.Config, error) {
	u, err := e.env.ControlPlane.AddUser(envtest.User{Name: user}, e.Config)
	if err != nil {
		return nil, fmt.Errorf("adding user %s: %w", user, err)
	}
	cfg := u.Config()
	cfg.QPS, cfg.Burst = e.Config.QPS, e.Config.Burst
	return cfg, nil
}

// operatorUser is the identity the operator's service account has in a
// cluster.
const operatorUser = "system:serviceaccount:mqtt-operator-system:mqtt-operator"

// OperatorConfig installs config/rbac/role.yaml, binds it to the operator's
// identity and returns a client configuration for that identity: an
// operator run with it can do exactly what the generated ClusterRole
// allows, so a missing RBAC marker fails tests, not a user's installation.
func (e *Env) OperatorConfig() (*rest.Config, error) {
	data, err := os.ReadFile(filepath.Join(RepoRoot(), "config", "rbac", "role.yaml"))
	if err != nil {
		return nil, err
	}
	role := &rbacv1.ClusterRole{}
	if err := yaml.UnmarshalStrict(data, role); err != nil {
		return nil, fmt.Errorf("parsing role.yaml: %w", err)
	}
	ctx := context.Background()
	if err := e.Client.Create(ctx, role); err != nil {
		return nil, fmt.Errorf("installing the operator's ClusterRole: %w", err)
	}
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "mqtt-operator"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: operatorUser}},
	}
	if err := e.Client.Create(ctx, binding); err != nil {
		return nil, fmt.Errorf("binding the operator's ClusterRole: %w", err)
	}
	return e.ConfigFor(operatorUser)
}

// aggregation lets the API server proxy to aggregated APIs (the metrics
// adapter's custom.metrics.k8s.io), as a cluster's does: a front-proxy
// client certificate and the CA that aggregated servers trust it by, and
// routing to a Service's endpoints (the envtest has no kube-proxy).
func aggregation(env *envtest.Environment) (string, error) {
	dir, err := os.MkdirTemp("", "envtest-front-proxy-")
	if err != nil {
		return "", err
	}
	now := time.Now()
	ca, err := pki.NewCA("envtest front-proxy CA", now, 7*24*time.Hour)
	if err != nil {
		return dir, err
	}
	client, err := ca.Issue(pki.Request{CommonName: "front-proxy-client", Client: true, Validity: 7 * 24 * time.Hour}, now)
	if err != nil {
		return dir, err
	}
	files := map[string][]byte{"ca.crt": ca.CertPEM, "client.crt": client.CertPEM, "client.key": client.KeyPEM}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			return dir, err
		}
	}
	args := env.ControlPlane.GetAPIServer().Configure()
	args.Set("requestheader-client-ca-file", filepath.Join(dir, "ca.crt"))
	args.Set("requestheader-allowed-names", "front-proxy-client")
	args.Set("requestheader-username-headers", "X-Remote-User")
	args.Set("requestheader-group-headers", "X-Remote-Group")
	args.Set("requestheader-extra-headers-prefix", "X-Remote-Extra-")
	args.Set("proxy-client-cert-file", filepath.Join(dir, "client.crt"))
	args.Set("proxy-client-key-file", filepath.Join(dir, "client.key"))
	args.Set("enable-aggregator-routing", "true")
	return dir, nil
}

// KubeConfigFor returns a kubeconfig that authenticates as user in groups.
func (e *Env) KubeConfigFor(user string, groups ...string) ([]byte, error) {
	u, err := e.env.ControlPlane.AddUser(envtest.User{Name: user, Groups: groups}, nil)
	if err != nil {
		return nil, fmt.Errorf("adding kubeconfig user %s: %w", user, err)
	}
	return u.KubeConfig()
}

// KubeConfig returns a kubeconfig for an administrator of the control plane,
// usable with kubectl.
func (e *Env) KubeConfig() ([]byte, error) {
	user, err := e.env.ControlPlane.AddUser(envtest.User{Name: "dev-admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return nil, fmt.Errorf("adding kubeconfig user: %w", err)
	}
	return user.KubeConfig()
}
