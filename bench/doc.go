// Package bench measures blockmover: deterministic synthetic volumes with
// chosen fractions of zeros, duplicates, compressible, real file and random
// data and a change pattern for incremental runs (volume.go, changes.go,
// scenario.go); the runs that export and import them with mover and with
// peer tools (run.go, peers.go); and the reports built on the measurements
// (report.go, html.go, markdown.go).
package bench
