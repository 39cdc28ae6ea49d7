package resources

import (
	"strings"
	"testing"
)

func TestParseLabelsAndScrapeInterval(t *testing.T) {
	got, err := ParseLabels("release=prom, team=iot,")
	if err != nil || len(got) != 2 || got["release"] != "prom" || got["team"] != "iot" {
		t.Errorf("ParseLabels: %v, %v", got, err)
	}
	for in, want := range map[string]string{"release": "want key=value", "bad key=x": "label key", "k=" + strings.Repeat("v", 64): "value"} {
		if _, err := ParseLabels(in); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseLabels(%q): %v, want an error with %q", in, err, want)
		}
	}
	for _, ok := range []string{"", "30s", "1m", "1h30m", "500ms"} {
		if err := ValidScrapeInterval(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"30", "1.5m", "-1s", "30 s"} {
		if err := ValidScrapeInterval(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
