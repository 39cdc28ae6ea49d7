package cluster

import (
	"testing"
	"time"
)

func TestSweepForgetsLoginsNeverEstablished(t *testing.T) {
	now := time.Now().UnixNano()
	s := sessions{byID: map[string]*session{}, clock: func() int64 { return now }}
	s.byID["old-pending"] = &session{stamp: stamp{T: now - int64(time.Minute)}}
	s.byID["old-live"] = &session{stamp: stamp{T: now - int64(time.Minute)}, established: true}
	s.byID["new-pending"] = &session{stamp: stamp{T: now - int64(time.Second)}}
	s.sweep()
	if _, ok := s.byID["old-pending"]; ok || len(s.byID) != 2 {
		t.Fatalf("after the sweep: %v", s.byID)
	}
}

func TestStampOrderIsTotal(t *testing.T) {
	a, b := stamp{T: 5, Node: "pod-0"}, stamp{T: 5, Node: "pod-1"}
	if !b.after(a) || a.after(b) || a.after(a) {
		t.Fatal("equal times must be ordered by node name, one way only")
	}
	s := sessions{byID: map[string]*session{}, clock: func() int64 { return 1 }}
	s.last = 100 // a stamp seen from another pod
	if got := s.next("pod-0"); got.T != 101 {
		t.Fatalf("next stamp %d; want one after what was seen", got.T)
	}
}
