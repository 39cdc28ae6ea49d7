package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"math"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mqtt-operator/mqtt-operator/test/bench/benchproc"
	"github.com/mqtt-operator/mqtt-operator/test/bench/measure"
)

// connTimeout bounds one connection, dial to CONNACK.
const connTimeout = 10 * time.Second

// connectOnce opens a TCP connection to addr, completes a TLS handshake with
// cfg (verifying the server), sends an MQTT 3.1.1 CONNECT (clean session),
// reads a successful CONNACK, sends DISCONNECT and closes.
func connectOnce(addr string, cfg *tls.Config, clientID, username, password string) (tls.ConnectionState, error) {
	d := net.Dialer{Timeout: connTimeout, LocalAddr: &net.TCPAddr{IP: benchproc.SourceIP()}}
	raw, err := d.Dial("tcp", addr)
	if err != nil {
		return tls.ConnectionState{}, fmt.Errorf("dial: %w", err)
	}
	c := tls.Client(raw, cfg)
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(connTimeout))
	if err := c.HandshakeContext(context.Background()); err != nil {
		return tls.ConnectionState{}, fmt.Errorf("TLS handshake: %w", err)
	}
	if _, err := c.Write(connectPacket(clientID, username, password)); err != nil {
		return tls.ConnectionState{}, fmt.Errorf("sending CONNECT: %w", err)
	}
	var ack [4]byte
	if _, err := io.ReadFull(c, ack[:]); err != nil {
		return tls.ConnectionState{}, fmt.Errorf("reading CONNACK: %w", err)
	}
	if ack[0] != 0x20 || ack[1] != 2 {
		return tls.ConnectionState{}, fmt.Errorf("expected CONNACK, got % x", ack)
	}
	if ack[3] != 0 {
		return tls.ConnectionState{}, fmt.Errorf("CONNECT refused: return code %d", ack[3])
	}
	st := c.ConnectionState()
	_, _ = c.Write([]byte{0xe0, 0}) // DISCONNECT
	return st, nil
}

// connectPacket is an MQTT 3.1.1 CONNECT with a clean session and a 60 s
// keepalive.
func connectPacket(clientID, username, password string) []byte {
	flags := byte(0x02)
	body := []byte{0, 4, 'M', 'Q', 'T', 'T', 4, 0, 0, 60}
	body = appendString(body, clientID)
	if username != "" {
		flags |= 0x80
		body = appendString(body, username)
	}
	if password != "" {
		flags |= 0x40
		body = appendString(body, password)
	}
	body[7] = flags
	pkt := []byte{0x10}
	for n := len(body); ; { // remaining length, variable-byte integer
		b := byte(n % 128)
		if n /= 128; n > 0 {
			b |= 0x80
		}
		pkt = append(pkt, b)
		if n == 0 {
			break
		}
	}
	return append(pkt, body...)
}

func appendString(b []byte, s string) []byte {
	return append(append(b, byte(len(s)>>8), byte(len(s))), s...)
}

// Phases of a load run.
const (
	warmingUp int32 = iota
	measuring
	stopping
)

// runLoad has clients workers connect to t in a loop, each with a fresh
// client configuration and its own user, for warmup and then duration.
// Counted are the connections that end (CONNACK or error) while measuring;
// the broker's and the generator's CPU time is taken over the same window.
func runLoad(t *target, s *setup, clients int, warmup, duration time.Duration) result {
	var phase atomic.Int32
	var ok, failed, resumed atomic.Int64
	var firstErr atomic.Pointer[error]
	latencies := make([][]float64, clients)
	var wg sync.WaitGroup
	for w := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			username, password := t.creds(w)
			for i := 0; phase.Load() != stopping; i++ {
				start := time.Now()
				st, err := connectOnce(t.addr, s.clientConfig(), fmt.Sprintf("bench-tls-%d-%d", w, i), username, password)
				elapsed := time.Since(start)
				if err != nil {
					firstErr.CompareAndSwap(nil, &err)
				}
				if phase.Load() != measuring {
					continue
				}
				switch {
				case err != nil:
					failed.Add(1)
				default:
					ok.Add(1)
					if st.DidResume {
						resumed.Add(1)
					}
					latencies[w] = append(latencies[w], elapsed.Seconds())
				}
			}
		}()
	}
	time.Sleep(warmup)
	pid := t.proc.PID()
	busy0, total0 := measure.MachineCPUSeconds()
	cpu0, gen0, t0 := measure.CPUSeconds(pid), measure.SelfCPUSeconds(), time.Now()
	phase.Store(measuring)
	time.Sleep(duration)
	phase.Store(stopping)
	res := result{elapsed: time.Since(t0), brokerCPU: measure.CPUSeconds(pid) - cpu0, genCPU: measure.SelfCPUSeconds() - gen0}
	busy1, total1 := measure.MachineCPUSeconds()
	res.machineBusy = (busy1 - busy0) / math.Max(1e-9, total1-total0)
	// Per-process times are exact, /proc/stat counts ticks: a few percent
	// apart, so only a clearly positive difference means anything.
	res.otherCPU = max(0, (busy1-busy0)-res.brokerCPU-res.genCPU)
	wg.Wait()
	res.ok, res.errors, res.resumed = ok.Load(), failed.Load(), resumed.Load()
	res.latencies = slices.Concat(latencies...)
	slices.Sort(res.latencies)
	if e := firstErr.Load(); e != nil {
		res.firstErr = *e
	}
	return res
}
