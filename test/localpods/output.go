package localpods

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"sync"
)

// podOutput collects everything a pod's processes write, across restarts and
// re-creations of the pod, and copies it line by line, prefixed with the
// pod's name, to the harness's log.
type podOutput struct {
	prefix string
	log    io.Writer
	logMu  *sync.Mutex // shared by all pods: lines never interleave
	notes  *slog.Logger

	mu      sync.Mutex
	all     bytes.Buffer
	partial []byte
}

func newPodOutput(prefix string, log io.Writer, logMu *sync.Mutex) *podOutput {
	o := &podOutput{prefix: prefix, log: log, logMu: logMu}
	// JSON like the broker's own lines, so one reader handles both.
	o.notes = slog.New(slog.NewJSONHandler(o, nil)).With("component", "localpods")
	return o
}

func (o *podOutput) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.all.Write(p)
	if o.log == nil {
		return len(p), nil
	}
	o.partial = append(o.partial, p...)
	for {
		i := bytes.IndexByte(o.partial, '\n')
		if i < 0 {
			break
		}
		o.logMu.Lock()
		_, _ = fmt.Fprintf(o.log, "%s %s", o.prefix, o.partial[:i+1])
		o.logMu.Unlock()
		o.partial = o.partial[i+1:]
	}
	o.partial = bytes.Clone(o.partial) // drop the consumed prefix's memory
	return len(p), nil
}

// note records what the harness did to the pod, between the broker's own
// lines, so a failing test's log tells the whole story. Never a secret.
func (o *podOutput) note(msg string, args ...any) { o.notes.Info(msg, args...) }

func (o *podOutput) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.all.String()
}
