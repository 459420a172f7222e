package changes_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/blockmover/blockmover/changes"
)

func readFixture(tb testing.TB, name string) []byte {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join("..", "testdata", "changes", name))
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// TestParseChangesFixtures: more golden files of each shape, as the tools
// print them (rbd's --pretty-format, the AWS CLI's epoch timestamps, an
// empty diff), and malformed ones.
func TestParseChangesFixtures(t *testing.T) {
	const mib = 1 << 20
	tests := []struct {
		file   string
		format string
		size   int64
		want   changes.ChangeList // nil: an error containing err
		err    string
	}{
		{"rbd-pretty.json", "", 16 * mib, changes.ChangeList{{0, 8 * mib}, {12 * mib, 4096}}, ""},
		{"rbd-pretty.json", changes.FormatRBD, 16 * mib, changes.ChangeList{{0, 8 * mib}, {12 * mib, 4096}}, ""},
		{"rbd-empty.json", "", 16 * mib, changes.ChangeList{}, ""},
		{"ebs-epoch.json", "", 1 << 30, changes.ChangeList{{1 * mib, 1 * mib}, {(1 << 30) - 512<<10, 512 << 10}}, ""},
		{"ebs-epoch.json", changes.FormatEBS, 1 << 30, changes.ChangeList{{1 * mib, 1 * mib}, {(1 << 30) - 512<<10, 512 << 10}}, ""},
		{"ebs-epoch.json", changes.FormatSnapshotMetadata, 1 << 30, nil, "snapshot-metadata"},
		{"rbd-pretty.json", "", 12 * mib, nil, "invalid extent"},
		{"bad-ebs-nexttoken.json", "", 1 << 30, nil, "NextToken"},
		{"bad-ebs-blocksize.json", "", 1 << 30, nil, "BlockSize"},
		{"bad-rbd-exists.json", "", 16 * mib, nil, "exists"},
		{"bad-trailing.json", "", 16 * mib, nil, "after the end"},
		{"bad-unknown.json", "", 16 * mib, nil, "unknown shape"},
		{"snapshot-metadata.json", "", 8*mib + 1, nil, "volume_capacity_bytes is 8388608, the device has 8388609 bytes"},
	}
	for _, tc := range tests {
		t.Run(tc.file+"/"+tc.format, func(t *testing.T) {
			got, err := changes.ParseChanges(bytes.NewReader(readFixture(t, tc.file)), tc.format, tc.size)
			if tc.want == nil {
				if !errors.Is(err, changes.ErrChangeList) || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want ErrChangeList mentioning %q", err, tc.err)
				}
				if strings.Contains(err.Error(), "\n") {
					t.Fatalf("error is not one line: %q", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
}

// TestParseChangesInline covers what no fixture does.
func TestParseChangesInline(t *testing.T) {
	tests := []struct {
		name, doc, format string
		size              int64
		want              changes.ChangeList
		err               string
	}{
		{"empty file", "", "", 100, nil, "empty"},
		{"whitespace", " \n\t", "", 100, nil, "empty"},
		{"not JSON", "offset,length\n0,4096\n", "", 100, nil, "invalid change list"},
		{"a number", "42", "", 100, nil, "invalid change list"},
		{"unknown format", "[]", "zfs", 100, nil, "unknown format \"zfs\""},
		{"rbd booleans", `[{"offset":0,"length":10,"exists":true},{"offset":10,"length":10,"exists":false}]`, "", 100, changes.ChangeList{{0, 20}}, ""},
		{"rbd unsorted and overlapping", `[{"offset":50,"length":10,"exists":"true"},{"offset":0,"length":55,"exists":"true"}]`, "", 100, changes.ChangeList{{0, 60}}, ""},
		{"rbd missing length", `[{"offset":0,"exists":"true"}]`, "rbd", 100, nil, "entry 0"},
		{"rbd offset too large", `[{"offset":18446744073709551615,"length":1,"exists":"true"}]`, "rbd", 100, nil, "rbd"},
		{"rbd zero length", `[{"offset":0,"length":0,"exists":"true"}]`, "rbd", 100, nil, "invalid extent"},
		{"sm unknown type", `{"block_metadata_type":"SOMETIMES","volume_capacity_bytes":100,"block_metadata":[]}`, "", 100, nil, "block_metadata_type"},
		{"sm no capacity", `{"block_metadata_type":"VARIABLE_LENGTH","block_metadata":[{"byte_offset":90,"size_bytes":10}]}`, "", 100, changes.ChangeList{{90, 10}}, ""},
		{"sm past the end", `{"block_metadata_type":"VARIABLE_LENGTH","block_metadata":[{"byte_offset":91,"size_bytes":10}]}`, "", 100, nil, "[91, +10) on a device of 100 bytes"},
		{"sm fixed, equal", `{"block_metadata_type":"FIXED_LENGTH","volume_capacity_bytes":100,"block_metadata":[{"byte_offset":0,"size_bytes":10},{"byte_offset":30,"size_bytes":10}]}`, "", 100, changes.ChangeList{{0, 10}, {30, 10}}, ""},
		{"sm missing size", `{"block_metadata_type":"VARIABLE_LENGTH","block_metadata":[{"byte_offset":0}]}`, "", 100, nil, "block_metadata[0]"},
		{"ebs volume size", `{"ChangedBlocks":[],"BlockSize":524288,"VolumeSize":2}`, "", 1 << 30, nil, "VolumeSize is 2 GiB, the device has 1073741824 bytes"},
		{"ebs negative index", `{"ChangedBlocks":[{"BlockIndex":-1}],"BlockSize":524288}`, "", 1 << 30, nil, "ChangedBlocks[0]"},
		{"ebs index past the end", `{"ChangedBlocks":[{"BlockIndex":2048}],"BlockSize":524288}`, "", 1 << 30, nil, "invalid extent"},
		{"ebs huge index", `{"ChangedBlocks":[{"BlockIndex":9223372036854775807}],"BlockSize":524288}`, "", 1 << 30, nil, "BlockIndex"},
		{"ebs no block size", `{"ChangedBlocks":[{"BlockIndex":0}]}`, "", 1 << 30, nil, "BlockSize"},
		{"ebs adjacent blocks merge", `{"ChangedBlocks":[{"BlockIndex":1},{"BlockIndex":0},{"BlockIndex":2}],"BlockSize":524288,"VolumeSize":1}`, "", 1 << 30, changes.ChangeList{{0, 3 * 512 << 10}}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := changes.ParseChanges(strings.NewReader(tc.doc), tc.format, tc.size)
			if tc.want == nil {
				if !errors.Is(err, changes.ErrChangeList) || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want ErrChangeList mentioning %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
}

// fuzzParse is the property every parser must have: no panic, and either
// an error wrapping ErrChangeList or a valid change list for the device.
func fuzzParse(f *testing.F, format string, seeds ...string) {
	for _, s := range seeds {
		f.Add(readFixture(f, s), int64(8<<20))
		f.Add(readFixture(f, s), int64(1<<30))
	}
	f.Fuzz(func(t *testing.T, doc []byte, size int64) {
		cl, err := changes.ParseChanges(bytes.NewReader(doc), format, size)
		if err != nil {
			if !errors.Is(err, changes.ErrChangeList) {
				t.Fatalf("error does not wrap ErrChangeList: %v", err)
			}
			return
		}
		if err := cl.Validate(size); err != nil {
			t.Fatalf("accepted an invalid change list for %d bytes: %v", size, err)
		}
	})
}

func FuzzParseChangesSnapshotMetadata(f *testing.F) {
	fuzzParse(f, changes.FormatSnapshotMetadata, "snapshot-metadata.json", "snapshot-metadata-lister.json", "snapshot-metadata-fixed.json", "bad-fixed.json", "bad-capacity.json", "bad-outside.json", "bad-truncated.json")
}

func FuzzParseChangesRBD(f *testing.F) {
	fuzzParse(f, changes.FormatRBD, "rbd.json", "rbd-pretty.json", "rbd-empty.json", "bad-negative.json", "bad-overflow.json", "bad-rbd-exists.json")
}

func FuzzParseChangesEBS(f *testing.F) {
	fuzzParse(f, changes.FormatEBS, "ebs.json", "ebs-epoch.json", "bad-ebs-nexttoken.json", "bad-ebs-blocksize.json")
}
