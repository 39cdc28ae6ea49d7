package main

import "github.com/mqtt-operator/mqtt-operator/test/bench/benchproc"

// promSamples is a scraped /metrics of a broker (benchproc.Metrics).
type promSamples = benchproc.Metrics

func scrapeMetrics(healthAddr string) (promSamples, error) {
	return benchproc.ScrapeMetrics(healthAddr)
}
