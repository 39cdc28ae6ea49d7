package store

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/mqtt-operator/mqtt-operator/broker-image/internal/contain"
)

// A change bbolt refuses costs only itself: the other changes of its batch
// are committed, and the refusal reaches its own waiter and the refused
// callback.
func TestWriterRefusedChangeKeepsItsBatch(t *testing.T) {
	db, err := bbolt.Open(filepath.Join(t.TempDir(), "w.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = db.Close() }()
	if err := db.Update(func(tx *bbolt.Tx) error { _, err := tx.CreateBucket(bucketRetained); return err }); err != nil {
		t.Fatal(err)
	}
	var refused atomic.Int64
	w := newWriter(db, func(err error) { t.Errorf("commit failed: %v", err) }, func(op, error) { refused.Add(1) }, nil)
	// Hold the writer in a transaction so every change below lands in one batch.
	hold, held := make(chan struct{}), make(chan struct{})
	go func() { _ = db.Update(func(*bbolt.Tx) error { close(held); <-hold; return nil }) }()
	<-held
	_ = w.enqueue(op{bucket: bucketRetained, key: []byte("first"), val: []byte("x")}) // taken alone, waits for the held lock
	for i := range 100 {
		_ = w.enqueue(op{bucket: bucketRetained, key: fmt.Appendf(nil, "k%03d", i), val: []byte("v")})
	}
	tooLong := op{bucket: bucketRetained, key: []byte(strings.Repeat("x", bbolt.MaxKeySize+1)), val: []byte("v"), done: make(chan error, 1)}
	_ = w.enqueue(tooLong)
	close(hold)
	if err := <-tooLong.done; !errors.Is(err, berrors.ErrKeyTooLarge) {
		t.Errorf("the refused change was told %v, want %v", err, berrors.ErrKeyTooLarge)
	}
	w.close()
	n := 0
	_ = db.View(func(tx *bbolt.Tx) error { n = tx.Bucket(bucketRetained).Stats().KeyN; return nil })
	if n != 101 || refused.Load() != 1 {
		t.Errorf("%d records stored and %d refusals, want 101 and 1", n, refused.Load())
	}
}

// No key the hook builds exceeds bbolt's limit, whatever the length of the
// client ID, filter or topic MQTT allows, and a client's records all start
// with its prefix.
func TestKeysFitBbolt(t *testing.T) {
	for _, n := range []int{0, 1, 100, maxPlainID - 1, maxPlainID, maxPlainID + 1, bbolt.MaxKeySize, 65535} {
		s := strings.Repeat("a", n)
		for _, id := range []string{"c", s} {
			keys := map[string][]byte{
				"client": clientKey(s), "retained": retainedKey(s),
				"subscription": subscriptionKey(id, s), "inflight": packetKey(s, 1),
			}
			for what, k := range keys {
				if len(k) > bbolt.MaxKeySize {
					t.Errorf("%s key of a %d-byte part is %d bytes", what, n, len(k))
				}
			}
			if !strings.HasPrefix(string(keys["subscription"]), string(clientPrefix(id))) {
				t.Errorf("subscription key of a %d-byte filter lost its client prefix", n)
			}
		}
	}
	if string(clientKey("device-1")) != "device-1" || string(retainedKey("a/b")) != "a/b" {
		t.Error("short keys must stay as stored before long keys were hashed")
	}
}

// A panic while a batch is applied (here: a change to a bucket that does not
// exist, which bbolt does not check) fails that batch, rolled back, and the
// writer goes on with the next one. Without the recovery the panic ends the
// process.
func TestWriterSurvivesAPanicInABatch(t *testing.T) {
	db, err := bbolt.Open(filepath.Join(t.TempDir(), "w.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = db.Close() }()
	if err := db.Update(func(tx *bbolt.Tx) error { _, err := tx.CreateBucket(bucketRetained); return err }); err != nil {
		t.Fatal(err)
	}
	var failures atomic.Int64
	panics := &contain.Recoverer{}
	w := newWriter(db, func(error) { failures.Add(1) }, nil, panics)
	if err := w.write(op{bucket: []byte("no-such-bucket"), key: []byte("k"), val: []byte("v")}); !errors.Is(err, errPanicked) {
		t.Fatalf("write to a missing bucket: %v, want errPanicked", err)
	}
	if err := w.write(op{bucket: bucketRetained, key: []byte("after"), val: []byte("v")}); err != nil {
		t.Fatalf("the next write: %v", err)
	}
	if err := db.View(func(tx *bbolt.Tx) error {
		if tx.Bucket(bucketRetained).Get([]byte("after")) == nil {
			return errors.New("the write after the panic is not in the store")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if panics.Count.Load() != 1 || failures.Load() != 1 {
		t.Errorf("panics %d, failed batches %d; want 1 and 1", panics.Count.Load(), failures.Load())
	}
}
