package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mqtt-operator/mqtt-operator/internal/brokerconfig"
	"github.com/mqtt-operator/mqtt-operator/internal/rebalance"
	"github.com/mqtt-operator/mqtt-operator/test/bench/broker/mqttc"
)

// Rounds as the operator runs them (controllers/mqttbroker_rebalance.go):
// its default band and rate, and its settle time.
const (
	benchRebalanceTolerance = 20
	benchRebalanceRate      = 20
	benchRebalanceSettle    = 5 * time.Second
	benchRebalanceRounds    = 8
)

// clusterRebalance measures rebalancing after a scale-out with the plan the
// operator uses (internal/rebalance), its default rate and its settle time:
// n persistent clients, each subscribed, all on pod 0, the other pods empty
// as just added. Each round asks the pods above the mean to move clients
// (POST /v1/shed on their admin API, as the operator does); each moved
// client logs in again on a pod picked at random, as through a Service,
// and must find its session.
func clusterRebalance(c *benchCluster, f *flags, out *report) error {
	n := f.clusterRebalance
	pods := c.pods
	logf("rebalance: %d persistent clients on pod 0 of %d", n, len(pods))
	var reconnects, lost atomic.Int64
	var mu sync.Mutex
	var latencies []time.Duration
	var conns sync.Map // client -> *mqttc.Conn, to close at the end
	stop := make(chan struct{})
	var wg sync.WaitGroup
	id := func(i int) string { return fmt.Sprintf("rebalance-%05d", i) }
	ready := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			o := pods[0].options(i, id(i), 60, 4096)
			o.Persistent = true
			conn, err := mqttc.Dial(pods[0].addr, o)
			if err == nil {
				err = conn.Subscribe("bench/cluster/rebalance/"+strconv.Itoa(i), 1)
			}
			ready <- err
			if err != nil {
				return
			}
			for {
				conns.Store(i, conn)
				for { // until the pod moves it (or the end)
					if _, _, _, err := conn.ReadPacket(); err != nil {
						break
					}
				}
				gone := time.Now()
				for {
					select {
					case <-stop:
						return
					default:
					}
					to := pods[rand.IntN(len(pods))]
					o := to.options(i, id(i), 60, 4096)
					o.Persistent = true
					next, err := mqttc.Dial(to.addr, o)
					if err != nil {
						time.Sleep(50 * time.Millisecond)
						continue
					}
					mu.Lock()
					latencies = append(latencies, time.Since(gone))
					mu.Unlock()
					reconnects.Add(1)
					if !next.SessionPresent {
						lost.Add(1)
					}
					conn = next
					break
				}
			}
		}()
	}
	for range n {
		if err := <-ready; err != nil {
			close(stop)
			return fmt.Errorf("a client on pod 0: %w", err)
		}
	}
	defer func() {
		close(stop)
		conns.Range(func(_, v any) bool { _ = v.(*mqttc.Conn).Close(); return true })
		wg.Wait()
	}()

	start := time.Now()
	rounds, moved := 0, 0
	var counts []int
	for {
		var err error
		if counts, err = podClients(pods); err != nil {
			return err
		}
		moves, _, balanced := rebalance.Plan(counts, benchRebalanceTolerance)
		if balanced {
			break
		}
		if rounds == benchRebalanceRounds {
			return fmt.Errorf("not balanced after %d rounds: %v", rounds, counts)
		}
		period := rebalance.Round(counts, moves, benchRebalanceRate)
		for i, m := range moves {
			if m > 0 {
				got, err := shed(pods[i], m, period)
				if err != nil {
					return err
				}
				moved += got
			}
		}
		rounds++
		logf("rebalance: round %d, pods held %v, moving %v over %v", rounds, counts, moves, period.Round(time.Millisecond))
		time.Sleep(period + benchRebalanceSettle)
	}
	took := time.Since(start)
	// Every moved client is back before the sessions are judged.
	for deadline := time.Now().Add(10 * time.Second); reconnects.Load() < int64(moved) && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
	mu.Lock()
	p50, p99 := percentiles(latencies)
	mu.Unlock()
	out.add("rebalance_convergence_s", "%.1f", took.Seconds())
	out.add("rebalance_rounds", "%d", rounds)
	out.add("rebalance_clients_moved", "%d", moved)
	out.add("rebalance_sessions_lost", "%d", lost.Load())
	out.add("rebalance_reconnect_p50_us", "%.0f", p50)
	out.add("rebalance_reconnect_p99_us", "%.0f", p99)
	logf("rebalance: balanced at %v after %v, %d rounds, %d clients moved, %d reconnects without their session; reconnect p50 %.0f us p99 %.0f us",
		counts, took.Round(time.Millisecond), rounds, moved, lost.Load(), p50, p99)
	return nil
}

// podClients reads each pod's client count from its admin API.
func podClients(pods []*target) ([]int, error) {
	counts := make([]int, len(pods))
	for i, p := range pods {
		body, err := httpGetAuth("http://"+p.adminAddr+"/v1/cluster", p.token)
		if err != nil {
			return nil, err
		}
		var st brokerconfig.ClusterStatus
		if err := json.Unmarshal(body, &st); err != nil {
			return nil, err
		}
		if st.Shedding { // a round still under way: ask again
			time.Sleep(200 * time.Millisecond)
			return podClients(pods)
		}
		counts[i] = st.Clients
	}
	return counts, nil
}

func shed(p *target, n int, period time.Duration) (int, error) {
	body, _ := json.Marshal(brokerconfig.ShedRequest{Clients: n, PeriodSeconds: period.Seconds()})
	req, err := http.NewRequest(http.MethodPost, "http://"+p.adminAddr+"/v1/shed", bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+p.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var got brokerconfig.ShedResponse
	if resp.StatusCode != http.StatusAccepted || json.NewDecoder(resp.Body).Decode(&got) != nil {
		return 0, fmt.Errorf("POST /v1/shed: %s", resp.Status)
	}
	return got.Moving, nil
}
