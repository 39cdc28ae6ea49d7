package cluster

import (
	"encoding/json"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// A user's maxConnections counts its connections on every pod. A login of
// a user with that limit asks every other pod, as a takeover does, how
// many connections of the user it has, leaving out the login's own client
// ID (which the takeover ends). Each pod counts logins it is still
// admitting too, and registers its own before asking, so two logins at
// once on two pods see each other.

func userCountSubject(tok string) string { return "_u." + tok }

type userCountRequest struct {
	User   string `json:"u"`
	Except string `json:"x"`
}

// UserConnections sums the connections of username, but those with client
// ID exceptID, on the other pods up now. A pod that does not answer in
// time counts 0: the limit bounds what a user takes, and a partition must
// not lock every one of its devices out.
func (n *Node) UserConnections(username, exceptID string) int {
	nc := n.conn()
	if nc == nil || n.Sessions.CountUser == nil {
		return 0
	}
	req, _ := json.Marshal(userCountRequest{User: username, Except: exceptID})
	var mu sync.Mutex
	var wg sync.WaitGroup
	total := 0
	for _, name := range n.routes() {
		tok := TopicSubject(name)
		wg.Add(1)
		go func() {
			defer wg.Done()
			m, err := n.request(nc, tok, userCountSubject(tok), req)
			if err != nil {
				if now := time.Now().Unix(); now-n.countLogged.Load() >= 60 { // at most once a minute
					n.countLogged.Store(now)
					n.log.Warn("cluster: a pod did not say how many connections a user has there; counting none (maxConnections may be exceeded meanwhile)",
						"pod", name, "error", err.Error())
				}
				return
			}
			c, err := strconv.Atoi(string(m.Data))
			if err != nil || c < 0 {
				return
			}
			mu.Lock()
			total += c
			mu.Unlock()
		}()
	}
	wg.Wait()
	return total
}

// countUser answers another pod's UserConnections.
func (n *Node) countUser(m *nats.Msg) {
	var req userCountRequest
	if err := json.Unmarshal(m.Data, &req); err != nil || n.Sessions.CountUser == nil {
		_ = m.Respond([]byte("0"))
		return
	}
	_ = m.Respond([]byte(strconv.Itoa(n.Sessions.CountUser(req.User, req.Except))))
}
