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

// loginFlood measures a real user's login while --flood-clients clients log
// in over and over with usernames that do not exist. The real user logs in
// --flood-logins times, each a fresh connection. It prints
// flood_login_ms_p99 (and _p50), and flood_unknown_refusals (refusals
// answered during the run).
func loginFlood(e *env, f *flags, out *report) error {
	b, err := e.start("flood", f.memoryLimit)
	if err != nil {
		return err
	}
	defer b.Stop()
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
				c, err := mqttc.Dial(b.addr, mqttc.Options{ClientID: fmt.Sprintf("flood-%d-%d", i, n), Username: fmt.Sprintf("nobody-%d-%d", i, n),
					Password: "guess", KeepaliveSeconds: 30, BufferSize: 512, Timeout: 5 * time.Second})
				if err != nil {
					refused.Add(1)
					continue
				}
				_ = c.Disconnect()
			}
		}()
	}
	time.Sleep(time.Second) // the flood is under way
	var ms []float64
	for i := range f.floodLogins {
		start := time.Now()
		c, err := b.dial(fmt.Sprintf("real-%d", i), 4096, 0)
		if err != nil {
			close(stop)
			wg.Wait()
			return fmt.Errorf("the real user's login %d: %w", i, err)
		}
		ms = append(ms, float64(time.Since(start).Microseconds())/1000)
		_ = c.Disconnect()
		time.Sleep(50 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	slices.Sort(ms)
	p50, p99 := measure.Percentile(ms, 0.50), measure.Percentile(ms, 0.99)
	logf("real login during a flood of %d clients with unknown usernames: p50 %.1f ms, p99 %.1f ms (%d refusals)", f.floodClients, p50, p99, refused.Load())
	out.add("flood_login_ms_p50", "%.1f", p50)
	out.add("flood_login_ms_p99", "%.1f", p99)
	out.add("flood_unknown_refusals", "%d", refused.Load())
	return nil
}
