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
)

// Env is a running control plane.
type Env struct {
	Config *rest.Config
	Client client.Client
	Scheme *apiruntime.Scheme
	env    *envtest.Environment
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
	cfg, err := env.Start()
	if err != nil {
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
		return nil, fmt.Errorf("creating client: %w", err)
	}
	return &Env{Config: cfg, Client: c, Scheme: scheme, env: env}, nil
}

// Stop ends the control plane.
func (e *Env) Stop() error { return e.env.Stop() }

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

// KubeConfig returns a kubeconfig for an administrator of the control plane,
// usable with kubectl.
func (e *Env) KubeConfig() ([]byte, error) {
	user, err := e.env.ControlPlane.AddUser(envtest.User{Name: "dev-admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return nil, fmt.Errorf("adding kubeconfig user: %w", err)
	}
	return user.KubeConfig()
}
