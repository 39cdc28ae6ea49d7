package localpods

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"
)

// TestWriteAtomic checks the kubelet's volume layout, which the broker's file
// watch relies on: files reached through "..data", swapped in one rename.
func TestWriteAtomic(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "vol")
	first := map[string]volumeFile{"auth.json": {data: []byte("v1"), mode: 0o440}, "old": {data: []byte("x"), mode: 0o644}}
	if err := writeAtomic(dir, first); err != nil {
		t.Fatal(err)
	}
	assertFile(t, filepath.Join(dir, "auth.json"), "v1")
	if target, err := os.Readlink(filepath.Join(dir, "auth.json")); err != nil || target != filepath.Join("..data", "auth.json") {
		t.Errorf("auth.json should be a symlink through ..data, got %q (%v)", target, err)
	}
	info, err := os.Stat(filepath.Join(dir, "auth.json"))
	if err != nil || info.Mode().Perm() != 0o440 {
		t.Errorf("auth.json mode = %v (%v), want 0440", info.Mode().Perm(), err)
	}
	firstTs, _ := os.Readlink(filepath.Join(dir, "..data"))

	second := map[string]volumeFile{"auth.json": {data: []byte("v2"), mode: 0o440}, "new": {data: []byte("y"), mode: 0o644}}
	if err := writeAtomic(dir, second); err != nil {
		t.Fatal(err)
	}
	assertFile(t, filepath.Join(dir, "auth.json"), "v2")
	assertFile(t, filepath.Join(dir, "new"), "y")
	if _, err := os.Lstat(filepath.Join(dir, "old")); !os.IsNotExist(err) {
		t.Errorf("a removed key must disappear, got %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, firstTs)); !os.IsNotExist(err) {
		t.Errorf("the previous timestamped directory must be removed, got %v", err)
	}
	entries, _ := os.ReadDir(dir)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if len(names) != 4 || !strings.HasPrefix(names[0], "..2") || names[1] != "..data" || names[2] != "auth.json" || names[3] != "new" {
		t.Errorf("volume directory holds %v, want [..<timestamp> ..data auth.json new]", names)
	}
}

func assertFile(t *testing.T, path, want string) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil || string(got) != want {
		t.Errorf("%s = %q (%v), want %q", path, got, err, want)
	}
}

func TestProject(t *testing.T) {
	data := map[string][]byte{"a": []byte("1"), "b": []byte("2")}
	all, err := project(data, nil, ptr.To(int32(0o440)))
	if err != nil || len(all) != 2 || all["a"].mode != 0o440 {
		t.Errorf("all keys: %v %v", all, err)
	}
	some, err := project(data, []corev1.KeyToPath{{Key: "b", Path: "dir/b.txt", Mode: ptr.To(int32(0o400))}}, nil)
	if err != nil || len(some) != 1 || string(some["dir/b.txt"].data) != "2" || some["dir/b.txt"].mode != 0o400 {
		t.Errorf("items: %v %v", some, err)
	}
	if _, err := project(data, []corev1.KeyToPath{{Key: "missing", Path: "m"}}, nil); err == nil {
		t.Error("an item naming a missing key must fail, as it does for the kubelet")
	}
	if digest(all) == digest(some) {
		t.Error("different content must have different digests")
	}
}
