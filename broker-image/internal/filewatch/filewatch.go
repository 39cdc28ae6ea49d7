// Package filewatch calls back when a mounted file's content changes.
// Kubernetes updates ConfigMap and Secret volumes by swapping a symlink
// (..data) in the file's directory, so the directory is watched, not the file;
// a slow poll backs up the watch in case an event is missed.
package filewatch

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"
)

// PollInterval is how often the file is re-read regardless of events.
var PollInterval = 30 * time.Second

// Watch calls onChange with the file's content whenever it differs from what
// was last seen (initial is the content already applied). It returns when ctx
// ends.
func Watch(ctx context.Context, path string, initial []byte, log *slog.Logger, onChange func([]byte)) {
	last := initial
	check := func() {
		data, err := os.ReadFile(path)
		if err != nil {
			if !os.IsNotExist(err) {
				log.Warn("reading watched file", "path", path, "error", err.Error())
			}
			return
		}
		if bytes.Equal(data, last) {
			return
		}
		last = data
		onChange(data)
	}
	var events <-chan fsnotify.Event
	if w, err := fsnotify.NewWatcher(); err != nil {
		log.Warn("file events unavailable; polling only", "path", path, "error", err.Error())
	} else {
		defer w.Close()
		if err := w.Add(filepath.Dir(path)); err != nil {
			log.Warn("cannot watch directory; polling only", "path", path, "error", err.Error())
		} else {
			events = w.Events
		}
	}
	ticker := time.NewTicker(PollInterval)
	defer ticker.Stop()
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
