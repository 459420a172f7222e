// Package bench measures blockmover: deterministic synthetic volumes with
// chosen fractions of zeros, duplicates, compressible, real file and random
// data and a change pattern for incremental runs (volume.go, changes.go,
// scenario.go); the runs that export and import them with mover and with
// peer tools (run.go, peers.go); and the reports built on the measurements.
//
// A report has one results model (rows.go, table.go): tables of typed
// cells (a figure over the runs in a unit, its baseline beside it), facts,
// warnings and the raw speed, computed once from the results. Text
// (report.go), Markdown (markdown.go) and HTML (html.go, with SVG charts
// on labelled axes, axis.go) only lay that model out, so they show the
// same figures.
package bench
