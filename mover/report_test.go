package mover

import (
	"encoding/json"
	"slices"
	"testing"
	"time"

	"github.com/blockmover/blockmover/repo"
)

// TestReportKeys pins the JSON keys of the reports: they are the contract
// with control planes and are only ever added to.
func TestReportKeys(t *testing.T) {
	exp := (&ExportResult{Snapshot: &repo.Snapshot{}, Size: 4 << 20, Duration: 2 * time.Second, ReusedBytes: 1,
		Stages: Stages{Read: 1500 * time.Millisecond, Compress: time.Second}}).Report("vol", "abc")
	imp := (&ImportResult{Size: 4 << 20, Duration: time.Second, SkippedBytes: 1, VerifiedBytes: 2, DirectBytes: 3,
		Stages: Stages{Download: time.Second}}).Report("id", "vol")
	for _, tc := range []struct {
		v    any
		want []string
	}{
		{exp, []string{"chunks", "mb_per_s", "new_bytes", "new_chunks", "parent", "read_bytes", "reused_bytes", "seconds", "size", "snapshot", "stages", "stored_bytes", "volume", "zero_bytes"}},
		{imp, []string{"direct_bytes", "fetched_bytes", "mb_per_s", "seconds", "size", "skipped_bytes", "snapshot", "stages", "verified_bytes", "volume", "written_bytes", "zeroed_bytes"}},
	} {
		b, err := json.Marshal(tc.v)
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		var keys []string
		for k := range m {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		if !slices.Equal(keys, tc.want) {
			t.Errorf("keys %v, want %v", keys, tc.want)
		}
	}
	if imp.SkippedBytes != 1 || imp.VerifiedBytes != 2 || imp.DirectBytes != 3 {
		t.Errorf("import report %+v", imp)
	}
	if exp.MBPerSecond != 4<<20/1e6/2 || exp.Stages["read"] != 1.5 || exp.Stages["compress"] != 1 || len(exp.Stages) != 2 {
		t.Errorf("export report %+v", exp)
	}
}

// TestStageSecondsReadsOldStrings: a report of a mover from before stage
// times were numbers still parses.
func TestStageSecondsReadsOldStrings(t *testing.T) {
	var r ExportReport
	if err := json.Unmarshal([]byte(`{"snapshot":"a","stages":{"read":"0.044s","cut":1.5}}`), &r); err != nil {
		t.Fatal(err)
	}
	if r.Stages["read"] != 0.044 || r.Stages["cut"] != 1.5 {
		t.Errorf("stages %v", r.Stages)
	}
	for _, bad := range []string{`{"stages":{"read":"fast"}}`, `{"stages":{"read":[1]}}`, `{"stages":[1]}`} {
		if err := json.Unmarshal([]byte(bad), &r); err == nil {
			t.Errorf("%s parsed", bad)
		}
	}
}
