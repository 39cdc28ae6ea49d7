package localpods

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"

	"k8s.io/apimachinery/pkg/types"
)

// hostIP is the "node's" address; pods get the other loopback addresses.
const hostIP = "127.0.0.1"

// ipAllocator hands each pod name its own loopback address, 127.0.0.2 and up
// (Linux routes all of 127/8 to lo). A pod keeps its address when it is
// re-created, as it keeps its DNS name on a real cluster, so tests can hold
// on to it. An address is also locked across processes (flock on a file
// under the temp dir), because `go test ./...` runs several test binaries at
// once and two harnesses must not both bind 127.0.0.2:1883. The kernel drops
// the locks when the process ends, however it ends.
type ipAllocator struct {
	dir string

	mu    sync.Mutex
	next  uint32
	byPod map[types.NamespacedName]string
	locks []*os.File
}

// maxAddressTries bounds the search when addresses are locked by others.
const maxAddressTries = 4096

func newIPAllocator() *ipAllocator {
	return &ipAllocator{
		dir:   filepath.Join(os.TempDir(), "mqtt-operator-localpods-ips"),
		next:  2,
		byPod: map[types.NamespacedName]string{},
	}
}

// addr returns the pod's address, allocating one on first use.
func (a *ipAllocator) addr(pod types.NamespacedName) (string, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if ip, ok := a.byPod[pod]; ok {
		return ip, nil
	}
	if err := os.MkdirAll(a.dir, 0o777); err != nil {
		return "", fmt.Errorf("creating address lock directory: %w", err)
	}
	// Shared like /tmp, so every user's harness can lock addresses there.
	_ = os.Chmod(a.dir, 0o777|os.ModeSticky)
	for tries := 0; tries < maxAddressTries; tries, a.next = tries+1, a.next+1 {
		n := a.next
		if n&0xff == 0 || n&0xff == 0xff {
			continue // .0 and .255 look like network and broadcast addresses to some tools
		}
		ip := net.IPv4(127, byte(n>>16), byte(n>>8), byte(n)).String()
		// Read-only is enough for flock and works on another user's file.
		f, err := os.OpenFile(filepath.Join(a.dir, ip), os.O_CREATE|os.O_RDONLY, 0o644)
		if err != nil {
			continue // another user's lock file: that address is theirs
		}
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			_ = f.Close()
			if errors.Is(err, syscall.EWOULDBLOCK) {
				continue
			}
			return "", fmt.Errorf("locking address %s: %w", ip, err)
		}
		a.next++
		a.locks = append(a.locks, f)
		a.byPod[pod] = ip
		return ip, nil
	}
	return "", fmt.Errorf("no free loopback address after %d tries (locks in %s)", maxAddressTries, a.dir)
}

// lookup returns the pod's address if it has one.
func (a *ipAllocator) lookup(pod types.NamespacedName) string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.byPod[pod]
}

// release gives every address back.
func (a *ipAllocator) release() {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, f := range a.locks {
		_ = f.Close()
	}
	a.locks = nil
}
