package store

import (
	"errors"
	"sync"

	"go.etcd.io/bbolt"

	"github.com/mqtt-operator/mqtt-operator/broker-image/internal/contain"
)

// errClosed is returned to writes that arrive after the store closed.
var errClosed = errors.New("persistent store is closed")

// op is one change to the database. prefix deletes every key starting with
// key; otherwise a nil val deletes key.
type op struct {
	bucket []byte
	key    []byte
	val    []byte
	prefix bool
	done   chan error // nil: nobody waits
}

// writer is the store's only writer: a goroutine that applies queued changes
// in one bbolt transaction per batch (group commit). Whatever queued up while
// the previous commit was syncing goes into the next one, so a durable write
// waits for at most two syncs however many clients publish at once, and
// buffered writes never wait. One FIFO queue keeps every change in the order
// mochi reported it: an inflight message is never deleted before it is set.
type writer struct {
	db    *bbolt.DB
	queue chan op
	mu    sync.RWMutex // guards closed against sends on a closed queue
	done  chan struct{}
	// failures counts batches that could not be committed (disk full, I/O
	// error); the metrics expose it.
	failures func(error)
	// refused is told of each change bbolt refused on its own; the rest
	// of its batch was committed.
	refused func(op, error)
	// panics, when set, recovers a panic in a batch (see commit).
	panics *contain.Recoverer
	closed bool
}

// maxBatch bounds one transaction, so a flood of buffered writes cannot hold
// a durable writer behind an arbitrarily large commit.
const maxBatch = 4096

func newWriter(db *bbolt.DB, failures func(error), refused func(op, error), panics *contain.Recoverer) *writer {
	w := &writer{db: db, queue: make(chan op, 16384), done: make(chan struct{}), failures: failures, refused: refused, panics: panics}
	go w.run()
	return w
}

// enqueue queues o. It blocks only when the queue is full, which slows the
// clients producing the changes instead of dropping them.
func (w *writer) enqueue(o op) error {
	w.mu.RLock()
	defer w.mu.RUnlock()
	if w.closed {
		return errClosed
	}
	w.queue <- o
	return nil
}

// write queues o and waits until it is committed (and synced, unless the
// database was opened with NoSync).
func (w *writer) write(o op) error {
	o.done = make(chan error, 1)
	if err := w.enqueue(o); err != nil {
		return err
	}
	return <-o.done
}

func (w *writer) run() {
	defer close(w.done)
	batch := make([]op, 0, 64)
	for first := range w.queue {
		batch = append(batch[:0], first)
	drain:
		for len(batch) < maxBatch {
			select {
			case o, ok := <-w.queue:
				if !ok {
					break drain
				}
				batch = append(batch, o)
			default:
				break drain
			}
		}
		// A change bbolt refuses (a key or value over its limits) is
		// skipped alone: it must not roll back the rest of the batch, which
		// can hold thousands of other clients' changes. bbolt checks those
		// limits before it touches the page, so the transaction goes on.
		refused := make(map[int]error)
		err := w.commit(batch, refused)
		if err != nil && w.failures != nil {
			w.failures(err)
		}
		for i, o := range batch {
			opErr := err
			if refusal, ok := refused[i]; ok && err == nil {
				opErr = refusal
				if w.refused != nil {
					w.refused(o, refusal)
				}
			}
			if o.done != nil {
				o.done <- opErr
			}
		}
	}
}

// errPanicked is the error of a batch whose transaction panicked (and was
// rolled back by bbolt).
var errPanicked = errors.New("the store's writer recovered from a panic; the batch was rolled back")

// commit applies batch in one transaction. A panic in it (a bug, or bbolt
// refusing what it did not check) rolls the batch back and is reported as
// its error: the writer goes on with the next batch and nobody waits forever.
func (w *writer) commit(batch []op, refused map[int]error) (err error) {
	var failed bool
	defer func() {
		if failed {
			err = errPanicked
		}
	}()
	if w.panics != nil {
		defer w.panics.Recover("store.writer", &failed)
	}
	// A change bbolt refuses (a key or value over its limits) is skipped
	// alone: it must not roll back the rest of the batch, which can hold
	// thousands of other clients' changes. bbolt checks those limits before
	// it touches the page, so the transaction goes on.
	return w.db.Update(func(tx *bbolt.Tx) error {
		clear(refused)
		for i, o := range batch {
			if err := apply(tx, o); err != nil {
				refused[i] = err
			}
		}
		return nil
	})
}

func apply(tx *bbolt.Tx, o op) error {
	b := tx.Bucket(o.bucket)
	switch {
	case o.prefix:
		c := b.Cursor()
		for k, _ := c.Seek(o.key); k != nil && hasPrefix(k, o.key); k, _ = c.Seek(o.key) {
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		return nil
	case o.val == nil:
		return b.Delete(o.key)
	default:
		return b.Put(o.key, o.val)
	}
}

func hasPrefix(k, prefix []byte) bool {
	return len(k) >= len(prefix) && string(k[:len(prefix)]) == string(prefix)
}

// close commits what is queued and stops the writer.
func (w *writer) close() {
	w.mu.Lock()
	if !w.closed {
		w.closed = true
		close(w.queue)
	}
	w.mu.Unlock()
	<-w.done
}
