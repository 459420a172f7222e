package changes_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/blockmover/blockmover/changes"
)

func TestParseChanges(t *testing.T) {
	const mib = 1 << 20
	tests := []struct {
		file   string
		format string
		size   int64
		want   []changes.Extent // nil: an error containing err
		err    string
	}{
		{"snapshot-metadata.json", "", 8 * mib, []changes.Extent{{0, 8192}, {mib, 65536}}, ""},
		{"snapshot-metadata.json", changes.FormatSnapshotMetadata, 8 * mib, []changes.Extent{{0, 8192}, {mib, 65536}}, ""},
		{"snapshot-metadata-fixed.json", "", 8 * mib, []changes.Extent{{0, 4096}, {8*mib - 4096, 4096}}, ""},
		{"rbd.json", "", 8 * mib, []changes.Extent{{0, 4 * mib}, {6 * mib, mib}}, ""},
		{"ebs.json", "", 1 << 30, []changes.Extent{{0, 512 << 10}, {15 * 512 << 10, 512 << 10}}, ""},
		{"ebs.json", "", 8 * mib, nil, "VolumeSize"},
		{"rbd.json", changes.FormatEBS, 8 * mib, nil, "ebs"},
		{"rbd.json", "zfs", 8 * mib, nil, "unknown format"},
		{"bad-outside.json", "", 8 * mib, nil, "invalid extent"},
		{"bad-capacity.json", "", 8 * mib, nil, "volume_capacity_bytes is 1000"},
		{"bad-negative.json", "", 8 * mib, nil, "invalid extent"},
		{"bad-overflow.json", "", 8 * mib, nil, "invalid extent"},
		{"bad-fixed.json", "", 8 * mib, nil, "FIXED_LENGTH"},
		{"bad-truncated.json", "", 8 * mib, nil, "unexpected EOF"},
	}
	for _, tc := range tests {
		t.Run(tc.file+"/"+tc.format, func(t *testing.T) {
			f, err := os.Open(filepath.Join("..", "testdata", "changes", tc.file))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			got, err := changes.ParseChanges(f, tc.format, tc.size)
			if tc.want == nil {
				if err == nil || !errors.Is(err, changes.ErrChangeList) || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want one mentioning %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Fatalf("got %v, want %v", got, tc.want)
				}
			}
		})
	}
}

// TestChangesRoundTrip: what mover diff prints, export --changes reads.
func TestChangesRoundTrip(t *testing.T) {
	cl, err := changes.NewChangeList([]changes.Extent{{100, 50}, {0, 10}, {140, 100}}, 1000)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(cl.SnapshotMetadata(1000))
	got, err := changes.ParseChanges(bytes.NewReader(b), "", 1000)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[1] != (changes.Extent{Offset: 100, Length: 140}) || got.Bytes() != 150 {
		t.Fatalf("round trip: %v", got)
	}
}

func FuzzParseChanges(f *testing.F) {
	for _, name := range []string{"snapshot-metadata.json", "rbd.json", "ebs.json", "bad-overflow.json"} {
		b, err := os.ReadFile(filepath.Join("..", "testdata", "changes", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, int64(8<<20))
	}
	f.Fuzz(func(t *testing.T, b []byte, size int64) {
		if size < 0 {
			size = -size
		}
		cl, err := changes.ParseChanges(bytes.NewReader(b), "", size)
		if err != nil {
			return
		}
		var end int64
		for _, e := range cl {
			if e.Offset < end || e.Length <= 0 || e.End() > size {
				t.Fatalf("invalid change list accepted: %v for size %d", cl, size)
			}
			end = e.End() + 1
		}
	})
}
