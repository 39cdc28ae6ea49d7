package kubectlmqtt

import (
	"context"
	"flag"
	"fmt"
	"strings"
	"text/tabwriter"

	"k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/mqtt-operator/mqtt-operator/api/v1alpha1"
)

func (p *plugin) users(ctx context.Context, args []string) error {
	var output string
	pos, err := flags("users", args, func(fs *flag.FlagSet) {
		fs.StringVar(&output, "o", "", "wide: add each user's effective permissions")
	}, -1, "users [BROKER] [-o wide]")
	if err != nil {
		return err
	}
	if output != "" && output != "wide" {
		return fmt.Errorf("users: -o %q: only wide is supported", output)
	}
	ns := p.namespace()
	list := &v1alpha1.MQTTUserList{}
	if err := p.c.List(ctx, list, client.InNamespace(ns)); err != nil {
		return p.explain(err, "list", "MQTTUsers", ns)
	}
	w := tabwriter.NewWriter(p.Out, 0, 4, 2, ' ', 0)
	header := "NAMESPACE\tNAME\tUSERNAME\tBROKER\tREADY\tREASON"
	if output == "wide" {
		header += "\tPERMISSIONS"
	}
	_, _ = fmt.Fprintln(w, header)
	n := 0
	for _, u := range list.Items {
		if len(pos) == 1 && u.Spec.BrokerRef.Name != pos[0] {
			continue
		}
		n++
		ready, reason := "Unknown", ""
		if c := meta.FindStatusCondition(u.Status.Conditions, v1alpha1.ConditionReady); c != nil {
			ready, reason = string(c.Status), c.Reason
		}
		line := fmt.Sprintf("%s\t%s\t%s\t%s\t%s\t%s", u.Namespace, u.Name, u.Status.Username, u.Spec.BrokerRef.Name, ready, reason)
		if output == "wide" {
			var perms []string
			for _, r := range u.Status.Permissions {
				perms = append(perms, fmt.Sprintf("%s %s %s (%s)", r.Effect, r.Access, r.Topic, r.ACL))
			}
			if len(perms) == 0 {
				perms = []string{"none: no TopicACL grants this user anything"}
			}
			line += "\t" + strings.Join(perms, "; ")
		}
		_, _ = fmt.Fprintln(w, line)
	}
	if n == 0 {
		_, _ = fmt.Fprintf(p.Out, "no MQTTUsers %s\n", where(ns))
		return nil
	}
	return w.Flush()
}
