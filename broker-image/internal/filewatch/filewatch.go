// Package filewatch calls back when mounted files' content changes.
// Kubernetes updates ConfigMap and Secret volumes by swapping a symlink
// (..data) in the files' directory, so the directory is watched, not the
// file; a slow poll backs up the watch in case an event is missed.
package filewatch

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/fsnotify/fsnotify"
)

// PollInterval is how often the files are re-read regardless of events.
var PollInterval = 30 * time.Second

// Watch calls onChange with the file's content whenever it differs from what
// was last seen (initial is the content already applied). It returns when ctx
// ends.
func Watch(ctx context.Context, path string, initial []byte, log *slog.Logger, onChange func([]byte)) {
	last := initial
	loop(ctx, []string{path}, log, func() {
		if data, ok := read(path, log); ok && !bytes.Equal(data, last) {
			last = data
			onChange(data)
		}
	})
}

// WatchSet calls onChange once whenever any of the files' content differs
// from what was last seen, however many of them changed together: a Secret
// update that replaces a certificate, its key and a CA at once is one
// change. The first check after start calls onChange when any file exists.
// It returns when ctx ends.
func WatchSet(ctx context.Context, paths []string, log *slog.Logger, onChange func()) {
	last := make([][]byte, len(paths))
	loop(ctx, paths, log, func() {
		data, errs := ReadAll(paths...)
		changed := false
		for i, err := range errs {
			if err != nil {
				if !os.IsNotExist(err) {
					log.Warn("reading watched file", "path", paths[i], "error", err.Error())
				}
				continue
			}
			if last[i] == nil || !bytes.Equal(data[i], last[i]) {
				last[i], changed = data[i], true
			}
		}
		if changed {
			onChange()
		}
	})
}

// maxReadAttempts bounds ReadAll's retries.
const maxReadAttempts = 1000

// ReadAll reads the files as they were at one moment, as far as the
// kubelet's atomic writer allows. The kubelet writes every version of a
// volume into a new directory and then swaps the ..data symlink to it, so
// ReadAll resolves the paths, reads the files they resolve to, and starts
// again when resolving once more gives other targets (a swap happened
// meanwhile): a Secret update never yields the old certificate with the new
// key. Files replaced in place, not through a symlink swap, are read as they
// are. errs[i] is the error of paths[i].
func ReadAll(paths ...string) (data [][]byte, errs []error) {
	for attempt := 0; ; attempt++ {
		targets := resolve(paths)
		data, errs = make([][]byte, len(paths)), make([]error, len(paths))
		for i, p := range paths {
			if targets[i] != "" {
				p = targets[i]
			}
			data[i], errs[i] = os.ReadFile(p)
		}
		// A swap between the two resolves means another try. The kubelet
		// swaps once per sync, so one retry nearly always does; the bound
		// is for a volume swapped without pause (the test's), where ten
		// tries on a loaded machine were sometimes all overtaken.
		if slices.Equal(targets, resolve(paths)) || attempt == maxReadAttempts-1 {
			return data, errs
		}
	}
}

func resolve(paths []string) []string {
	out := make([]string, len(paths))
	for i, p := range paths {
		out[i], _ = filepath.EvalSymlinks(p) // "" when missing: compared like any other
	}
	return out
}

func read(path string, log *slog.Logger) ([]byte, bool) {
	data, err := os.ReadFile(path)
	if err != nil {
		if !os.IsNotExist(err) {
			log.Warn("reading watched file", "path", path, "error", err.Error())
		}
		return nil, false
	}
	return data, true
}

// loop runs check on every event in the paths' directories, on every poll,
// and once at the start, until ctx ends.
func loop(ctx context.Context, paths []string, log *slog.Logger, check func()) {
	var events <-chan fsnotify.Event
	if w, err := fsnotify.NewWatcher(); err != nil {
		log.Warn("file events unavailable; polling only", "paths", paths, "error", err.Error())
	} else {
		defer w.Close()
		watched := map[string]bool{}
		for _, p := range paths {
			dir := filepath.Dir(p)
			if watched[dir] {
				continue
			}
			if err := w.Add(dir); err != nil {
				log.Warn("cannot watch directory; polling only", "path", p, "error", err.Error())
				continue
			}
			watched[dir] = true
		}
		events = w.Events
	}
	ticker := time.NewTicker(PollInterval)
	defer ticker.Stop()
	check()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
			check()
		case _, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			check()
		}
	}
}
