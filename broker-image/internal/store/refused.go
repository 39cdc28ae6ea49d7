package store

import (
	"time"
)

// refusalLogInterval is the least time between two log lines about refused
// writes: a client that keeps sending what cannot be stored must not flood
// the log. The metric counts every one.
const refusalLogInterval = time.Minute

// refusedWrite counts a change the database refused on its own (the rest of
// its batch was committed) and logs it at most once a refusalLogInterval.
// The line names the bucket and sizes only: keys hold topics and client IDs,
// values payloads.
func (h *Hook) refusedWrite(o op, err error) {
	total := h.Counters.WritesRefused.Add(1)
	now := time.Now().UnixNano()
	last := h.lastRefusalLog.Load()
	if now-last < int64(refusalLogInterval) || !h.lastRefusalLog.CompareAndSwap(last, now) {
		return
	}
	h.log.Error("persistent store refused a change; it is lost on restart, the rest of its batch was stored",
		"bucket", string(o.bucket), "keyBytes", len(o.key), "valueBytes", len(o.val),
		"error", err.Error(), "refusedTotal", total)
}
