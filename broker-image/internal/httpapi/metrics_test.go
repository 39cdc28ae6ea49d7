package httpapi

import (
	"os"
	"regexp"
	"testing"
)

// A metric collected without a help text has no descriptor, and the panic
// that causes empties /metrics. Every name Collect uses must have one.
func TestEveryCollectedMetricHasHelp(t *testing.T) {
	src, err := os.ReadFile("metrics.go")
	if err != nil {
		t.Fatal(err)
	}
	used := regexp.MustCompile(`(?:counter|gauge)\("([a-z_]+)"`).FindAllStringSubmatch(string(src), -1)
	if len(used) < 20 {
		t.Fatalf("found only %d metric uses in metrics.go; the pattern is out of date", len(used))
	}
	for _, m := range used {
		if _, ok := metricHelp[m[1]]; !ok {
			t.Errorf("metric %s is collected but has no entry in metricHelp", m[1])
		}
	}
}
