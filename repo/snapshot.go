package repo

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Entry is one entry of a snapshot's chunk list: a data chunk or a hole.
// Offsets are implicit: each page starts at its segment's offset and
// entries follow each other.
type Entry struct {
	Length int64
	Hole   bool
	ID     ID // zero for holes
}

// Snapshot is the metadata of one exported volume. Its chunk list is stored
// as pages, one per segment of Chunking.SegmentSize bytes, each a
// content-addressed blob: an incremental snapshot stores only the pages
// that changed.
type Snapshot struct {
	// ID is the snapshot's name in the repository; it is not stored inside.
	ID ID `json:"-"`

	Volume   string            `json:"volume"`
	Source   string            `json:"source,omitempty"`
	Hostname string            `json:"hostname,omitempty"`
	Time     time.Time         `json:"time"`
	Tags     map[string]string `json:"tags,omitempty"`
	// Parent is the snapshot an incremental export started from.
	Parent *ID `json:"parent,omitempty"`
	// Size of the volume in bytes.
	Size int64 `json:"size"`
	// SegmentSize is the page granularity: page i covers
	// [i·SegmentSize, min((i+1)·SegmentSize, Size)).
	SegmentSize int64 `json:"segment_size"`
	Pages       []ID  `json:"pages"`
	// Stats of the export that wrote the snapshot.
	Stats SnapshotStats `json:"stats"`
	// Repaired is set on a snapshot that RepairSnapshot wrote in place of
	// a damaged one: the listed ranges restore as zeros.
	Repaired *Repaired `json:"repaired,omitempty"`
}

// SnapshotStats records what an export did.
type SnapshotStats struct {
	ReadBytes   int64   `json:"read_bytes"`
	ZeroBytes   int64   `json:"zero_bytes"`
	NewBytes    int64   `json:"new_bytes"`
	StoredBytes int64   `json:"stored_bytes"`
	Chunks      int64   `json:"chunks"`
	NewChunks   int64   `json:"new_chunks"`
	Seconds     float64 `json:"seconds"`
}

// MaxVolumeName is the longest volume name in bytes.
const MaxVolumeName = 255

// ErrInvalidVolumeName is wrapped by CheckVolumeName's errors.
var ErrInvalidVolumeName = errors.New("invalid volume name")

// CheckVolumeName reports whether name may name a volume in new snapshots:
// 1 to MaxVolumeName bytes of UTF-8 without '/' and without control
// characters (newlines, tabs, …). Names are shown one per line, used in
// "latest:NAME" references and as file and object names by control planes;
// these rules keep every such use unambiguous. Snapshots written before
// the rule existed are still read.
func CheckVolumeName(name string) error {
	bad := func(why string) error { return fmt.Errorf("%w %q: %s", ErrInvalidVolumeName, name, why) }
	switch {
	case name == "":
		return bad("empty")
	case len(name) > MaxVolumeName:
		return bad(fmt.Sprintf("%d bytes, longer than %d", len(name), MaxVolumeName))
	case !utf8.ValidString(name):
		return bad("not valid UTF-8")
	case strings.ContainsRune(name, '/'):
		return bad(`contains "/"`)
	case strings.IndexFunc(name, unicode.IsControl) >= 0:
		return bad("contains a control character")
	}
	return nil
}

// validate checks the snapshot's fields against each other.
func (s *Snapshot) validate() error {
	if s.Size < 0 || s.SegmentSize <= 0 {
		return fmt.Errorf("%w: snapshot size %d, segment size %d", errFormat, s.Size, s.SegmentSize)
	}
	want := (s.Size + s.SegmentSize - 1) / s.SegmentSize
	if int64(len(s.Pages)) != want {
		return fmt.Errorf("%w: snapshot of %d bytes has %d pages, want %d", errFormat, s.Size, len(s.Pages), want)
	}
	return nil
}

// PageRange returns the byte range page i covers.
func (s *Snapshot) PageRange(i int) (start, end int64) {
	start = int64(i) * s.SegmentSize
	return start, min(start+s.SegmentSize, s.Size)
}

const (
	pageVersion  = 1
	pageEntryMax = 1 + binary.MaxVarintLen64 + 32
)

// EncodePage returns the plaintext of a manifest page.
func EncodePage(entries []Entry) []byte {
	b := make([]byte, 0, 1+binary.MaxVarintLen64+len(entries)*pageEntryMax)
	b = append(b, pageVersion)
	b = binary.AppendUvarint(b, uint64(len(entries)))
	for _, e := range entries {
		if e.Hole {
			b = append(b, 1)
			b = binary.AppendUvarint(b, uint64(e.Length))
			continue
		}
		b = append(b, 0)
		b = binary.AppendUvarint(b, uint64(e.Length))
		b = append(b, e.ID[:]...)
	}
	return b
}

// DecodePage parses a manifest page whose entries must add up to length
// bytes.
func DecodePage(b []byte, length int64) ([]Entry, error) {
	d := decoder{b: b}
	if v := d.byte("page version"); d.err == nil && v != pageVersion {
		return nil, fmt.Errorf("%w: page version %d", errFormat, v)
	}
	n := d.uvarint(uint64(len(b)/2), "page entry count")
	entries := make([]Entry, 0, n)
	var total int64
	for i := uint64(0); i < n && d.err == nil; i++ {
		kind := d.byte("page entry kind")
		l := int64(d.uvarint(uint64(max(length, 0)), "page entry length"))
		e := Entry{Length: l, Hole: kind == 1}
		switch {
		case d.err != nil:
		case kind > 1 || l <= 0 || (kind == 0 && l > maxBlob):
			d.fail("page entry")
		case kind == 0:
			e.ID = d.id("page entry ID")
		}
		total += l
		entries = append(entries, e)
	}
	if d.err == nil && len(d.b) != 0 {
		d.fail("page (trailing bytes)")
	}
	if d.err != nil {
		return nil, d.err
	}
	if total != length {
		return nil, fmt.Errorf("%w: page entries cover %d bytes, want %d", errFormat, total, length)
	}
	return entries, nil
}
