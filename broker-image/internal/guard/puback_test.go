package guard

import (
	"bytes"
	"testing"
)

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// A held PUBACK is taken out of whatever mochi writes with it (alone, or
// among deliveries in one write); the next PUBACK with that ID, the one the
// holder writes itself, goes out; other packets are untouched; a second
// hold on one ID takes out a second PUBACK; a close releases every holder.
func TestHeldPubacksAreTakenOutOnce(t *testing.T) {
	for _, version := range []byte{4, 5} {
		raw := newRecordingConn()
		c := guarded(raw)
		StartSession(c, version, 0)
		first, ok := HoldPuback(c, 1)
		if !ok {
			t.Fatal("a guard connection refused the hold")
		}
		if isClosed(first) {
			t.Fatal("taken before anything was written")
		}
		// mochi's PUBACK between two deliveries, in one write.
		if _, err := c.Write(bytes.Join([][]byte{publish, puback, publish}, nil)); err != nil {
			t.Fatal(err)
		}
		if !isClosed(first) {
			t.Fatal("mochi's PUBACK was not taken out")
		}
		second, _ := HoldPuback(c, 2)
		third, _ := HoldPuback(c, 2)
		_, _ = c.Write(puback2)
		if !isClosed(second) || isClosed(third) {
			t.Fatal("one PUBACK released other than the oldest hold of its ID")
		}
		_, _ = c.Write(puback2)
		_, _ = c.Write(puback) // the holder's own PUBACK of 1
		_, _ = c.Write(puback2)
		got := bytes.Join(raw.recorded(), nil)
		want := bytes.Join([][]byte{publish, publish, puback, puback2}, nil)
		if !bytes.Equal(got, want) {
			t.Fatalf("protocol %d: written % x, want % x", version, got, want)
		}
		last, _ := HoldPuback(c, 3)
		_ = c.Close()
		if !isClosed(last) {
			t.Fatal("a hold outlived the connection")
		}
		if late, _ := HoldPuback(c, 4); !isClosed(late) {
			t.Fatal("a hold on a closed connection waits forever")
		}
	}
	if _, ok := HoldPuback(newRecordingConn(), 1); ok {
		t.Error("a connection the guard did not make accepted a hold")
	}
}
