package changes_test

import (
	"errors"
	"io"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/blockmover/blockmover/changes"
)

// TestParseChangesLister: the JSON that the upstream snapshot-metadata-lister
// prints (external-snapshot-metadata pkg/iterator JSONEmitter): an array of
// records, block_metadata_type as a number, a zero byte_offset left out.
func TestParseChangesLister(t *testing.T) {
	const mib = 1 << 20
	want := changes.ChangeList{{0, 8192}, {mib, 4096}, {8*mib - 4096, 4096}}
	for _, format := range []string{"", changes.FormatSnapshotMetadata} {
		got, err := changes.ParseChanges(strings.NewReader(string(readFixture(t, "snapshot-metadata-lister.json"))), format, 8*mib)
		if err != nil || !slices.Equal(got, want) {
			t.Fatalf("format %q: %v, %v; want %v", format, got, err, want)
		}
	}
	tests := []struct{ name, doc, err string }{
		{"numeric variable", `{"block_metadata_type":2,"volume_capacity_bytes":100,"block_metadata":[{"size_bytes":10},{"byte_offset":50,"size_bytes":20}]}`, ""},
		{"null list", `{"block_metadata_type":"VARIABLE_LENGTH","block_metadata":null,"volume_capacity_bytes":100}`, ""},
		{"keys in any order", `{"block_metadata":[{"size_bytes":10,"byte_offset":0}],"volume_capacity_bytes":100,"block_metadata_type":"FIXED_LENGTH"}`, ""},
		{"empty lister output", `[]`, ""},
		{"unknown numeric type", `{"block_metadata_type":0,"block_metadata":[]}`, "block_metadata_type: 0 is not FIXED_LENGTH (1) or VARIABLE_LENGTH (2)"},
		{"records disagree", `[{"block_metadata_type":1,"block_metadata":[{"size_bytes":10}]},{"block_metadata_type":2,"block_metadata":[]}]`, "record 1: block_metadata_type differs"},
		{"fixed across records", `[{"block_metadata_type":1,"block_metadata":[{"size_bytes":10}]},{"block_metadata_type":1,"block_metadata":[{"byte_offset":50,"size_bytes":20}]}]`, "FIXED_LENGTH record 1: block_metadata[0] has size_bytes 20, the first has 10"},
		{"capacity in a record", `[{"block_metadata_type":1,"volume_capacity_bytes":99,"block_metadata":[]}]`, "record 0: volume_capacity_bytes is 99, the device has 100 bytes"},
		{"record not an object", `[{"block_metadata_type":1},7]`, "record 1 is a number"},
		{"outside in a record", `[{"block_metadata_type":2,"block_metadata":[{"byte_offset":95,"size_bytes":10}]}]`, "record 0: block_metadata[0]: invalid extent: [95, +10)"},
		{"trailing bracket", `{"block_metadata_type":2,"block_metadata":[]}]`, "after the end"},
		{"offset not a number", `{"block_metadata_type":2,"block_metadata":[{"byte_offset":"0","size_bytes":10}]}`, "block_metadata[0]: byte_offset is string, want a 64-bit integer"},
		{"entry not an object", `{"block_metadata_type":2,"block_metadata":[[0,10]]}`, "block_metadata[0] is array, want an object"},
		{"oversized value", `{"block_metadata_type":2,"note":"` + strings.Repeat("x", 2<<20) + `","block_metadata":[]}`, "longer than"},
	}
	for _, tc := range tests {
		_, err := changes.ParseChanges(strings.NewReader(tc.doc), "", 100)
		if tc.err == "" {
			if err != nil {
				t.Errorf("%s: %v", tc.name, err)
			}
			continue
		}
		if !errors.Is(err, changes.ErrChangeList) || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%s: error %v, want one containing %q", tc.name, err, tc.err)
		}
	}
}

// entryReader produces a JSON array of n entries without holding it.
type entryReader struct {
	n, i  int
	entry func(dst []byte, i int) []byte
	buf   []byte
}

func (r *entryReader) Read(p []byte) (int, error) {
	for len(r.buf) < len(p) && r.i <= r.n {
		switch {
		case r.i == r.n:
			r.buf = append(r.buf, ']')
		case r.i == 0:
			r.buf = append(r.buf, '[')
		default:
			r.buf = append(r.buf, ',')
		}
		if r.i < r.n {
			r.buf = r.entry(r.buf, r.i)
		}
		r.i++
	}
	if len(r.buf) == 0 {
		return 0, io.EOF
	}
	n := copy(p, r.buf)
	r.buf = r.buf[:copy(r.buf, r.buf[n:])]
	return n, nil
}

// rbdEntry writes entry i of rbd's shape, every 8 KiB, allocating nothing.
func rbdEntry(length int, exists string) func(dst []byte, i int) []byte {
	return func(dst []byte, i int) []byte {
		dst = append(dst, `{"offset":`...)
		dst = strconv.AppendInt(dst, int64(i)*8192, 10)
		dst = append(dst, `,"length":`...)
		dst = strconv.AppendInt(dst, int64(length), 10)
		dst = append(dst, `,"exists":"`...)
		dst = append(dst, exists...)
		return append(dst, `"}`...)
	}
}

// TestParseChangesStreams: a list of a million entries (40 MB of JSON) is
// parsed with memory for its merged extents, not for the file.
func TestParseChangesStreams(t *testing.T) {
	const n = 1_000_000
	const size = n * 8192
	for _, tc := range []struct {
		name    string
		entry   func(dst []byte, i int) []byte
		extents int
		maxMiB  uint64
	}{
		{"contiguous", rbdEntry(8192, "true"), 1, 4},
		{"every other page", rbdEntry(4096, "false"), n, 100}, // 16 MiB of extents, grown by append
	} {
		t.Run(tc.name, func(t *testing.T) {
			runtime.GC()
			var m0, m1 runtime.MemStats
			runtime.ReadMemStats(&m0)
			cl, err := changes.ParseChanges(&entryReader{n: n, entry: tc.entry}, "", size)
			runtime.ReadMemStats(&m1)
			if err != nil {
				t.Fatal(err)
			}
			if len(cl) != tc.extents {
				t.Fatalf("%d extents, want %d", len(cl), tc.extents)
			}
			alloc := (m1.TotalAlloc - m0.TotalAlloc) >> 20
			t.Logf("%d entries: %d MiB allocated in all, %d allocations", n, alloc, m1.Mallocs-m0.Mallocs)
			if alloc > tc.maxMiB {
				t.Errorf("allocated %d MiB, want at most %d", alloc, tc.maxMiB)
			}
		})
	}
}

// failReader fails after some bytes: the error is the reader's, not a bad
// list's.
type failReader struct {
	r   io.Reader
	n   int
	err error
}

func (f *failReader) Read(p []byte) (int, error) {
	if f.n <= 0 {
		return 0, f.err
	}
	p = p[:min(len(p), f.n)]
	n, err := f.r.Read(p)
	f.n -= n
	return n, err
}

func TestParseChangesReadError(t *testing.T) {
	eio := errors.New("input/output error")
	doc := `[{"offset":0,"length":4096,"exists":"true"},{"offset":8192,"length":4096,"exists":"true"}]`
	for _, format := range []string{"", changes.FormatRBD} {
		_, err := changes.ParseChanges(&failReader{r: strings.NewReader(doc), n: 50, err: eio}, format, 1<<20)
		if !errors.Is(err, eio) || errors.Is(err, changes.ErrChangeList) {
			t.Errorf("format %q: %v, want the read error and not ErrChangeList", format, err)
		}
	}
}
