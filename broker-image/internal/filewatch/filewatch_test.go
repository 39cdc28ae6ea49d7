package filewatch

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

// volume is a directory laid out as the kubelet lays out a Secret volume:
// each key a symlink through ..data to a timestamped directory, replaced as a
// whole by renaming a new ..data symlink over the old one.
type volume struct {
	dir  string
	keys []string
	n    int
}

func newVolume(t *testing.T, content map[string]string) *volume {
	v := &volume{dir: t.TempDir()}
	for k := range content {
		v.keys = append(v.keys, k)
	}
	v.swap(t, content)
	for _, k := range v.keys {
		if err := os.Symlink(filepath.Join("..data", k), filepath.Join(v.dir, k)); err != nil {
			t.Fatal(err)
		}
	}
	return v
}

func (v *volume) swap(t *testing.T, content map[string]string) {
	t.Helper()
	if err := v.replace(content); err != nil {
		t.Fatal(err)
	}
}

// replace writes content into a new directory and swaps ..data to it.
func (v *volume) replace(content map[string]string) error {
	v.n++
	data := fmt.Sprintf("..2026_11_28_%d", v.n)
	if err := os.Mkdir(filepath.Join(v.dir, data), 0o755); err != nil {
		return err
	}
	for k, c := range content {
		if err := os.WriteFile(filepath.Join(v.dir, data, k), []byte(c), 0o600); err != nil {
			return err
		}
	}
	tmp := filepath.Join(v.dir, "..data_tmp")
	if err := os.Symlink(data, tmp); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(v.dir, "..data"))
}

func (v *volume) paths() []string {
	var out []string
	for _, k := range v.keys {
		out = append(out, filepath.Join(v.dir, k))
	}
	return out
}

// A Secret update that replaces the certificate, its key and the client CA
// together is one reload, not one per file; an update that changes nothing
// is none.
func TestWatchSetCallsOncePerChange(t *testing.T) {
	v := newVolume(t, map[string]string{"tls.crt": "cert 1", "tls.key": "key 1", "client-ca.crt": "ca 1"})
	var calls atomic.Int32
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		WatchSet(ctx, v.paths(), slog.New(slog.NewTextHandler(io.Discard, nil)), func() { calls.Add(1) })
	}()
	defer func() { cancel(); <-done }()

	settle := func(want int32, what string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for calls.Load() < want && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		time.Sleep(300 * time.Millisecond) // any further events arrive meanwhile
		if got := calls.Load(); got != want {
			t.Fatalf("%s: %d calls in all, want %d", what, got, want)
		}
	}
	settle(1, "start") // the first check sees the files
	v.swap(t, map[string]string{"tls.crt": "cert 2", "tls.key": "key 2", "client-ca.crt": "ca 2"})
	settle(2, "all three files replaced")
	v.swap(t, map[string]string{"tls.crt": "cert 2", "tls.key": "key 2", "client-ca.crt": "ca 3"})
	settle(3, "only the client CA replaced")
	v.swap(t, map[string]string{"tls.crt": "cert 2", "tls.key": "key 2", "client-ca.crt": "ca 3"})
	settle(3, "same content again")
}

// Watch passes the new content, and only when it differs from the last seen.
func TestWatchPassesChangedContent(t *testing.T) {
	v := newVolume(t, map[string]string{"bundle.json": "one"})
	got := make(chan string, 10)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		Watch(ctx, v.paths()[0], []byte("one"), slog.New(slog.NewTextHandler(io.Discard, nil)), func(b []byte) { got <- string(b) })
	}()
	defer func() { cancel(); <-done }()
	v.swap(t, map[string]string{"bundle.json": "one"})
	v.swap(t, map[string]string{"bundle.json": "two"})
	select {
	case s := <-got:
		if s != "two" {
			t.Fatalf("got %q, want the changed content %q", s, "two")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no callback for a changed file")
	}
}

// While the kubelet replaces the volume over and over (each version in a new
// directory, ..data swapped to it, the old directory removed), every ReadAll
// returns a certificate and key of the same version.
func TestReadAllNeverMixesVersions(t *testing.T) {
	v := newVolume(t, map[string]string{"tls.crt": "0", "tls.key": "0"})
	stop := make(chan struct{})
	swaps := make(chan int)
	go func() {
		n := 0
		defer func() { swaps <- n }()
		for {
			select {
			case <-stop:
				return
			default:
			}
			old, err := os.Readlink(filepath.Join(v.dir, "..data"))
			if err != nil {
				t.Error(err)
				return
			}
			version := fmt.Sprint(n + 1)
			if err := v.replace(map[string]string{"tls.crt": version, "tls.key": version}); err != nil {
				t.Error(err)
				return
			}
			if err := os.RemoveAll(filepath.Join(v.dir, old)); err != nil {
				t.Error(err)
				return
			}
			n++
		}
	}()
	versions := map[string]bool{}
	for range 3000 {
		data, errs := ReadAll(v.paths()...)
		if errs[0] != nil || errs[1] != nil || string(data[0]) != string(data[1]) {
			close(stop)
			<-swaps
			t.Fatalf("read %s=%q (%v) with %s=%q (%v)", v.keys[0], data[0], errs[0], v.keys[1], data[1], errs[1])
		}
		versions[string(data[0])] = true
	}
	close(stop)
	if n := <-swaps; n < 100 || len(versions) < 10 {
		t.Fatalf("%d swaps, %d versions read: the race was not exercised", n, len(versions))
	}
}
