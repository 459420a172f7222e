package mover_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/blockmover/blockmover/mover"
)

func TestParseChanges(t *testing.T) {
	const mib = 1 << 20
	tests := []struct {
		file   string
		format string
		size   int64
		want   []mover.Extent // nil: an error containing err
		err    string
	}{
		{"snapshot-metadata.json", "", 8 * mib, []mover.Extent{{0, 8192}, {mib, 65536}}, ""},
		{"snapshot-metadata.json", mover.FormatSnapshotMetadata, 8 * mib, []mover.Extent{{0, 8192}, {mib, 65536}}, ""},
		{"snapshot-metadata-fixed.json", "", 8 * mib, []mover.Extent{{0, 4096}, {8*mib - 4096, 4096}}, ""},
		{"rbd.json", "", 8 * mib, []mover.Extent{{0, 4 * mib}, {6 * mib, mib}}, ""},
		{"ebs.json", "", 1 << 30, []mover.Extent{{0, 512 << 10}, {15 * 512 << 10, 512 << 10}}, ""},
		{"ebs.json", "", 8 * mib, nil, "VolumeSize"},
		{"rbd.json", mover.FormatEBS, 8 * mib, nil, "ebs"},
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
			got, err := mover.ParseChanges(f, tc.format, tc.size)
			if tc.want == nil {
				if err == nil || !errors.Is(err, mover.ErrChangeList) || !strings.Contains(err.Error(), tc.err) {
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
	cl, err := mover.NewChangeList([]mover.Extent{{100, 50}, {0, 10}, {140, 100}}, 1000)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(cl.SnapshotMetadata(1000))
	got, err := mover.ParseChanges(bytes.NewReader(b), "", 1000)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[1] != (mover.Extent{Offset: 100, Length: 140}) || got.Bytes() != 150 {
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
		cl, err := mover.ParseChanges(bytes.NewReader(b), "", size)
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

// TestDiff compares loop devices: changes at the edges, in the middle, a
// change to zeros, and a larger target.
func TestDiff(t *testing.T) {
	const size = 24 << 20
	a := loopDevice(t, size)
	fillRandom(t, a, size, 1)
	b := filepath.Join(t.TempDir(), "b.img")
	data, err := os.ReadFile(a)
	if err != nil {
		t.Fatal(err)
	}
	data[0] ^= 1
	data[size-1] ^= 1
	clear(data[5<<20 : 5<<20+100_000])
	data[9<<20+65535] ^= 0xff
	data = append(data, make([]byte, 4096)...) // the target grew
	if err := os.WriteFile(b, data, 0o600); err != nil {
		t.Fatal(err)
	}
	base, err := mover.OpenSource(a, false)
	if err != nil {
		t.Fatal(err)
	}
	defer base.Close()
	target, err := mover.OpenSource(b, false)
	if err != nil {
		t.Fatal(err)
	}
	defer target.Close()
	cl, err := mover.Diff(context.Background(), base, target, mover.DiffOptions{BlockSize: 64 << 10, ReadSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	const k = 64 << 10
	want := []mover.Extent{{0, k}, {5 << 20, 2 * k}, {9<<20 + 0, k}, {size - k, k + 4096}}
	if len(cl) != len(want) {
		t.Fatalf("diff: %v, want %v", cl, want)
	}
	for i := range want {
		if cl[i] != want[i] {
			t.Fatalf("diff: %v, want %v", cl, want)
		}
	}
	if _, err := mover.Diff(context.Background(), target, base, mover.DiffOptions{}); err == nil {
		t.Fatal("diff against a smaller target succeeded")
	}
}

func BenchmarkDiff(b *testing.B) {
	const size = 256 << 20
	img := make([]byte, size)
	fillRand(newRand(1), img)
	other := bytes.Clone(img)
	other[size/2] ^= 1
	b.SetBytes(size)
	for b.Loop() {
		if _, err := mover.Diff(context.Background(), &memSource{b: img}, &memSource{b: other}, mover.DiffOptions{}); err != nil {
			b.Fatal(err)
		}
	}
}
