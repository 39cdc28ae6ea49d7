// Command kubectl-mqtt is the kubectl plugin of mqtt-operator: copy it onto
// the PATH and run `kubectl mqtt`. See internal/kubectlmqtt.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strings"

	"k8s.io/client-go/tools/clientcmd"

	"github.com/mqtt-operator/mqtt-operator/internal/kubectlmqtt"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	overrides := &clientcmd.ConfigOverrides{}
	env := kubectlmqtt.Env{Out: os.Stdout, Err: os.Stderr}
	// Global flags come before the command, as with kubectl.
	value := func(i *int, name string) (string, error) {
		if *i+1 >= len(args) {
			return "", fmt.Errorf("%s needs a value", name)
		}
		*i++
		return args[*i], nil
	}
	var rest []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		name, inline, hasInline := strings.Cut(a, "=")
		get := func() (string, error) {
			if hasInline {
				return inline, nil
			}
			return value(&i, name)
		}
		var err error
		switch name {
		case "--kubeconfig":
			rules.ExplicitPath, err = get()
		case "--context":
			overrides.CurrentContext, err = get()
		case "-n", "--namespace":
			overrides.Context.Namespace, err = get()
		case "-A", "--all-namespaces":
			env.AllNamespaces = true
		case "--direct":
			env.Direct = true
		default:
			rest = args[i:]
			i = len(args)
		}
		if err != nil {
			return err
		}
	}
	if len(rest) == 0 || rest[0] == "-h" || rest[0] == "--help" || rest[0] == "help" {
		fmt.Print(kubectlmqtt.Usage)
		return nil
	}
	cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, overrides)
	cfg, err := cc.ClientConfig()
	if err != nil {
		return fmt.Errorf("no cluster to talk to: %w", err)
	}
	if env.Namespace, _, err = cc.Namespace(); err != nil {
		return err
	}
	env.Config = cfg
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	return kubectlmqtt.Run(ctx, env, rest)
}
