package controllers

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/mqtt-operator/mqtt-operator/internal/testenv"
)

// The operator's metrics the chart's dashboard queries exist in the
// registry the operator serves (the suite's manager runs the controllers):
// a controller-runtime upgrade that renames one would otherwise leave an
// empty panel. The brokers' metrics are checked against a real broker
// (broker-image, TestAlertsAndDashboardsQueryRealMetrics).
func TestDashboardQueriesOperatorMetricsThatExist(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "charts", "mqtt-operator", "dashboards", "mqtt-brokers.json"))
	if err != nil {
		t.Fatal(err)
	}
	var queried []string
	for _, m := range regexp.MustCompile(`\b(?:controller_runtime|workqueue)_[a-z_]+`).FindAllString(string(data), -1) {
		m = strings.TrimSuffix(m, "_bucket") // a histogram's family is named without it
		if !slices.Contains(queried, m) {
			queried = append(queried, m)
		}
	}
	if len(queried) < 3 {
		t.Fatalf("the dashboard queries only %v of the operator's metrics: the pattern or the dashboard changed", queried)
	}
	// The controllers register most of their metrics once they start; the
	// reconcile time histogram appears with the first reconcile.
	createBroker(t, newNamespace(t), nil)
	eventually(t, 30*time.Second, "the operator's metrics the dashboard queries", func() error {
		families, err := ctrlmetrics.Registry.Gather()
		if err != nil {
			return err
		}
		served := map[string]bool{}
		for _, f := range families {
			served[f.GetName()] = true
		}
		var missing []string
		for _, m := range queried {
			if !served[m] {
				missing = append(missing, m)
			}
		}
		if len(missing) > 0 {
			return fmt.Errorf("the dashboard queries %v, which the operator does not serve", missing)
		}
		return nil
	})
}
