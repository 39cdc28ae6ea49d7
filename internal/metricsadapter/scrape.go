package metricsadapter

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
)

// maxScrapeBytes bounds what the adapter reads from one pod's /metrics: a
// broker's answer is a few kilobytes, and a pod that answers with an endless
// body (a hostile tenant can label a pod of its own as a broker) must not
// cost the adapter, which serves every tenant, more than this.
const maxScrapeBytes = 1 << 20

// figures are what one scrape of a broker pod's /metrics reads.
type figures struct {
	// clients is mqtt_clients_connected: MQTT clients logged in.
	clients float64
	// messages is mqtt_messages_received_total plus
	// mqtt_messages_sent_total over every QoS: PUBLISH packets through the
	// pod, both ways.
	messages float64
}

// scrape reads a broker's figures from its Prometheus endpoint.
func scrape(ctx context.Context, hc *http.Client, url string) (figures, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return figures{}, err
	}
	req.Header.Set("Accept", "text/plain")
	resp, err := hc.Do(req)
	if err != nil {
		return figures{}, err
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return figures{}, fmt.Errorf("%s answered %s", url, resp.Status)
	}
	return parseFigures(io.LimitReader(resp.Body, maxScrapeBytes+1))
}

// parseFigures reads the Prometheus text format, keeping the few samples the
// adapter serves. The broker writes them without timestamps; a trailing
// timestamp would be ignored.
func parseFigures(r io.Reader) (figures, error) {
	var f figures
	var sawClients, sawMessages bool
	read := 0
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 64<<10)
	for sc.Scan() {
		line := sc.Text()
		read += len(line) + 1
		if read > maxScrapeBytes {
			return figures{}, fmt.Errorf("metrics larger than %d bytes", maxScrapeBytes)
		}
		if line == "" || line[0] == '#' {
			continue
		}
		name, value, ok := sample(line)
		if !ok {
			continue
		}
		switch name {
		case "mqtt_clients_connected":
			f.clients, sawClients = value, true
		case "mqtt_messages_received_total", "mqtt_messages_sent_total":
			f.messages += value
			sawMessages = true
		}
	}
	if err := sc.Err(); err != nil {
		return figures{}, fmt.Errorf("reading metrics: %w", err)
	}
	if !sawClients || !sawMessages {
		return figures{}, errors.New("no mqtt_clients_connected or mqtt_messages_*_total in the answer: not an mqtt-operator broker")
	}
	return f, nil
}

// sample splits `name{labels} value [timestamp]` into the name and value.
func sample(line string) (string, float64, bool) {
	end := strings.IndexAny(line, "{ ")
	if end <= 0 {
		return "", 0, false
	}
	name, rest := line[:end], line[end:]
	if rest[0] == '{' {
		closing := strings.LastIndexByte(rest, '}')
		if closing < 0 {
			return "", 0, false
		}
		rest = rest[closing+1:]
	}
	fields := strings.Fields(rest)
	if len(fields) == 0 {
		return "", 0, false
	}
	v, err := strconv.ParseFloat(fields[0], 64)
	if err != nil {
		return "", 0, false
	}
	return name, v, true
}
