// Command broker is `make bench-broker`: our MQTT broker (./broker-image, with
// auth, ACLs and metrics on) against plain mochi and mosquitto 2.0, all as
// separate processes on loopback, driven by a lean MQTT 3.1.1 load generator
// (./mqttc). It prints machine-readable name=value lines on stdout and a
// human summary on stderr:
//
//	<broker>_<qos>_<pattern>_msgs_per_s       delivered messages per second at the
//	                                          subscribers, median of --runs
//	<broker>_<qos>_<pattern>_delivered        delivered/expected of that median run
//	<broker>_<qos>_<pattern>_cpu_us_per_msg   broker CPU per delivered message
//	ratio_vs_{mosquitto,mochi}_<qos>_<pattern> ours divided by the baseline
//	acl_10k_rules_vs_10_ratio                 ours, QoS 0 fan-out, 10,000-rule bundle / 10-rule bundle
//	rss_kib_per_idle_conn[_<broker>]          resident memory per idle, subscribed client
//	auth_storm_10k_reconnects_s[_<broker>]    seconds for 10,000 CONNECT/CONNACK/DISCONNECT
//	ours_qos1_fanin_batchack_{msgs_per_s,delivered,dropped}  QoS 1 fan-in to a subscriber
//	                                          that acknowledges once per 256 KiB read, with the
//	                                          default maxQueuedMessages (batchack phase)
//
// broker is ours, mochi or mosquitto; qos is qos0 or qos1; pattern is fanin
// (N publishers -> 1 wildcard subscriber) or fanout (1 publisher -> N
// subscribers). See docs/benchmarks.md.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/mqtt-operator/mqtt-operator/test/bench/benchproc"
)

type flags struct {
	oursBin, mochiBin, mosquittoBin string
	phases, scenarios               string
	runs, aclRuns                   int
	load                            loadConfig
	idleConns, idleConcurrency      int
	storm, stormWarmup, stormConc   int
	aclRules, aclMsgsFactor         int
	oursMaxQueued                   int
	oursLogLevel                    string
	mosquittoNoDelay, keepDir       bool
	// cluster phase
	clusterPods, clusterIdle, clusterLatency, clusterTakeovers           int
	clusterFloodPubs, clusterFloodMsgs, clusterRetained, clusterHandover int
	clusterRebalance                                                     int
	clusterFloodTime, clusterDrain                                       time.Duration
	clusterSteps, clusterVariants, profileDir                            string
}

func main() {
	var f flags
	flag.StringVar(&f.oursBin, "broker", "bin/broker", "our broker binary (go build -o bin/broker ./broker-image)")
	flag.StringVar(&f.mochiBin, "mochi", "", "plain mochi binary; empty builds ./test/bench/broker/mochiplain")
	flag.StringVar(&f.mosquittoBin, "mosquitto", "", "mosquitto binary; empty looks on PATH and in /usr/sbin (hack/ensure-mosquitto.sh installs it)")
	flag.StringVar(&f.phases, "phases", "throughput,acl,batchack,durable,idle,storm", "comma-separated phases to run (also: cluster, quotas)")
	flag.StringVar(&f.scenarios, "scenarios", "qos0_fanin,qos0_fanout,qos1_fanin,qos1_fanout", "comma-separated throughput scenarios to run")
	flag.IntVar(&f.runs, "runs", 3, "runs per broker and scenario; the median is reported")
	flag.IntVar(&f.load.clients, "clients", 8, "publishers of fan-in, subscribers of fan-out")
	flag.IntVar(&f.load.msgs, "msgs", 20000, "messages per publisher")
	flag.IntVar(&f.load.payload, "payload", 64, "payload bytes")
	flag.IntVar(&f.load.window, "qos1-window", 64, "QoS 1 messages in flight per publisher")
	flag.DurationVar(&f.load.timeout, "run-timeout", 60*time.Second, "longest one run may take")
	flag.DurationVar(&f.load.quietStop, "quiet-stop", time.Second, "end a run this long after the last delivery once publishing is done")
	flag.IntVar(&f.aclRules, "acl-rules", 10000, "rules in the large auth bundle")
	flag.IntVar(&f.aclMsgsFactor, "acl-msgs-factor", 3, "QoS 0 runs of the ACL phase send this many times --msgs per publisher (longer runs, less noise)")
	flag.IntVar(&f.aclRuns, "acl-runs", 7, "pairs of runs (10 rules, large bundle) per scenario in the ACL phase; the median pair ratio is reported")
	flag.IntVar(&f.idleConns, "idle-conns", 10000, "idle clients for the memory measurement")
	flag.IntVar(&f.idleConcurrency, "idle-concurrency", 50, "concurrent dials while opening idle clients")
	flag.IntVar(&f.storm, "storm", 10000, "CONNECT/CONNACK/DISCONNECT cycles of the auth storm")
	flag.IntVar(&f.stormWarmup, "storm-warmup", 1000, "cycles before the measured storm")
	flag.IntVar(&f.stormConc, "storm-concurrency", 100, "concurrent clients in the auth storm")
	flag.IntVar(&f.oursMaxQueued, "ours-max-queued", 65535, "our broker's limits.maxQueuedMessages (the MQTTBroker default is 1000; mosquitto runs unlimited)")
	flag.StringVar(&f.oursLogLevel, "ours-log-level", "info", "our broker's --log-level")
	flag.BoolVar(&f.mosquittoNoDelay, "mosquitto-nodelay", false, "set_tcp_nodelay for mosquitto (off, mosquitto's default, is its faster setting here)")
	flag.IntVar(&f.clusterPods, "cluster-pods", 3, "cluster phase: pods of the clustered broker")
	flag.IntVar(&f.clusterIdle, "cluster-idle-conns", 5000, "cluster phase: idle clients on one pod (and on the single broker) for the memory per client")
	flag.IntVar(&f.clusterLatency, "cluster-latency-samples", 2000, "cluster phase: messages sent one at a time for each latency")
	flag.IntVar(&f.clusterTakeovers, "cluster-takeovers", 200, "cluster phase: takeovers of each kind (same pod, cross pod, clean and persistent)")
	flag.IntVar(&f.clusterFloodPubs, "cluster-flood-publishers", 4, "cluster phase: QoS 1 publishers flooding towards the slowed pod")
	flag.IntVar(&f.clusterFloodMsgs, "cluster-flood-msgs", 10000, "cluster phase: messages per flooding publisher")
	flag.DurationVar(&f.clusterFloodTime, "cluster-flood-time", 60*time.Second, "cluster phase: longest the flood may take")
	flag.DurationVar(&f.clusterDrain, "cluster-drain-period", 45*time.Second, "cluster phase: --drain-period of the pods (the operator's), which bounds the handover step's drain")
	flag.IntVar(&f.clusterRetained, "cluster-retained", 10000, "cluster phase: retained messages a new pod copies")
	flag.IntVar(&f.clusterHandover, "cluster-handover", 10000, "cluster phase: persistent sessions on a pod that is drained (a scale-in)")
	flag.IntVar(&f.clusterRebalance, "cluster-rebalance", 600, "cluster phase: persistent clients on pod 0 evened out over the pods (a scale-out's rebalance)")
	flag.StringVar(&f.clusterSteps, "cluster-steps", "memory,throughput,latency,takeover,flood,retained,handover,rebalance", "cluster phase: comma-separated steps to run")
	flag.StringVar(&f.clusterVariants, "cluster-variants", "single,same_pod,cross_pod", "cluster phase, throughput step: the placements to run (one alone for a CPU profile of it)")
	flag.StringVar(&f.profileDir, "profile-dir", "", "write a CPU profile of each of our broker processes to DIR/<name>.pprof (go tool pprof bin/broker FILE)")
	flag.BoolVar(&f.keepDir, "keep", false, "keep the working directory (configs, broker logs)")
	flag.Parse()

	benchproc.Main("bench-broker", func() error { return run(&f) })
}

func logf(format string, args ...any) { fmt.Fprintf(os.Stderr, "# "+format+"\n", args...) }

func run(f *flags) error {
	if f.load.window < 2 || f.load.window > 65535 || f.load.clients < 1 || f.load.msgs < 1 || f.runs < 1 || f.aclRuns < 1 || f.aclMsgsFactor < 1 {
		return errors.New("--qos1-window must be 2-65535; --clients, --msgs, --runs and --acl-runs at least 1")
	}
	phases := map[string]bool{}
	for _, p := range strings.Split(f.phases, ",") {
		phases[strings.TrimSpace(p)] = true
	}
	if err := selectScenarios(f.scenarios); err != nil {
		return err
	}
	if limit, err := raiseFileLimit(1 << 16); err != nil || limit < uint64(f.idleConns)+1000 {
		return fmt.Errorf("RLIMIT_NOFILE is %d (%v); %d idle clients need more", limit, err, f.idleConns)
	}
	dir, err := os.MkdirTemp("", "bench-broker")
	if err != nil {
		return err
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return err
	}
	if f.keepDir {
		logf("working directory (kept): %s", dir)
	} else {
		benchproc.WorkDir.Store(&dir)
		defer os.RemoveAll(dir)
	}

	// The baselines (plain mochi, mosquitto) are needed by these phases only.
	baselines := phases["throughput"] || phases["idle"] || phases["storm"]
	s, err := newSetup(f, dir, baselines)
	if err != nil {
		return err
	}
	out := &report{}
	if phases["throughput"] || phases["acl"] {
		if err := throughputPhases(s, f, phases, out); err != nil {
			return err
		}
	}
	if phases["batchack"] {
		if err := batchAckPhase(s, f, out); err != nil {
			return err
		}
	}
	if phases["durable"] {
		if err := durablePhase(s, f, out); err != nil {
			return err
		}
	}
	if phases["idle"] {
		if err := idlePhase(s, f, out); err != nil {
			return err
		}
	}
	if phases["storm"] {
		if err := stormPhase(s, f, out); err != nil {
			return err
		}
	}
	if phases["cluster"] {
		if err := clusterPhase(s, f, out); err != nil {
			return err
		}
	}
	if phases["quotas"] {
		if err := quotaPhase(s, f, out); err != nil {
			return err
		}
	}
	out.print()
	return nil
}

func newSetup(f *flags, dir string, baselines bool) (*setup, error) {
	s := &setup{dir: dir, oursBin: f.oursBin, mochiBin: f.mochiBin, oursMaxQueued: int32(f.oursMaxQueued),
		oursLogLevel: f.oursLogLevel, profileDir: f.profileDir, clusterDrain: f.clusterDrain, mosquittoNoDelay: f.mosquittoNoDelay, maxConnections: int32(f.idleConns + 1000)}
	if _, err := os.Stat(s.oursBin); err != nil {
		return nil, fmt.Errorf("our broker binary: %w (build it: go build -o bin/broker ./broker-image)", err)
	}
	if baselines && s.mochiBin == "" {
		s.mochiBin = filepath.Join(dir, "mochiplain")
		logf("building plain mochi")
		cmd := exec.Command("go", "build", "-o", s.mochiBin, "github.com/mqtt-operator/mqtt-operator/test/bench/broker/mochiplain")
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			return nil, fmt.Errorf("building mochiplain: %w", err)
		}
	}
	s.mosquittoBin = f.mosquittoBin
	if s.mosquittoBin == "" {
		s.mosquittoBin = benchproc.LookPath("mosquitto", "/usr/sbin/mosquitto")
	}
	if baselines && s.mosquittoBin == "" {
		return nil, errors.New("mosquitto not found; run hack/ensure-mosquitto.sh or pass --mosquitto")
	}
	s.passwd = benchproc.LookPath("mosquitto_passwd", "/usr/bin/mosquitto_passwd")
	users, err := benchUsers(100)
	if err != nil {
		return nil, err
	}
	s.users = users
	return s, nil
}
