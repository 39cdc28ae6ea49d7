// Package contain keeps a panic in one of our hooks from killing the broker
// when mochi calls the hook on a goroutine that nobody recovers: a client's
// write loop (OnPacketSent, OnPacketEncode) and the server's event loop
// (expired sessions and retained messages, delayed wills and their fan-out:
// OnACLCheck, OnWill, OnQos*, OnRetainMessage, OnDisconnect ...). A panic on
// a client's read loop is already recovered by the guard, which closes that
// one connection (mqtt_connection_panics_total).
//
// Hook wraps one of our hooks; each wrapped call recovers, counts the panic
// (mqtt_hook_panics_total), logs it with its stack (the first time for each
// hook method, then at most once a minute) and returns a fail-safe result:
// an ACL check denies, a will is dropped, a packet goes out as it was.
package contain

import (
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/mochi-mqtt/server/v2/system"
)

// Recoverer counts and logs the panics it recovers.
type Recoverer struct {
	Count atomic.Uint64
	Log   *slog.Logger

	mu      sync.Mutex
	lastLog map[string]time.Time
}

// logEvery limits the log lines of one site that keeps panicking.
const logEvery = time.Minute

// Recover must be deferred directly (defer r.Recover("where")); it stops a
// panic, if any, and reports whether it did through recovered when not nil.
func (r *Recoverer) Recover(where string, recovered *bool) {
	v := recover()
	if v == nil {
		return
	}
	if recovered != nil {
		*recovered = true
	}
	r.Count.Add(1)
	r.mu.Lock()
	if r.lastLog == nil {
		r.lastLog = map[string]time.Time{}
	}
	last, seen := r.lastLog[where]
	now := time.Now()
	logIt := !seen || now.Sub(last) >= logEvery
	if logIt {
		r.lastLog[where] = now
	}
	r.mu.Unlock()
	if !logIt || r.Log == nil {
		return
	}
	if seen {
		r.Log.Error("recovered from a panic again (see the first one's stack)", "in", where, "panic", fmt.Sprint(v), "total", r.Count.Load())
		return
	}
	r.Log.Error("recovered from a panic; the broker goes on", "in", where, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
}

// Hook returns h with its calls from unrecovered goroutines contained by r.
// Every other call goes to h unchanged.
func Hook(h mqtt.Hook, r *Recoverer) mqtt.Hook { return &hook{Hook: h, r: r} }

type hook struct {
	mqtt.Hook
	r *Recoverer
}

func (h *hook) site(method string) string { return h.Hook.ID() + "." + method }

func (h *hook) OnACLCheck(cl *mqtt.Client, topic string, write bool) (allowed bool) {
	var failed bool
	defer func() {
		if failed {
			allowed = false
		}
	}()
	defer h.r.Recover(h.site("OnACLCheck"), &failed)
	return h.Hook.OnACLCheck(cl, topic, write)
}

func (h *hook) OnWill(cl *mqtt.Client, will mqtt.Will) (out mqtt.Will, err error) {
	var failed bool
	defer func() {
		if failed {
			out, err = mqtt.Will{}, nil // an empty will reaches nobody (policy/will.go)
		}
	}()
	defer h.r.Recover(h.site("OnWill"), &failed)
	return h.Hook.OnWill(cl, will)
}

func (h *hook) OnPacketEncode(cl *mqtt.Client, pk packets.Packet) (out packets.Packet) {
	var failed bool
	defer func() {
		if failed {
			out = pk
		}
	}()
	defer h.r.Recover(h.site("OnPacketEncode"), &failed)
	return h.Hook.OnPacketEncode(cl, pk)
}

func (h *hook) OnSelectSubscribers(subs *mqtt.Subscribers, pk packets.Packet) (out *mqtt.Subscribers) {
	var failed bool
	defer func() {
		if failed {
			out = subs
		}
	}()
	defer h.r.Recover(h.site("OnSelectSubscribers"), &failed)
	return h.Hook.OnSelectSubscribers(subs, pk)
}

func (h *hook) OnPacketSent(cl *mqtt.Client, pk packets.Packet, b []byte) {
	defer h.r.Recover(h.site("OnPacketSent"), nil)
	h.Hook.OnPacketSent(cl, pk, b)
}

func (h *hook) OnDisconnect(cl *mqtt.Client, err error, expire bool) {
	defer h.r.Recover(h.site("OnDisconnect"), nil)
	h.Hook.OnDisconnect(cl, err, expire)
}

func (h *hook) OnPublishDropped(cl *mqtt.Client, pk packets.Packet) {
	defer h.r.Recover(h.site("OnPublishDropped"), nil)
	h.Hook.OnPublishDropped(cl, pk)
}

func (h *hook) OnRetainMessage(cl *mqtt.Client, pk packets.Packet, r int64) {
	defer h.r.Recover(h.site("OnRetainMessage"), nil)
	h.Hook.OnRetainMessage(cl, pk, r)
}

func (h *hook) OnQosPublish(cl *mqtt.Client, pk packets.Packet, sent int64, resends int) {
	defer h.r.Recover(h.site("OnQosPublish"), nil)
	h.Hook.OnQosPublish(cl, pk, sent, resends)
}

func (h *hook) OnQosComplete(cl *mqtt.Client, pk packets.Packet) {
	defer h.r.Recover(h.site("OnQosComplete"), nil)
	h.Hook.OnQosComplete(cl, pk)
}

func (h *hook) OnQosDropped(cl *mqtt.Client, pk packets.Packet) {
	defer h.r.Recover(h.site("OnQosDropped"), nil)
	h.Hook.OnQosDropped(cl, pk)
}

func (h *hook) OnWillSent(cl *mqtt.Client, pk packets.Packet) {
	defer h.r.Recover(h.site("OnWillSent"), nil)
	h.Hook.OnWillSent(cl, pk)
}

func (h *hook) OnClientExpired(cl *mqtt.Client) {
	defer h.r.Recover(h.site("OnClientExpired"), nil)
	h.Hook.OnClientExpired(cl)
}

func (h *hook) OnRetainedExpired(filter string) {
	defer h.r.Recover(h.site("OnRetainedExpired"), nil)
	h.Hook.OnRetainedExpired(filter)
}

func (h *hook) OnSysInfoTick(info *system.Info) {
	defer h.r.Recover(h.site("OnSysInfoTick"), nil)
	h.Hook.OnSysInfoTick(info)
}
