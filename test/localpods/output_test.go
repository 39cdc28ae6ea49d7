package localpods

import (
	"strings"
	"sync"
	"testing"

	"k8s.io/apimachinery/pkg/types"
)

func TestPodOutputPrefixesWholeLines(t *testing.T) {
	var log strings.Builder
	o := newPodOutput("ns/b-0", &log, &sync.Mutex{})
	for _, chunk := range []string{"first li", "ne\nsecond line\nthi", "rd"} {
		if _, err := o.Write([]byte(chunk)); err != nil {
			t.Fatal(err)
		}
	}
	if want := "ns/b-0 first line\nns/b-0 second line\n"; log.String() != want {
		t.Errorf("log = %q, want %q (an unfinished line waits for its end)", log.String(), want)
	}
	if want := "first line\nsecond line\nthird"; o.String() != want {
		t.Errorf("output = %q, want %q", o.String(), want)
	}
}

func TestAddressesAreExclusive(t *testing.T) {
	a, b := newIPAllocator(), newIPAllocator() // as two harnesses, or two test binaries
	defer a.release()
	defer b.release()
	pod := types.NamespacedName{Namespace: "ns", Name: "b-0"}
	ipA, err := a.addr(pod)
	if err != nil {
		t.Fatal(err)
	}
	ipB, err := b.addr(pod)
	if err != nil {
		t.Fatal(err)
	}
	if ipA == ipB || ipA == hostIP || !strings.HasPrefix(ipA, "127.") {
		t.Errorf("addresses %s and %s: want two distinct loopback addresses other than %s", ipA, ipB, hostIP)
	}
	if again, _ := a.addr(pod); again != ipA || a.lookup(pod) != ipA {
		t.Errorf("a pod keeps its address: got %s, then %s", ipA, again)
	}
}
