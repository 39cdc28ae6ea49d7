package memlimit

import (
	"math"
	"runtime/debug"
	"testing"
)

func TestDerive(t *testing.T) {
	for _, c := range []struct {
		in      string
		want    int64
		wantErr bool
	}{
		{"", 0, false},
		{"536870912", 483183819, false}, // 512Mi
		{"1073741824", 966367638, false},
		{"0", 0, true},
		{"-1", 0, true},
		{"512Mi", 0, true}, // the downward API gives bytes; a quantity means a wrong divisor
		{"99999999999999999999", 0, true},
	} {
		got, err := Derive(c.in)
		if got != c.want || (err != nil) != c.wantErr {
			t.Errorf("Derive(%q) = %d, %v; want %d, error %v", c.in, got, err, c.want, c.wantErr)
		}
	}
}

// The test changes the process's memory limit; it restores it after.
func keepLimit(t *testing.T) {
	before := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(before) })
	debug.SetMemoryLimit(math.MaxInt64)
}

func TestApplySetsTheRuntimeLimit(t *testing.T) {
	keepLimit(t)
	t.Setenv("GOMEMLIMIT", "")
	t.Setenv("TEST_MEMORY_LIMIT", "536870912")
	got, err := Apply("TEST_MEMORY_LIMIT")
	if err != nil || got != 483183819 {
		t.Fatalf("Apply = %d, %v", got, err)
	}
	if now := debug.SetMemoryLimit(-1); now != 483183819 {
		t.Errorf("runtime memory limit %d, want 483183819", now)
	}
}

func TestApplyLeavesAnExplicitGOMEMLIMIT(t *testing.T) {
	keepLimit(t)
	t.Setenv("GOMEMLIMIT", "100MiB")
	t.Setenv("TEST_MEMORY_LIMIT", "536870912")
	if got, err := Apply("TEST_MEMORY_LIMIT"); got != 0 || err != nil {
		t.Errorf("Apply = %d, %v with GOMEMLIMIT set", got, err)
	}
	if now := debug.SetMemoryLimit(-1); now != math.MaxInt64 {
		t.Errorf("runtime memory limit changed to %d despite GOMEMLIMIT", now)
	}
}

func TestApplyWithoutALimit(t *testing.T) {
	keepLimit(t)
	t.Setenv("GOMEMLIMIT", "")
	t.Setenv("TEST_MEMORY_LIMIT", "")
	if got, err := Apply("TEST_MEMORY_LIMIT"); got != 0 || err != nil {
		t.Errorf("Apply = %d, %v without a limit", got, err)
	}
	t.Setenv("TEST_MEMORY_LIMIT", "lots")
	if _, err := Apply("TEST_MEMORY_LIMIT"); err == nil {
		t.Error("an unreadable limit is not reported")
	}
	if now := debug.SetMemoryLimit(-1); now != math.MaxInt64 {
		t.Errorf("runtime memory limit changed to %d", now)
	}
}
