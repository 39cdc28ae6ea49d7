package main

import (
	"strconv"
	"strings"
)

// promSamples is a scraped Prometheus text exposition: series (name plus
// labels, as written) to value.
type promSamples map[string]float64

func scrapeMetrics(healthAddr string) (promSamples, error) {
	body, err := httpGet("http://" + healthAddr + "/metrics")
	if err != nil {
		return nil, err
	}
	out := promSamples{}
	for _, line := range strings.Split(string(body), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		out[line[:i]] = v
	}
	return out, nil
}

// sum adds every series of the metric name whose labels contain all of the
// given label pairs (e.g. `qos="1"`).
func (p promSamples) sum(name string, labels ...string) (total float64, found bool) {
	for series, v := range p {
		base, rest, _ := strings.Cut(series, "{")
		if base != name {
			continue
		}
		match := true
		for _, l := range labels {
			if !strings.Contains(rest, l) {
				match = false
			}
		}
		if match {
			total += v
			found = true
		}
	}
	return total, found
}
