// Package metrics owns the server's Prometheus metrics: their names, help
// texts and label sets. Metric names follow Prometheus conventions
// (tether_..._total, ..._seconds) and no metric carries an unbounded label
// (never a device id). Other packages record through the Metrics struct; a nil
// *Metrics records nothing, so tests need not wire a registry.
package metrics
