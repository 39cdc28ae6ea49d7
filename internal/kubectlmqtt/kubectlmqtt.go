// Package kubectlmqtt is the kubectl mqtt plugin (cmd/kubectl-mqtt): brokers
// and their pods at a glance with live figures, users and their effective
// permissions, and publish/subscribe as a given MQTTUser.
package kubectlmqtt

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/mqtt-operator/mqtt-operator/api/v1alpha1"
)

// Usage is the plugin's help.
const Usage = `kubectl mqtt: the brokers of mqtt-operator

Commands:
  status [BROKER]                    brokers and their pods: ready, clients, messages/s in and out, the auth bundle each pod enforces
  users [BROKER]                     MQTTUsers: username, broker, Ready and why, effective permissions (-o wide)
  pub --as USER TOPIC MESSAGE        publish as the MQTTUser USER (its connection Secret; the password is never printed)
  sub --as USER FILTER               subscribe as USER and print messages as "topic payload"

Flags (before the command): --kubeconfig, --context, -n/--namespace, -A/--all-namespaces,
  --direct (dial pods by IP instead of through a port-forward: from inside the cluster)
Run "kubectl mqtt COMMAND -h" for a command's flags.
`

// Env is where the plugin runs: the cluster, the namespace, and its output.
type Env struct {
	Config        *rest.Config
	Namespace     string
	AllNamespaces bool
	// Direct dials pods by IP; otherwise pub and sub go through a
	// port-forward, as kubectl port-forward does.
	Direct   bool
	Out, Err io.Writer
}

type plugin struct {
	Env
	c  client.Client
	cs kubernetes.Interface
}

// Run runs one command with its arguments.
func Run(ctx context.Context, env Env, args []string) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		_, _ = io.WriteString(env.Out, Usage)
		return nil
	}
	scheme := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(scheme)
	_ = v1alpha1.AddToScheme(scheme)
	c, err := client.New(env.Config, client.Options{Scheme: scheme})
	if err != nil {
		return fmt.Errorf("connecting to the cluster: %w", err)
	}
	cs, err := kubernetes.NewForConfig(env.Config)
	if err != nil {
		return fmt.Errorf("connecting to the cluster: %w", err)
	}
	p := &plugin{Env: env, c: c, cs: cs}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "status":
		return p.status(ctx, rest)
	case "users":
		return p.users(ctx, rest)
	case "pub":
		return p.pub(ctx, rest)
	case "sub":
		return p.sub(ctx, rest)
	default:
		return fmt.Errorf("unknown command %q; commands: status, users, pub, sub", cmd)
	}
}

// flags parses a command's flags, allowing them after the arguments too.
func flags(name string, args []string, define func(*flag.FlagSet), nargs int, usage string) ([]string, error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	define(fs)
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, fmt.Errorf("%s: %w\nusage: kubectl mqtt %s", name, err, usage)
		}
		args = fs.Args()
		if len(args) == 0 {
			break
		}
		positional, args = append(positional, args[0]), args[1:]
	}
	if nargs >= 0 && len(positional) != nargs || nargs < 0 && len(positional) > -nargs {
		return nil, fmt.Errorf("usage: kubectl mqtt %s", usage)
	}
	return positional, nil
}

// explain turns an API refusal into what the user lacks.
func (p *plugin) explain(err error, verb, what, ns string) error {
	if err == nil {
		return nil
	}
	where := "in namespace " + ns
	if ns == "" {
		where = "in any namespace"
	}
	switch {
	case apierrors.IsForbidden(err):
		return fmt.Errorf("you may not %s %s %s: ask your cluster admin for that right (RBAC), or use a namespace you have it in", verb, what, where)
	case apierrors.IsNotFound(err):
		return fmt.Errorf("%s not found %s", what, where)
	}
	return fmt.Errorf("%s %s %s: %w", verb, what, where, err)
}

func (p *plugin) namespace() string {
	if p.AllNamespaces {
		return ""
	}
	return p.Namespace
}

// errTimeout ends sub when its --timeout passes without enough messages.
var errTimeout = errors.New("timed out")
