package main

import (
	"encoding/binary"
	"encoding/json"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/blockmover/blockmover/changes"
)

// TestCLIDiff: mover diff prints a change list that changes.ParseChanges
// (and so export --changes) reads back, a one-line summary unless -q, and
// one-line errors.
func TestCLIDiff(t *testing.T) {
	c, dir := newCLI(t)
	const size = 8<<20 + 4096
	base := filepath.Join(dir, "base.img")
	data := make([]byte, size)
	r0 := rand.New(rand.NewPCG(1, 2))
	for i := 0; i+8 <= len(data); i += 8 {
		binary.LittleEndian.PutUint64(data[i:], r0.Uint64())
	}
	if err := os.WriteFile(base, data, 0o600); err != nil {
		t.Fatal(err)
	}
	data[0] ^= 1                       // first byte
	clear(data[2<<20 : 2<<20+100_000]) // a run that became zeros
	data[size-1] ^= 1                  // last byte
	cur := filepath.Join(dir, "cur.img")
	if err := os.WriteFile(cur, data, 0o600); err != nil {
		t.Fatal(err)
	}
	parse := func(stdout string) changes.ChangeList {
		t.Helper()
		if !json.Valid([]byte(stdout)) || strings.Count(strings.TrimSpace(stdout), "\n") != 0 {
			t.Fatalf("stdout is not one line of JSON: %q", stdout)
		}
		var doc struct {
			Type     string `json:"block_metadata_type"`
			Capacity int64  `json:"volume_capacity_bytes"`
			Blocks   []any  `json:"block_metadata"`
		}
		if err := json.Unmarshal([]byte(stdout), &doc); err != nil || doc.Type != "VARIABLE_LENGTH" || doc.Capacity != size || doc.Blocks == nil {
			t.Fatalf("not the SnapshotMetadata shape (%v): %s", err, stdout)
		}
		cl, err := changes.ParseChanges(strings.NewReader(stdout), "", size)
		if err != nil {
			t.Fatalf("ParseChanges on mover diff's output: %v", err)
		}
		return cl
	}

	r := c.ok("diff", base, cur)
	const k = 64 << 10
	want := changes.ChangeList{diffExtent(0, k), diffExtent(2<<20, 2*k), diffExtent(size-4096, 4096)}
	if got := parse(r.stdout); !slices.Equal(got, want) {
		t.Fatalf("diff = %v, want %v", got, want)
	}
	lines := strings.Split(strings.TrimRight(r.stderr, "\n"), "\n")
	if len(lines) != 1 || !strings.Contains(lines[0], "3 extents") {
		t.Errorf("summary: %q", r.stderr)
	}

	r = c.ok("diff", "-q", "--block-size", "4KiB", "--workers", "3", base, cur)
	if r.stderr != "" {
		t.Errorf("-q printed %q", r.stderr)
	}
	want = changes.ChangeList{diffExtent(0, 4096), diffExtent(2<<20, 25*4096), diffExtent(size-4096, 4096)}
	if got := parse(r.stdout); !slices.Equal(got, want) {
		t.Fatalf("diff --block-size 4KiB = %v, want %v", got, want)
	}

	// No change: an empty list, not null.
	r = c.ok("diff", "-q", base, base)
	if got := parse(r.stdout); len(got) != 0 || !strings.Contains(r.stdout, `"block_metadata":[]`) {
		t.Fatalf("diff of a file with itself: %s", r.stdout)
	}

	// A grown target: the tail is changed.
	grown := filepath.Join(dir, "grown.img")
	if err := os.WriteFile(grown, append(data[:size:size], make([]byte, 1<<20)...), 0o600); err != nil {
		t.Fatal(err)
	}
	r = c.ok("diff", "-q", cur, grown)
	if got, err := changes.ParseChanges(strings.NewReader(r.stdout), "", size+1<<20); err != nil || !slices.Equal(got, changes.ChangeList{diffExtent(size, 1<<20)}) {
		t.Fatalf("diff against a grown target = %v, %v", got, err)
	}

	// What diff prints, export --changes takes.
	c.ok("init")
	c.ok("export", "-q", "--source", base, "--name", "v")
	r = c.ok("diff", "-q", base, cur)
	changes := filepath.Join(dir, "changes.json")
	if err := os.WriteFile(changes, []byte(r.stdout), 0o600); err != nil {
		t.Fatal(err)
	}
	c.ok("export", "-q", "--source", cur, "--name", "v", "--base", "latest:v", "--changes", changes, "--changes-format", "snapshot-metadata")

	c.fails(1, "fewer than", "diff", grown, cur)
	c.fails(1, "no such file", "diff", filepath.Join(dir, "missing.img"), cur)
	c.fails(1, "no such file", "diff", base, filepath.Join(dir, "missing.img"))
	c.fails(exitUnsuitable, "not a block device or regular file", "diff", dir, cur)
	c.fails(2, "--block-size", "diff", "--block-size", "100", base, cur)
	c.fails(2, "--block-size", "diff", "--block-size", "1GiB", base, cur)
	c.fails(2, "--block-size", "diff", "--block-size", "lots", base, cur)
	c.fails(2, "--workers", "diff", "--workers", "-1", base, cur)
	c.fails(2, "accepts 2 arg", "diff", base, cur, cur)
}

func diffExtent(off, n int64) changes.Extent { return changes.Extent{Offset: off, Length: n} }
