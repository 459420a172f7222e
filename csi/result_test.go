package csi

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/blockmover/blockmover/mover"
	"github.com/blockmover/blockmover/repo"
)

// TestParseResultReadsTheMoversReports: the reports the mover prints, typed
// once in package mover, parse into Result field for field, and so does a
// failure message.
func TestParseResultReadsTheMoversReports(t *testing.T) {
	exp := (&mover.ExportResult{Snapshot: &repo.Snapshot{}, Size: 1 << 20, ReadBytes: 7, StoredBytes: 3, Chunks: 2,
		Duration: time.Second, Stages: mover.Stages{Read: time.Second}}).Report("vol", "parent")
	b, _ := json.Marshal(exp)
	r, err := ParseResult(string(b))
	if err != nil {
		t.Fatal(err)
	}
	if r.Volume != "vol" || r.Size != 1<<20 || r.ReadBytes != 7 || r.StoredBytes != 3 || r.Chunks != 2 || r.Parent != "parent" || r.Stages["read"] != 1 || r.Error != "" {
		t.Errorf("export: %+v", r)
	}
	imp := (&mover.ImportResult{Size: 1 << 20, WrittenBytes: 5, FetchedBytes: 4, Duration: time.Second}).Report("id", "vol")
	b, _ = json.Marshal(imp)
	if r, err = ParseResult(string(b)); err != nil || r.Snapshot != "id" || r.WrittenBytes != 5 || r.FetchedBytes != 4 {
		t.Errorf("import: %+v, %v", r, err)
	}
	r, err = ParseResult(`{"error":"wrong password","reason":"WrongPassword","retryable":false,"exit_code":12}`)
	if err != nil || r.Error != "wrong password" || r.ExitCode != 12 || r.Reason != "WrongPassword" {
		t.Errorf("failure: %+v, %v", r, err)
	}
	if _, err := ParseResult("mover: oops"); err == nil {
		t.Error("a non-JSON message parsed")
	}
}
