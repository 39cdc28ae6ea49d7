package localpods

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"

	"github.com/mqtt-operator/mqtt-operator/internal/testenv"
)

var builds = struct {
	sync.Mutex
	done map[string]string
}{done: map[string]string{}}

// BuildBroker compiles ./broker-image into dir/broker and returns its path.
// It builds once per process and directory; the Go build cache makes a
// rebuild of unchanged sources take about a second. Tests pass a directory
// that lives as long as the test binary (made in TestMain), not t.TempDir().
func BuildBroker(dir string) (string, error) {
	builds.Lock()
	defer builds.Unlock()
	if bin, ok := builds.done[dir]; ok {
		return bin, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("creating broker build directory: %w", err)
	}
	bin := filepath.Join(dir, "broker")
	cmd := exec.Command("go", "build", "-o", bin, "./broker-image")
	cmd.Dir = testenv.RepoRoot()
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building the broker (go build ./broker-image): %w\n%s", err, out)
	}
	builds.done[dir] = bin
	return bin, nil
}
