// Package testenv starts a real kube-apiserver and etcd (controller-runtime's
// envtest) with this project's CRDs installed. Tests, `make dev` and the
// benchmarks share it. The binaries come from KUBEBUILDER_ASSETS, which the
// Makefile fills with hack/envtest-assets.sh.
package testenv

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"

	apiruntime "k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

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

// KubeConfig returns a kubeconfig for an administrator of the control plane,
// usable with kubectl.
func (e *Env) KubeConfig() ([]byte, error) {
	user, err := e.env.ControlPlane.AddUser(envtest.User{Name: "dev-admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return nil, fmt.Errorf("adding kubeconfig user: %w", err)
	}
	return user.KubeConfig()
}
