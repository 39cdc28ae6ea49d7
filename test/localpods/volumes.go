package localpods

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// volumeFile is one file of a ConfigMap or Secret volume.
type volumeFile struct {
	data []byte
	mode os.FileMode
}

// The kubelet's defaults for ConfigMap and Secret volumes.
const defaultVolumeMode = 0o644

// project returns the files a ConfigMap or Secret volume shows for data: every
// key, or only the listed items at their paths, with the volume's modes.
func project(data map[string][]byte, items []corev1.KeyToPath, defaultMode *int32) (map[string]volumeFile, error) {
	mode := os.FileMode(defaultVolumeMode)
	if defaultMode != nil {
		mode = os.FileMode(*defaultMode) & os.ModePerm
	}
	files := map[string]volumeFile{}
	if len(items) == 0 {
		for k, v := range data {
			files[k] = volumeFile{data: v, mode: mode}
		}
		return files, nil
	}
	for _, it := range items {
		v, ok := data[it.Key]
		if !ok {
			return nil, fmt.Errorf("key %q is not in the source", it.Key)
		}
		m := mode
		if it.Mode != nil {
			m = os.FileMode(*it.Mode) & os.ModePerm
		}
		files[it.Path] = volumeFile{data: v, mode: m}
	}
	return files, nil
}

// digest identifies the content of files, to tell whether a volume on disk
// still matches its source.
func digest(files map[string]volumeFile) string {
	h := sha256.New()
	for _, k := range slices.Sorted(maps.Keys(files)) {
		fmt.Fprintf(h, "%s\x00%o\x00%d\x00", k, files[k].mode, len(files[k].data))
		h.Write(files[k].data)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// writeAtomic replaces the content of a ConfigMap or Secret volume directory
// the way the kubelet's AtomicWriter does, because the broker's file watch
// depends on exactly that shape: the files live in a fresh timestamped
// directory, the "..data" symlink is switched to it with one rename, and each
// visible top-level name is a symlink through "..data". A reader therefore
// sees the old set of files or the new one, never a mix.
func writeAtomic(dir string, files map[string]volumeFile) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("creating volume directory: %w", err)
	}
	tsDir, err := os.MkdirTemp(dir, time.Now().UTC().Format("..2006_01_02_15_04_05."))
	if err != nil {
		return fmt.Errorf("creating timestamped directory: %w", err)
	}
	if err := os.Chmod(tsDir, 0o755); err != nil {
		return fmt.Errorf("opening timestamped directory: %w", err)
	}
	for name, f := range files {
		p := filepath.Join(tsDir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return fmt.Errorf("creating directory for %s: %w", name, err)
		}
		if err := os.WriteFile(p, f.data, 0o600); err != nil {
			return fmt.Errorf("writing %s: %w", name, err)
		}
		if err := os.Chmod(p, f.mode); err != nil {
			return fmt.Errorf("setting mode of %s: %w", name, err)
		}
	}
	dataLink := filepath.Join(dir, "..data")
	oldTs, _ := os.Readlink(dataLink) // none on the first write
	tmpLink := filepath.Join(dir, "..data_tmp")
	_ = os.Remove(tmpLink)
	if err := os.Symlink(filepath.Base(tsDir), tmpLink); err != nil {
		return fmt.Errorf("linking new content: %w", err)
	}
	if err := os.Rename(tmpLink, dataLink); err != nil {
		return fmt.Errorf("switching ..data to new content: %w", err)
	}
	visible := map[string]bool{}
	for name := range files {
		top, _, _ := strings.Cut(name, "/")
		visible[top] = true
		link := filepath.Join(dir, top)
		if _, err := os.Lstat(link); os.IsNotExist(err) {
			if err := os.Symlink(filepath.Join("..data", top), link); err != nil {
				return fmt.Errorf("linking %s: %w", top, err)
			}
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("listing volume directory: %w", err)
	}
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), "..") && !visible[e.Name()] {
			if err := os.Remove(filepath.Join(dir, e.Name())); err != nil {
				return fmt.Errorf("removing stale %s: %w", e.Name(), err)
			}
		}
	}
	if oldTs != "" && oldTs != filepath.Base(tsDir) {
		if err := os.RemoveAll(filepath.Join(dir, oldTs)); err != nil {
			return fmt.Errorf("removing old content: %w", err)
		}
	}
	return nil
}
