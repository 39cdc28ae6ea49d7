package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	pahov3 "github.com/eclipse/paho.mqtt.golang"

	"github.com/mqtt-operator/mqtt-operator/internal/brokerconfig"
)

// A real Prometheus (Debian's, from hack/prometheus.sh) scrapes two broker
// processes under load, as pods tel-0 and tel-1 of broker "tel" in
// namespace "t", with the chart's alert rules loaded. Every broker query of
// the dashboard returns data, every alert rule evaluates without error, and
// a refused auth bundle fires MQTTBrokerReloadFailing for that pod. The
// operator's panels are left out: no operator runs here (their metrics are
// checked in the controllers' tests).
func TestPrometheusScrapesBrokersAndEvaluatesEveryQuery(t *testing.T) {
	prom := os.Getenv("PROMETHEUS")
	if prom == "" {
		if os.Getenv("MQTT_PROMETHEUS_REQUIRED") == "1" {
			t.Fatal("PROMETHEUS is not set: run through make test (hack/prometheus.sh prometheus)")
		}
		t.Skip("PROMETHEUS is not set: export PROMETHEUS=$(hack/prometheus.sh prometheus)")
	}
	pods := []*brokerFiles{newBrokerFiles(t), newBrokerFiles(t)}
	tls := pods[0]
	dir := filepath.Dir(tls.config)
	tls.cfg.TLS = &brokerconfig.TLS{CertFile: filepath.Join(dir, "tls.crt"), KeyFile: filepath.Join(dir, "tls.key")}
	writeSelfSigned(t, tls.cfg.TLS.CertFile, tls.cfg.TLS.KeyFile)
	tls.cfg.Listeners = append(tls.cfg.Listeners, brokerconfig.Listener{Name: "mqtts", Protocol: brokerconfig.ProtocolTLS, Address: freeAddr(t)})
	tls.cfg.Storage.Persistent = true
	for _, f := range pods {
		f.writeConfig(t)
		f.writeBundle(t, f.authBundle())
		f.start(t)
	}

	// Prometheus: every second, the chart's rules.
	work := t.TempDir()
	rules, err := filepath.Abs(filepath.Join("..", "charts", "mqtt-operator", "files", "alerts.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	config := fmt.Sprintf(`global: {scrape_interval: 1s, evaluation_interval: 1s}
rule_files: [%q]
scrape_configs:
  - job_name: brokers
    static_configs:
      - {targets: [%q], labels: {namespace: t, pod: tel-0}}
      - {targets: [%q], labels: {namespace: t, pod: tel-1}}
`, rules, pods[0].health, pods[1].health)
	if err := os.WriteFile(filepath.Join(work, "prometheus.yml"), []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	web := freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, prom, "--config.file="+filepath.Join(work, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(work, "data"), "--web.listen-address="+web, "--log.level=warn")
	var logs strings.Builder
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("prometheus output:\n%s", logs.String())
		}
	})
	api := func(path string, params url.Values, into any) error {
		resp, err := http.Get("http://" + web + path + "?" + params.Encode())
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s: %s: %s", path, resp.Status, body)
		}
		return json.Unmarshal(body, into)
	}
	waitFor(t, "both brokers scraped", func() bool {
		var r struct {
			Data struct{ Result []any } `json:"data"`
		}
		return api("/api/v1/query", url.Values{"query": {`count(up{job="brokers"} == 1) == 2`}}, &r) == nil && len(r.Data.Result) == 1
	})

	// Load on both pods: QoS 0 and 1 traffic, a refused login, a denied subscription.
	for i, f := range pods {
		sub := mustConnect(t, f.mqtt, "bob", bobPass, fmt.Sprintf("prom-sub-%d", i), true)
		sub.Subscribe("devices/#", 1, func(pahov3.Client, pahov3.Message) {}).Wait()
		sub.Subscribe("secret/#", 1, nil).Wait()
		pub := mustConnect(t, f.mqtt, "alice", alicePass, fmt.Sprintf("prom-pub-%d", i), true)
		for n := range 200 {
			pub.Publish("devices/alice/load", byte(n%2), n%50 == 0, "reading")
		}
		_, _ = connect(f.mqtt, "alice", "wrong", fmt.Sprintf("prom-wrong-%d", i), true)
		t.Cleanup(func() { pub.Disconnect(0); sub.Disconnect(0) })
	}
	// tel-1 refuses a broken auth bundle (and keeps its last good one).
	pods[1].swapIn(t, pods[1].bundle, []byte(`{"not": "a bundle"`))

	dashboard, err := os.ReadFile(filepath.Join("..", "charts", "mqtt-operator", "dashboards", "mqtt-brokers.json"))
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	if err := json.Unmarshal(dashboard, &d); err != nil {
		t.Fatal(err)
	}
	vars := strings.NewReplacer("$namespace", "t", "$broker", "tel", "$__rate_interval", "10s")
	queries := 0
	for _, p := range d.Panels {
		for _, target := range p.Targets {
			if strings.Contains(target.Expr, "controller_runtime_") || strings.Contains(target.Expr, "workqueue_") {
				continue // the operator's
			}
			queries++
			q := vars.Replace(target.Expr)
			waitFor(t, fmt.Sprintf("data for panel %q: %s", p.Title, q), func() bool {
				var r struct {
					Status string
					Data   struct{ Result []any } `json:"data"`
				}
				return api("/api/v1/query", url.Values{"query": {q}}, &r) == nil && r.Status == "success" && len(r.Data.Result) > 0
			})
		}
	}
	if queries < 20 {
		t.Fatalf("only %d broker queries in the dashboard", queries)
	}

	type rule struct {
		Name, Health, LastError, State string
		Alerts                         []struct{ Labels map[string]string }
	}
	var firing []string
	waitFor(t, "MQTTBrokerReloadFailing firing for tel-1, and every rule healthy", func() bool {
		var r struct {
			Data struct {
				Groups []struct{ Rules []rule }
			} `json:"data"`
		}
		if api("/api/v1/rules", url.Values{"type": {"alert"}}, &r) != nil || len(r.Data.Groups) != 1 {
			return false
		}
		firing = firing[:0]
		for _, ru := range r.Data.Groups[0].Rules {
			if ru.Health != "ok" {
				t.Logf("rule %s: health %q %s", ru.Name, ru.Health, ru.LastError)
				return false
			}
			for _, a := range ru.Alerts {
				firing = append(firing, ru.Name+"/"+a.Labels["pod"])
			}
		}
		return strings.Contains(strings.Join(firing, " "), "MQTTBrokerReloadFailing/tel-1")
	})
	for _, f := range firing {
		if f != "MQTTBrokerReloadFailing/tel-1" {
			t.Errorf("alert %s is pending or firing on brokers that are fine", f)
		}
	}
	t.Logf("%d dashboard queries returned data; alerts: %v", queries, firing)
}
