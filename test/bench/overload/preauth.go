package main

import (
	"fmt"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mqtt-operator/mqtt-operator/test/bench/broker/mqttc"
	"github.com/mqtt-operator/mqtt-operator/test/bench/measure"
)

// preauthFlood measures what connections that never log in cost: --preauth-
// sockets sockets each announce a 1 MiB CONNECT and send part of it, or
// nothing at all, while a real client logs in. It prints
// preauth_flood_rss_mib (the broker's peak resident memory),
// preauth_flood_open (sockets the broker still holds), and
// preauth_flood_login_ok (1 when the real client got in).
func preauthFlood(e *env, f *flags, out *report) error {
	b, err := e.start("preauth", f.memoryLimit)
	if err != nil {
		return err
	}
	defer b.Stop()
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}()
	part := make([]byte, 64<<10)
	for i := range f.preauthSockets {
		c, err := net.DialTimeout("tcp", b.addr, 5*time.Second)
		if err != nil {
			return fmt.Errorf("socket %d: %w", i, err)
		}
		conns = append(conns, c)
		if i%2 == 0 { // half announce a 1 MiB CONNECT and send 64 KiB of it
			_ = c.SetWriteDeadline(time.Now().Add(time.Second))
			_, _ = c.Write(append([]byte{0x10, 0x80, 0x80, 0x40, 0, 4, 'M', 'Q', 'T', 'T'}, part...))
		}
	}
	login := 0
	if c, err := b.dial("real-client", 4096, 0); err == nil {
		login = 1
		_ = c.Disconnect()
	}
	_, hwm, err := measure.Memory(b.PID())
	if err != nil {
		return err
	}
	open, _ := b.metric("mqtt_connections")
	logf("%d sockets not logging in (half part-way through a 1 MiB CONNECT): peak RSS %d MiB, %0.f still open, real login ok=%d",
		f.preauthSockets, hwm>>10, open, login)
	out.add("preauth_flood_rss_mib", "%d", hwm>>10)
	out.add("preauth_flood_open", "%.0f", open)
	out.add("preauth_flood_login_ok", "%d", login)
	return nil
}

// loginFlood measures real users' logins while --flood-clients clients log
// in over and over, first with usernames that do not exist (flood_), then
// with wrong passwords for "person", a user whose name the attackers know
// (guess_flood_). Each real user logs in --flood-logins times, each a fresh
// connection: "bench" (generated password, salted SHA-256: _ms_) and "other"
// (chosen password, bcrypt: _bcrypt_ms_). It prints the p50 and p99 of each,
// and the refusals answered to the flood.
func loginFlood(e *env, f *flags, out *report) error {
	b, err := e.start("flood", f.memoryLimit)
	if err != nil {
		return err
	}
	defer b.Stop()
	floods := []struct {
		prefix, what string
		attacker     func(i, n int) (user, password string)
	}{
		{"flood", "unknown usernames", func(i, n int) (string, string) { return fmt.Sprintf("nobody-%d-%d", i, n), "guess" }},
		{"guess_flood", `wrong passwords for "person"`, func(i, n int) (string, string) { return "person", fmt.Sprintf("guess-%d-%d", i, n) }},
	}
	for _, fl := range floods {
		stop := make(chan struct{})
		var wg sync.WaitGroup
		var refused atomic.Int64
		for i := range f.floodClients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for n := 0; ; n++ {
					select {
					case <-stop:
						return
					default:
					}
					user, password := fl.attacker(i, n)
					c, err := mqttc.Dial(b.addr, mqttc.Options{ClientID: fmt.Sprintf("%s-%d-%d", fl.prefix, i, n), Username: user,
						Password: password, KeepaliveSeconds: 30, BufferSize: 512, Timeout: 5 * time.Second})
					if err != nil {
						refused.Add(1)
						continue
					}
					_ = c.Disconnect()
				}
			}()
		}
		time.Sleep(time.Second) // the flood is under way
		users := []struct{ name, password, metric string }{
			{"bench", b.password, fl.prefix + "_login_ms"},
			{"other", e.chosen["other"].password, fl.prefix + "_login_bcrypt_ms"},
		}
		for _, u := range users {
			var ms []float64
			for i := range f.floodLogins {
				start := time.Now()
				c, err := mqttc.Dial(b.addr, mqttc.Options{ClientID: fmt.Sprintf("real-%s-%d", u.name, i), Username: u.name, Password: u.password,
					KeepaliveSeconds: 300, BufferSize: 4096, Timeout: 10 * time.Second})
				if err != nil {
					close(stop)
					wg.Wait()
					return fmt.Errorf("%s's login %d during a flood of %s: %w", u.name, i, fl.what, err)
				}
				ms = append(ms, float64(time.Since(start).Microseconds())/1000)
				_ = c.Disconnect()
				time.Sleep(50 * time.Millisecond)
			}
			slices.Sort(ms)
			p50, p99 := measure.Percentile(ms, 0.50), measure.Percentile(ms, 0.99)
			logf("%s's login during a flood of %d clients with %s: p50 %.1f ms, p99 %.1f ms", u.name, f.floodClients, fl.what, p50, p99)
			out.add(u.metric+"_p50", "%.1f", p50)
			out.add(u.metric+"_p99", "%.1f", p99)
		}
		close(stop)
		wg.Wait()
		logf("%d refusals answered to the flood of %s", refused.Load(), fl.what)
		out.add(fl.prefix+"_refusals", "%d", refused.Load())
	}
	return nil
}
