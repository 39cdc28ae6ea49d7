// Command overload is `make bench-overload`: our broker (./broker-image) as
// a separate process on loopback, under the loads a misbehaving or hostile
// client can produce, to show that no client holds the others back or runs
// the broker out of memory. It prints machine-readable name=value lines on
// stdout and a human summary on stderr. Scenarios (--scenarios, comma-
// separated) and what they print:
//
//	stuck_subscribers  stuck_subscribers_rss_mib: peak resident memory of a
//	                   broker whose container limit is --memory-limit while
//	                   --rss-stuck subscribers that never read are sent
//	                   --rss-messages messages of --rss-payload bytes; with
//	                   stuck_subscribers_queue_budget_mib, the budget it is
//	                   bounded by, and stuck_subscribers_disconnected.
//	                   stuck_subscribers_publisher_ratio: the rate a paced
//	                   publisher (--rate messages/s for --duration) achieves
//	                   with --ratio-stuck stuck subscribers (already judged
//	                   stuck: a flood first fills their buffers; the publisher's
//	                   wait meanwhile is _detection_wait_s), over its rate with
//	                   none; stuck_subscribers_healthy_latency_ms_p99: the
//	                   latency of a subscriber that reads, in that run (and
//	                   _baseline, with none stuck); stuck_subscribers_publisher_
//	                   wait_s and _judged_stuck: how long the publisher waited
//	                   for subscribers and how often one was judged stuck.
//
//	preauth_flood      preauth_flood_rss_mib: peak resident memory while
//	                   --preauth-sockets sockets never log in (half of them
//	                   part-way through a 1 MiB CONNECT); _open, the sockets
//	                   still held; _login_ok, whether a real client got in.
//	login_flood        flood_login_ms_p99 (and _p50): a real user's login
//	                   (generated password, salted SHA-256) while
//	                   --flood-clients clients log in over and over with
//	                   unknown usernames; flood_login_bcrypt_ms_p99, the
//	                   same for a user with a chosen password (bcrypt);
//	                   guess_flood_login_ms_p99 and _bcrypt_ms_p99, both
//	                   while the flood guesses the password of a third,
//	                   known user; flood_refusals, guess_flood_refusals.
//
// See docs/benchmarks.md.
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/mqtt-operator/mqtt-operator/test/bench/benchproc"
)

type flags struct {
	brokerBin   string
	scenarios   string
	memoryLimit int64
	rssStuck    int
	rssMessages int
	rssPayload  int
	ratioStuck  int
	rate        int
	payload     int
	duration    time.Duration
	keepDir     bool

	preauthSockets, floodClients, floodLogins int
}

// scenarioFuncs are the scenarios by name; each adds its lines to the report.
var scenarioFuncs = map[string]func(*env, *flags, *report) error{
	"stuck_subscribers": stuckSubscribers,
	"preauth_flood":     preauthFlood,
	"login_flood":       loginFlood,
}

func main() {
	var f flags
	flag.StringVar(&f.brokerBin, "broker", "bin/broker", "our broker binary (go build -o bin/broker ./broker-image)")
	flag.StringVar(&f.scenarios, "scenarios", "stuck_subscribers,preauth_flood,login_flood", "comma-separated scenarios to run")
	flag.IntVar(&f.preauthSockets, "preauth-sockets", 600, "sockets that never log in (preauth_flood)")
	flag.IntVar(&f.floodClients, "flood-clients", 32, "clients logging in with unknown usernames (login_flood)")
	flag.IntVar(&f.floodLogins, "flood-logins", 100, "logins of the real user during the flood (login_flood)")
	flag.Int64Var(&f.memoryLimit, "memory-limit", 1<<30, "the broker container's memory limit in bytes (MQTT_BROKER_MEMORY_LIMIT), as in a pod")
	flag.IntVar(&f.rssStuck, "rss-stuck", 50, "stuck subscribers of the memory measurement")
	flag.IntVar(&f.rssMessages, "rss-messages", 400, "messages of the large-message flood")
	flag.IntVar(&f.rssPayload, "rss-payload", 900_000, "payload bytes of the large-message flood")
	flag.IntVar(&f.ratioStuck, "ratio-stuck", 100, "stuck subscribers of the publisher-rate measurement")
	flag.IntVar(&f.rate, "rate", 1000, "messages per second the paced publisher aims at (times --ratio-stuck deliveries a second)")
	flag.IntVar(&f.payload, "payload", 256, "payload bytes of the paced publisher")
	flag.DurationVar(&f.duration, "duration", 10*time.Second, "how long the paced publisher publishes")
	flag.BoolVar(&f.keepDir, "keep", false, "keep the working directory (configs, broker logs)")
	flag.Parse()
	benchproc.Main("bench-overload", func() error { return run(&f) })
}

func logf(format string, args ...any) { fmt.Fprintf(os.Stderr, "# "+format+"\n", args...) }

func run(f *flags) error {
	var names []string
	for _, name := range strings.Split(f.scenarios, ",") {
		name = strings.TrimSpace(name)
		if _, ok := scenarioFuncs[name]; !ok {
			return fmt.Errorf("--scenarios: unknown scenario %q", name)
		}
		names = append(names, name)
	}
	if _, err := os.Stat(f.brokerBin); err != nil {
		return fmt.Errorf("our broker binary: %w (build it: go build -o bin/broker ./broker-image)", err)
	}
	dir, err := os.MkdirTemp("", "bench-overload")
	if err != nil {
		return err
	}
	if f.keepDir {
		logf("working directory (kept): %s", dir)
	} else {
		benchproc.WorkDir.Store(&dir)
		defer os.RemoveAll(dir)
	}
	e, err := newEnv(f.brokerBin, dir)
	if err != nil {
		return err
	}
	out := &report{}
	for _, name := range names {
		logf("scenario %s", name)
		if err := scenarioFuncs[name](e, f, out); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	out.print()
	return nil
}

// report collects name=value lines.
type report struct{ lines []string }

func (r *report) add(name, format string, args ...any) {
	r.lines = append(r.lines, name+"="+fmt.Sprintf(format, args...))
}

func (r *report) print() {
	for _, l := range r.lines {
		fmt.Println(l)
	}
}
