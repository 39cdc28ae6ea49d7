// Command broker is the MQTT broker every MQTTBroker pod runs: mochi-mqtt
// behind our guard, auth and ACL hooks, reloading configuration and auth
// bundle in place. Its subcommands (broker hash-password, broker bundle)
// write auth bundles without Go. See README.md in this directory.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"syscall"
	"time"

	"github.com/mqtt-operator/mqtt-operator/broker-image/internal/broker"
	"github.com/mqtt-operator/mqtt-operator/broker-image/internal/filewatch"
	"github.com/mqtt-operator/mqtt-operator/broker-image/internal/httpapi"
	"github.com/mqtt-operator/mqtt-operator/internal/brokerconfig"
)

func main() {
	if isSubcommand(os.Args[1:]) {
		os.Exit(runSubcommand(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
	}
	var opts options
	flag.StringVar(&opts.configPath, "config", "/etc/mqtt/"+brokerconfig.FileName, "broker configuration file (rendered by the operator)")
	flag.StringVar(&opts.bundlePath, "auth-bundle", "/etc/mqtt/auth/"+brokerconfig.BundleFileName, "auth bundle file (users and ACLs)")
	flag.StringVar(&opts.tokenPath, "admin-token-file", "/etc/mqtt/admin/token", "file holding the admin API bearer token; without it the admin API refuses every request")
	flag.BoolVar(&opts.anonymous, "allow-anonymous", false, "standalone development mode: no config file, anyone may publish and subscribe to anything")
	flag.StringVar(&opts.listen, "listen", "127.0.0.1:1883", "MQTT address in --allow-anonymous mode")
	flag.DurationVar(&opts.drain, "drain-period", 30*time.Second, "on SIGTERM, spread client disconnects over this period")
	flag.StringVar(&opts.logLevel, "log-level", "info", "debug, info, warn or error")
	flag.StringVar(&opts.incarnation, "incarnation", "", "the UID of the MQTTBroker this pod belongs to: a bundle cached on the volume by another broker of the same name is never used")
	flag.Usage = func() {
		fmt.Fprint(flag.CommandLine.Output(), "Usage: broker [flags]              run the broker\n"+
			"       broker hash-password [flags]  print a password hash (broker hash-password --help)\n"+
			"       broker bundle [flags]         build an auth bundle (broker bundle --help)\n\nFlags:\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	log := newLogger(opts.logLevel)
	setMemoryLimit(log)
	setGCPercent()
	defer profileCPU(log)()
	if err := run(log, opts); err != nil {
		log.Error("broker failed", "error", err.Error())
		os.Exit(1)
	}
}

type options struct {
	configPath, bundlePath, tokenPath, listen, logLevel, incarnation string
	anonymous                                                        bool
	drain                                                            time.Duration
}

// gcPercent is the broker's GOGC. Its live heap is small next to what it
// allocates per message (mochi copies each packet for every subscriber and
// builds a subscriber map per PUBLISH), so at Go's default of 100 the
// collector ran about 650 times per million messages and took a tenth of the
// CPU. 200 halves that for at most twice the garbage above the live heap; in
// a pod GOMEMLIMIT (setMemoryLimit) still bounds the total.
const gcPercent = 200

// setGCPercent applies gcPercent unless GOGC is set.
func setGCPercent() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(gcPercent)
	}
}

// setMemoryLimit sets the Go runtime's soft memory limit to 90% of the
// container's limit (MQTT_BROKER_MEMORY_LIMIT, in bytes, from the pod's
// resourceFieldRef), leaving room for memory the runtime does not manage.
// An explicit GOMEMLIMIT wins.
func setMemoryLimit(log *slog.Logger) {
	raw := os.Getenv("MQTT_BROKER_MEMORY_LIMIT")
	if raw == "" || os.Getenv("GOMEMLIMIT") != "" {
		return
	}
	limit, err := strconv.ParseInt(raw, 10, 64)
	if err != nil || limit <= 0 {
		log.Warn("ignoring an unreadable MQTT_BROKER_MEMORY_LIMIT", "value", raw)
		return
	}
	debug.SetMemoryLimit(limit / 10 * 9)
	log.Info("Go memory limit set from the container limit", "containerLimitBytes", limit, "goMemLimitBytes", limit/10*9)
}

// profileCPU writes a CPU profile to $MQTT_BROKER_CPUPROFILE, when set, from
// start to exit: for performance work on a development machine (`go tool
// pprof bin/broker FILE`), never set in pods.
func profileCPU(log *slog.Logger) (stop func()) {
	path := os.Getenv("MQTT_BROKER_CPUPROFILE")
	if path == "" {
		return func() {}
	}
	f, err := os.Create(path)
	if err == nil {
		err = pprof.StartCPUProfile(f)
	}
	if err != nil {
		log.Warn("cannot write a CPU profile", "path", path, "error", err.Error())
		return func() {}
	}
	return func() { pprof.StopCPUProfile(); _ = f.Close() }
}

func newLogger(level string) *slog.Logger {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		l = slog.LevelInfo
	}
	return slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: l}))
}

func run(log *slog.Logger, opts options) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()

	cfgData, cfg, bundleData, err := load(log, opts)
	if err != nil {
		return err
	}
	b, err := broker.New(cfg, log)
	if err != nil {
		return err
	}
	if !opts.anonymous {
		// The last bundle applied before a container restart (pushed by the
		// operator) can be newer than the mounted file, which the kubelet
		// refreshes only every minute or so: start from the newer of the two.
		b.BundleCache = broker.BundleCachePath(cfg.Storage.Path, opts.incarnation)
		if opts.incarnation != "" {
			if n, err := broker.RemoveForeignBundleCaches(cfg.Storage.Path, b.BundleCache); err != nil {
				return err
			} else if n > 0 {
				log.Info("deleted the auth bundle cached by an earlier broker on this volume", "files", n, "incarnation", opts.incarnation)
			}
		}
		if cached, err := b.LoadCachedBundle(); err == nil {
			log.Info("applied the auth bundle cached before the restart", "revision", cached)
		}
	}
	if bundleData != nil {
		if _, err := b.ApplyBundle(bundleData, "file"); err != nil && !errors.Is(err, broker.ErrStale) {
			log.Error("the auth bundle file is invalid; not ready until a valid one arrives", "path", opts.bundlePath)
		}
	} else if b.Revision() == "" {
		log.Warn("no auth bundle yet; every client is refused and /readyz fails until one arrives", "path", opts.bundlePath)
	}
	if err := b.Start(); err != nil {
		return err
	}
	for _, l := range cfg.Listeners {
		log.Info("listening", "listener", l.Name, "protocol", l.Protocol, "address", b.ListenerAddress(l.Name))
	}

	servers := []*http.Server{httpapi.NewServer(cfg.HealthAddress, httpapi.Health(b))}
	token := httpapi.TokenFile(opts.tokenPath)
	switch {
	case token() != "":
		servers = append(servers, httpapi.NewServer(cfg.AdminAddress, httpapi.Admin(b, token, log)))
	case !opts.anonymous:
		log.Warn("no admin token; the admin API is off and bundles arrive only through the file", "path", opts.tokenPath)
	}
	// Bind every port before serving any: /readyz must not say ready while
	// the admin port the operator pushes to is not listening yet.
	sockets := make([]net.Listener, len(servers))
	for i, s := range servers {
		if sockets[i], err = httpapi.Listen(s.Addr); err != nil {
			return fmt.Errorf("http %s: %w", s.Addr, err)
		}
	}
	errs := make(chan error, len(servers))
	for i, s := range servers {
		go func() {
			if err := s.Serve(sockets[i]); !errors.Is(err, http.ErrServerClosed) {
				errs <- fmt.Errorf("http %s: %w", s.Addr, err)
			}
		}()
	}
	if !opts.anonymous {
		go filewatch.Watch(ctx, opts.configPath, cfgData, log, func(data []byte) { _ = b.ApplyConfig(data) })
		go filewatch.Watch(ctx, opts.bundlePath, bundleData, log, func(data []byte) { _, _ = b.ApplyBundle(data, "file") })
		if files := b.CertificateFiles(); len(files) > 0 {
			// One watch for the pair and the client CA: a Secret update that
			// changes several of them is one reload (one log line, one count).
			// Its first check reloads, a no-op while the files still hold
			// what was loaded at start.
			go filewatch.WatchSet(ctx, files, log, func() { _ = b.ReloadCertificate() })
		}
	}

	select {
	case <-ctx.Done():
	case err := <-errs:
		return err
	}
	log.Info("received termination signal; draining", "period", opts.drain.String())
	drainCtx, cancel := context.WithTimeout(context.Background(), opts.drain+10*time.Second)
	defer cancel()
	b.Drain(drainCtx, opts.drain)
	for _, s := range servers {
		_ = s.Shutdown(drainCtx)
	}
	return nil
}

// load reads the configuration and bundle from files, or makes them up for
// --allow-anonymous.
func load(log *slog.Logger, opts options) (cfgData []byte, cfg *brokerconfig.Config, bundleData []byte, err error) {
	if opts.anonymous {
		log.Warn("!!! --allow-anonymous: STANDALONE DEVELOPMENT MODE. Anyone who can reach " + opts.listen +
			" may publish and subscribe to every topic without a password. Never use this in production. !!!")
		cfg, bundle := Standalone(opts.listen)
		bundleData, err = brokerconfig.MarshalBundle(bundle)
		return nil, cfg, bundleData, err
	}
	cfgData, err = os.ReadFile(opts.configPath)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("reading configuration: %w", err)
	}
	if cfg, err = brokerconfig.Parse(cfgData); err != nil {
		return nil, nil, nil, err
	}
	bundleData, err = os.ReadFile(opts.bundlePath)
	if err != nil && !os.IsNotExist(err) {
		return nil, nil, nil, fmt.Errorf("reading auth bundle: %w", err)
	}
	return cfgData, cfg, bundleData, nil
}

// Standalone is the configuration and bundle of --allow-anonymous mode.
func Standalone(listen string) (*brokerconfig.Config, *brokerconfig.AuthBundle) {
	cfg := &brokerconfig.Config{
		Version:        brokerconfig.Version,
		Listeners:      []brokerconfig.Listener{{Name: "mqtt", Protocol: brokerconfig.ProtocolTCP, Address: listen}},
		HealthAddress:  "127.0.0.1:9090",
		AdminAddress:   "127.0.0.1:9091",
		AllowAnonymous: true,
		Limits: brokerconfig.Limits{
			MaxConnections: 10000, MaxPacketSize: 1 << 20, MaxInflight: 64, MaxQoS: 2, RetainAvailable: true,
			SessionExpirySeconds: 7200, MaxKeepaliveSeconds: 300, MaxSubscriptionsPerClient: 1000,
		},
		Storage: brokerconfig.Storage{Path: os.TempDir()},
	}
	bundle := &brokerconfig.AuthBundle{ACLs: []brokerconfig.ACL{{
		Name:     "standalone/anonymous",
		Subjects: brokerconfig.Subjects{Anonymous: true},
		Rules:    []brokerconfig.Rule{{Topic: "#", Access: brokerconfig.AccessPublishSubscribe, Effect: brokerconfig.EffectAllow}},
	}}}
	return cfg, bundle
}
