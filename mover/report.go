package mover

import (
	"encoding/json"
	"fmt"
	"time"
)

// The JSON reports below are the contract with control planes: the object
// `mover export --json` and `mover import --json` print on stdout, that the
// mover writes as a Kubernetes container's termination message, and that
// csi.Result parses back. Each field is defined here once; fields are only
// ever added, never renamed, so an orchestrator can read the report of a
// mover of another version.

// ReportCommon holds the fields every report has.
type ReportCommon struct {
	Snapshot string `json:"snapshot"`
	Volume   string `json:"volume"`
	// Size is the volume's size in bytes.
	Size int64 `json:"size"`
	// Seconds is the wall time of the pipeline.
	Seconds float64 `json:"seconds"`
	// MBPerSecond is Size in 10^6 bytes per second of wall time: holes
	// and deduplication let it exceed the storage's speed.
	MBPerSecond float64 `json:"mb_per_s"`
	// Stages is the busy time of each pipeline stage in seconds, summed
	// over its workers and named as Stages.Each names them; stages that
	// did no work are left out.
	Stages StageSeconds `json:"stages,omitempty"`
}

// StageSeconds is the busy time of pipeline stages in seconds, by name.
// It reads the strings of movers before numbers were used ("0.044s") as
// well as numbers.
type StageSeconds map[string]float64

// UnmarshalJSON reads {"name": seconds} or {"name": "0.044s"}.
func (s *StageSeconds) UnmarshalJSON(b []byte) error {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	m := make(StageSeconds, len(raw))
	for k, v := range raw {
		var f float64
		if err := json.Unmarshal(v, &f); err == nil {
			m[k] = f
			continue
		}
		var str string
		if err := json.Unmarshal(v, &str); err != nil {
			return fmt.Errorf("stage %q: want seconds, got %s", k, v)
		}
		d, err := time.ParseDuration(str)
		if err != nil {
			return fmt.Errorf("stage %q: %w", k, err)
		}
		m[k] = d.Seconds()
	}
	*s = m
	return nil
}

// ExportFigures are the fields only an export report has (see
// ExportResult for their meaning).
type ExportFigures struct {
	ReadBytes   int64  `json:"read_bytes"`
	ZeroBytes   int64  `json:"zero_bytes"`
	NewBytes    int64  `json:"new_bytes"`
	StoredBytes int64  `json:"stored_bytes"`
	ReusedBytes int64  `json:"reused_bytes,omitempty"`
	Parent      string `json:"parent,omitempty"`
	Chunks      int64  `json:"chunks"`
	NewChunks   int64  `json:"new_chunks"`
	// Deferred to other exports' claims, and stored after all (see
	// ExportResult).
	DeferredChunks  int64 `json:"deferred_chunks,omitempty"`
	ReclaimedChunks int64 `json:"reclaimed_chunks,omitempty"`
}

// ImportFigures are the fields only an import report has (see
// ImportResult for their meaning).
type ImportFigures struct {
	WrittenBytes  int64 `json:"written_bytes"`
	ZeroedBytes   int64 `json:"zeroed_bytes"`
	FetchedBytes  int64 `json:"fetched_bytes"`
	SkippedBytes  int64 `json:"skipped_bytes,omitempty"`
	VerifiedBytes int64 `json:"verified_bytes,omitempty"`
	DirectBytes   int64 `json:"direct_bytes,omitempty"`
}

// ExportReport is the JSON report of an export.
type ExportReport struct {
	ReportCommon
	ExportFigures
}

// ImportReport is the JSON report of an import.
type ImportReport struct {
	ReportCommon
	ImportFigures
}

// Report returns the JSON report of the export of volume. parent is the
// base snapshot's ID, or "" for a full export.
func (r *ExportResult) Report(volume, parent string) ExportReport {
	return ExportReport{
		ReportCommon: common(r.Snapshot.ID.String(), volume, r.Size, r.Duration, r.Stages),
		ExportFigures: ExportFigures{
			ReadBytes: r.ReadBytes, ZeroBytes: r.ZeroBytes, NewBytes: r.NewBytes, StoredBytes: r.StoredBytes,
			ReusedBytes: r.ReusedBytes, Parent: parent, Chunks: r.Chunks, NewChunks: r.NewChunks,
			DeferredChunks: r.DeferredChunks, ReclaimedChunks: r.ReclaimedChunks,
		},
	}
}

// Report returns the JSON report of the import of snapshot (an ID) of
// volume.
func (r *ImportResult) Report(snapshot, volume string) ImportReport {
	return ImportReport{
		ReportCommon: common(snapshot, volume, r.Size, r.Duration, r.Stages),
		ImportFigures: ImportFigures{
			WrittenBytes: r.WrittenBytes, ZeroedBytes: r.ZeroedBytes, FetchedBytes: r.FetchedBytes,
			SkippedBytes: r.SkippedBytes, VerifiedBytes: r.VerifiedBytes, DirectBytes: r.DirectBytes,
		},
	}
}

func common(snapshot, volume string, size int64, d time.Duration, st Stages) ReportCommon {
	c := ReportCommon{Snapshot: snapshot, Volume: volume, Size: size, Seconds: d.Seconds()}
	if d > 0 {
		c.MBPerSecond = float64(size) / 1e6 / d.Seconds()
	}
	st.Each(func(name string, d time.Duration) {
		if d > 0 {
			if c.Stages == nil {
				c.Stages = StageSeconds{}
			}
			c.Stages[name] = d.Seconds()
		}
	})
	return c
}
