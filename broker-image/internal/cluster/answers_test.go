package cluster

import (
	"testing"

	"github.com/nats-io/nats.go"
)

// Answers gathered by the delivering goroutine reach the publishing pod's
// waiters one by one: a refusal among them fails its message only, and the
// answers of a shared group's member and of a pod are told apart.
func TestBatchedAnswersReachTheirWaiters(t *testing.T) {
	receiving := &bridge{n: &Node{}, answers: map[string][]byte{}}
	ids := []uint64{7, 8, 1 << 40}
	receiving.answer("_a.pub.7.n.recv", true)
	receiving.answer("_a.pub.8.n.recv", false)
	receiving.answer("_a.pub.1099511627776.n.recv", true)
	receiving.answer("_a.pub.9.s", true)
	if receiving.answerCount != 4 || len(receiving.answers) != 2 {
		t.Fatalf("%d answers queued on %d subjects; want 4 on 2", receiving.answerCount, len(receiving.answers))
	}

	publishing := &bridge{n: &Node{nodeTok: "pub", acks: newAckTable()}}
	waiters := map[uint64]*waiter{}
	for range 9 { // IDs 1..9 of the ack table
		id, w := publishing.n.acks.add([]string{"recv"}, false)
		waiters[id] = w
	}
	big, wBig := uint64(1<<40), (*waiter)(nil)
	publishing.n.acks.mu.Lock()
	wBig = &waiter{need: map[string]bool{"recv": true}, done: make(chan error, 1)}
	publishing.n.acks.w[big] = wBig
	publishing.n.acks.mu.Unlock()
	waiters[big] = wBig
	_, shared := publishing.n.acks.add(nil, true) // ID 10
	publishing.n.acks.mu.Lock()
	publishing.n.acks.w[9] = shared // the shared group's answer for ID 9
	publishing.n.acks.mu.Unlock()

	for subj, p := range receiving.answers {
		publishing.answered(&nats.Msg{Subject: subj, Data: p})
	}
	want := map[uint64]error{ids[0]: nil, ids[1]: errPeerRefused, ids[2]: nil, 9: nil}
	for id, wantErr := range want {
		w := waiters[id]
		if id == 9 {
			w = shared
		}
		select {
		case err := <-w.done:
			if err != wantErr {
				t.Fatalf("message %d: %v, want %v", id, err, wantErr)
			}
		default:
			t.Fatalf("message %d got no answer", id)
		}
	}
	select {
	case err := <-waiters[1].done:
		t.Fatalf("message 1, never answered, ended with %v", err)
	default:
	}
}
