// Command tls is `make bench-tls`: full TLS handshakes per second, each
// followed by MQTT CONNECT/CONNACK/DISCONNECT, against our broker
// (./broker-image) and mosquitto 2.0 in turn, both serving the same ECDSA
// P-256 certificate on a loopback TLS-only listener and both checking the
// same users' passwords on every CONNECT (--mosquitto-anonymous lets
// mosquitto skip it). It prints machine-readable name=value lines on stdout
// and progress on stderr:
//
//	tls_handshakes_per_s                      ours (the headline)
//	tls_handshakes_per_s_<broker>             successful CONNACKs per second over TLS
//	tls_handshakes_per_s_ratio                ours / mosquitto
//	tls_handshake_ms_{p50,p99}_<broker>       dial to CONNACK, per connection
//	tls_handshakes_<broker>, tls_errors_<broker> successful and failed connections
//	tls_cpu_us_per_handshake_<broker>         broker CPU per successful connection
//	tls_cpu_per_handshake_ratio               ours / mosquitto
//	tls_generator_cpu_{us_per_handshake,share}_<broker> the load generator's own cost
//	tls_machine_busy_share_<broker>, tls_other_cpu_s_<broker> how busy the machine
//	                                          was, and what other programs used
//	tls_negotiated_<broker>                   TLS version, suite and key exchange
//
// broker is ours or mosquitto. With --rounds, the median round of each
// broker is reported. See docs/benchmarks.md.
package main

import (
	"cmp"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"math"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/mqtt-operator/mqtt-operator/test/bench/benchproc"
	"github.com/mqtt-operator/mqtt-operator/test/bench/measure"
)

type flags struct {
	oursBin, mosquittoBin string
	clients, rounds       int
	duration, warmup      time.Duration
	curves, brokers       string
	mosquittoAnonymous    bool
	mosquittoNoDelay      bool
	oursCPUProfile        string
	oursLogLevel          string
	keepDir               bool
}

func main() {
	var f flags
	flag.StringVar(&f.oursBin, "broker", "bin/broker", "our broker binary (make broker)")
	flag.StringVar(&f.mosquittoBin, "mosquitto", "", "mosquitto binary; empty looks on PATH and in /usr/sbin (hack/ensure-mosquitto.sh installs it)")
	flag.IntVar(&f.clients, "clients", 2*runtime.GOMAXPROCS(0), "concurrent clients, each connecting in a loop")
	flag.DurationVar(&f.duration, "duration", 10*time.Second, "measured time per broker")
	flag.IntVar(&f.rounds, "rounds", 1, "rounds, each measuring every broker afresh (order alternating); the median round is reported")
	flag.DurationVar(&f.warmup, "warmup", time.Second, "unmeasured load before the measured time")
	flag.StringVar(&f.brokers, "brokers", "ours,mosquitto", "brokers to measure, in this order; the ratios need both")
	flag.StringVar(&f.curves, "curves", "X25519", "key exchanges the clients offer, comma-separated (X25519, P256, X25519MLKEM768, ...), or \"go-default\" for Go's defaults")
	flag.BoolVar(&f.mosquittoAnonymous, "mosquitto-anonymous", false, "let mosquitto take anonymous clients instead of checking a password file (ours always checks passwords)")
	flag.BoolVar(&f.mosquittoNoDelay, "mosquitto-nodelay", true, "set_tcp_nodelay for mosquitto: without it Nagle holds its small handshake and CONNACK writes until the client's delayed ACK, ~40 ms a connection")
	flag.StringVar(&f.oursCPUProfile, "ours-cpuprofile", "", "write a CPU profile of our broker to this file (MQTT_BROKER_CPUPROFILE)")
	flag.StringVar(&f.oursLogLevel, "ours-log-level", "info", "our broker's --log-level")
	flag.BoolVar(&f.keepDir, "keep", false, "keep the working directory (certificates, configs, broker logs)")
	flag.Parse()

	benchproc.Main("bench-tls", func() error { return run(&f) })
}

func logf(format string, args ...any) { fmt.Fprintf(os.Stderr, "# "+format+"\n", args...) }

func run(f *flags) error {
	if f.clients < 1 || f.duration <= 0 || f.warmup < 0 || f.rounds < 1 {
		return errors.New("--clients, --duration and --rounds must be positive, --warmup not negative")
	}
	curves, err := parseCurves(f.curves)
	if err != nil {
		return err
	}
	var names []string
	for _, name := range strings.Split(f.brokers, ",") {
		switch name = strings.TrimSpace(name); name {
		case ours, mosquitto:
			names = append(names, name)
		default:
			return fmt.Errorf("--brokers: unknown broker %q", name)
		}
	}
	if _, err := os.Stat(f.oursBin); err != nil && slices.Contains(names, ours) {
		return fmt.Errorf("our broker binary: %w (build it: make broker)", err)
	}
	if f.mosquittoBin == "" {
		f.mosquittoBin = benchproc.LookPath("mosquitto", "/usr/sbin/mosquitto")
	}
	if f.mosquittoBin == "" && slices.Contains(names, mosquitto) {
		return errors.New("mosquitto not found; run hack/ensure-mosquitto.sh or pass --mosquitto")
	}
	dir, err := os.MkdirTemp("", "bench-tls")
	if err != nil {
		return err
	}
	if f.keepDir {
		logf("working directory (kept): %s", dir)
	} else {
		benchproc.WorkDir.Store(&dir)
		defer os.RemoveAll(dir)
	}
	certs, err := newPKI(dir)
	if err != nil {
		return fmt.Errorf("generating certificates: %w", err)
	}
	users, err := benchUsers(f.clients)
	if err != nil {
		return err
	}
	s := &setup{dir: dir, f: f, pki: certs, users: users, curves: curves}
	mosqAuth := "password_file"
	if f.mosquittoAnonymous {
		mosqAuth = "anonymous"
	}
	logf("%d clients, %v warm-up + %v measured per broker and round, %d round(s); every connection a full handshake (no resumption), server verified against the CA; key exchange %s; ours checks passwords (generated, cached after the first check), mosquitto: %s",
		f.clients, f.warmup, f.duration, f.rounds, f.curves, mosqAuth)

	runs := map[string][]result{}
	for r := range f.rounds {
		order := slices.Clone(names)
		if r%2 == 1 { // alternate, so no broker always goes first
			slices.Reverse(order)
		}
		for _, name := range order {
			res, err := s.measure(name, r)
			if err != nil {
				return err
			}
			runs[name] = append(runs[name], res)
			logf("round %d %-9s %6.0f handshakes/s  %d ok, %d errors in %v  p50 %.2f ms  p99 %.2f ms  broker cpu %.2fs (%.0f us each)  generator cpu %.2fs  machine %.0f%% busy, other %.1fs",
				r+1, name, res.rate(), res.ok, res.errors, res.elapsed.Round(time.Millisecond), res.percentileMs(0.50), res.percentileMs(0.99),
				res.brokerCPU, res.brokerCPUPerOK(), res.genCPU, 100*res.machineBusy, res.otherCPU)
			if res.firstErr != nil {
				logf("round %d %-9s first error: %v", r+1, name, res.firstErr)
			}
			if res.otherCPU > 0.05*res.elapsed.Seconds()*float64(runtime.NumCPU()) {
				logf("WARNING: other programs used %.1fs of CPU during the window: the machine was not quiet, the numbers are not comparable", res.otherCPU)
			}
		}
	}

	results := map[string]result{}
	for _, name := range names {
		results[name] = medianRun(runs[name])
	}
	o, haveOurs := results[ours]
	m, haveMosquitto := results[mosquitto]
	both := haveOurs && haveMosquitto
	if both && o.negotiated != m.negotiated {
		logf("WARNING: the brokers negotiated different TLS parameters (%s vs %s)", o.negotiated, m.negotiated)
	}
	out := &report{}
	if haveOurs {
		out.add("tls_handshakes_per_s", "%.0f", o.rate())
	}
	for _, name := range names {
		out.add("tls_handshakes_per_s_"+name, "%.0f", results[name].rate())
	}
	if both {
		out.add("tls_handshakes_per_s_ratio", "%.2f", o.rate()/math.Max(1e-9, m.rate()))
	}
	for _, name := range names {
		r := results[name]
		out.add("tls_handshake_ms_p50_"+name, "%.2f", r.percentileMs(0.50))
		out.add("tls_handshake_ms_p99_"+name, "%.2f", r.percentileMs(0.99))
		out.add("tls_handshakes_"+name, "%d", r.ok)
		out.add("tls_errors_"+name, "%d", r.errors)
		out.add("tls_cpu_us_per_handshake_"+name, "%.0f", r.brokerCPUPerOK())
		out.add("tls_generator_cpu_us_per_handshake_"+name, "%.0f", 1e6*r.genCPU/math.Max(1, float64(r.ok)))
		out.add("tls_generator_cpu_share_"+name, "%.2f", r.genCPU/math.Max(1e-9, r.genCPU+r.brokerCPU))
		out.add("tls_machine_busy_share_"+name, "%.2f", r.machineBusy)
		out.add("tls_other_cpu_s_"+name, "%.1f", r.otherCPU)
		out.add("tls_negotiated_"+name, "%s", strings.ReplaceAll(r.negotiated, " ", "_"))
	}
	if both {
		out.add("tls_cpu_per_handshake_ratio", "%.2f", o.brokerCPUPerOK()/math.Max(1e-9, m.brokerCPUPerOK()))
	}
	out.add("tls_clients", "%d", f.clients)
	out.add("tls_measured_s", "%.1f", f.duration.Seconds())
	out.add("tls_rounds", "%d", f.rounds)
	out.add("tls_server_key", "ECDSA_P256")
	out.add("tls_auth_ours", "password_generated_hash")
	out.add("tls_auth_mosquitto", "%s", mosqAuth)
	out.print()
	return nil
}

// measure starts the broker name, loads it, and stops it.
func (s *setup) measure(name string, round int) (result, error) {
	var t *target
	var err error
	if name == ours {
		t, err = s.startOurs(round)
	} else {
		t, err = s.startMosquitto()
	}
	if err != nil {
		return result{}, err
	}
	logf("round %d %-9s pid %d on %s: %s", round+1, name, t.proc.PID(), t.addr, t.negotiated)
	res := runLoad(t, s, s.f.clients, s.f.warmup, s.f.duration)
	res.negotiated = t.negotiated
	alive := t.proc.Alive()
	t.stop()
	switch {
	case alive != nil:
		return res, alive
	case res.resumed > 0:
		return res, fmt.Errorf("%s: %d connections resumed a session; every one must be a full handshake", name, res.resumed)
	case res.ok == 0:
		return res, fmt.Errorf("%s: no connection succeeded; first error: %v", name, res.firstErr)
	}
	return res, nil
}

// medianRun is the run with the median rate (the lower middle one for an
// even count).
func medianRun(runs []result) result {
	sorted := slices.Clone(runs)
	slices.SortFunc(sorted, func(a, b result) int { return cmp.Compare(a.rate(), b.rate()) })
	return sorted[(len(sorted)-1)/2]
}

// parseCurves turns --curves into the clients' CurvePreferences (nil: Go's
// defaults).
func parseCurves(s string) ([]tls.CurveID, error) {
	if s == "go-default" {
		return nil, nil
	}
	known := map[string]tls.CurveID{
		"X25519": tls.X25519, "P256": tls.CurveP256, "P384": tls.CurveP384, "P521": tls.CurveP521,
		"X25519MLKEM768": tls.X25519MLKEM768,
	}
	var out []tls.CurveID
	for _, name := range strings.Split(s, ",") {
		id, ok := known[strings.TrimSpace(name)]
		if !ok {
			return nil, fmt.Errorf("--curves: unknown key exchange %q", name)
		}
		out = append(out, id)
	}
	return out, nil
}

// report collects name=value lines in order.
type report struct {
	lines []string
}

func (r *report) add(name, format string, args ...any) {
	r.lines = append(r.lines, name+"="+fmt.Sprintf(format, args...))
}

func (r *report) print() { fmt.Println(strings.Join(r.lines, "\n")) }

// result of one broker's measured window.
type result struct {
	ok, errors, resumed int64
	elapsed             time.Duration
	latencies           []float64 // seconds, sorted
	brokerCPU, genCPU   float64   // seconds in the window
	// machineBusy is the share of the machine's CPU time in use during the
	// window; otherCPU roughly the seconds of it neither the broker nor the
	// generator used (other programs: the machine was not quiet).
	machineBusy, otherCPU float64
	firstErr              error
	negotiated            string
}

func (r result) rate() float64 { return float64(r.ok) / math.Max(1e-9, r.elapsed.Seconds()) }

func (r result) percentileMs(p float64) float64 {
	return 1e3 * measure.Percentile(r.latencies, p)
}

func (r result) brokerCPUPerOK() float64 { return 1e6 * r.brokerCPU / math.Max(1, float64(r.ok)) }
