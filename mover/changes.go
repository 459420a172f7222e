package mover

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// Change-list file formats accepted by ParseChanges.
const (
	// FormatSnapshotMetadata is the shape of the Kubernetes SnapshotMetadata
	// API (KEP-3314): {"block_metadata_type": "FIXED_LENGTH" |
	// "VARIABLE_LENGTH", "volume_capacity_bytes": N, "block_metadata":
	// [{"byte_offset": O, "size_bytes": S}, …]}.
	FormatSnapshotMetadata = "snapshot-metadata"
	// FormatRBD is the output of Ceph's `rbd diff --format json`:
	// [{"offset": O, "length": L, "exists": "true" | "false"}, …]. An extent
	// that no longer exists (discarded, now zeros) is still a change.
	FormatRBD = "rbd"
	// FormatEBS is the output of `aws ebs list-changed-blocks`:
	// {"ChangedBlocks": [{"BlockIndex": N, …}, …], "BlockSize": B,
	// "VolumeSize": GiB, …}.
	FormatEBS = "ebs"
)

// ErrChangeList is wrapped by every error about a malformed change-list
// file.
var ErrChangeList = errors.New("invalid change list")

// maxChangeListFile bounds what ParseChanges reads: a change list of 10 M
// extents in the most verbose shape.
const maxChangeListFile = 1 << 30

// ParseChanges reads a change-list file for a device of size bytes, in
// format (FormatSnapshotMetadata, FormatRBD, FormatEBS, or "" to detect it
// from its shape), and returns the changed extents sorted and merged.
// Extents outside the device, negative or overflowing are errors, and so is
// a file that states a device size other than size.
func ParseChanges(r io.Reader, format string, size int64) (ChangeList, error) {
	br := bufio.NewReader(io.LimitReader(r, maxChangeListFile+1))
	if format == "" {
		f, err := detectFormat(br)
		if err != nil {
			return nil, err
		}
		format = f
	}
	var extents []Extent
	var err error
	dec := json.NewDecoder(br)
	switch format {
	case FormatSnapshotMetadata:
		extents, err = parseSnapshotMetadata(dec, size)
	case FormatRBD:
		extents, err = parseRBD(dec)
	case FormatEBS:
		extents, err = parseEBS(dec, size)
	default:
		return nil, fmt.Errorf("%w: unknown format %q (want %s, %s or %s)", ErrChangeList, format, FormatSnapshotMetadata, FormatRBD, FormatEBS)
	}
	if err != nil {
		return nil, err
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: %s: data after the end of the JSON document", ErrChangeList, format)
	}
	cl, err := NewChangeList(extents, size)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrChangeList, format, err)
	}
	return cl, nil
}

// detectFormat peeks at the document: an array is rbd's; an object is told
// apart by its keys.
func detectFormat(br *bufio.Reader) (string, error) {
	head, _ := br.Peek(64 << 10)
	t := bytes.TrimLeft(head, " \t\r\n")
	switch {
	case len(t) == 0:
		return "", fmt.Errorf("%w: empty file", ErrChangeList)
	case t[0] == '[':
		return FormatRBD, nil
	case t[0] != '{':
		return "", fmt.Errorf("%w: not a JSON object or array", ErrChangeList)
	case bytes.Contains(head, []byte(`"block_metadata`)), bytes.Contains(head, []byte(`"volume_capacity_bytes"`)):
		return FormatSnapshotMetadata, nil
	case bytes.Contains(head, []byte(`"ChangedBlocks"`)), bytes.Contains(head, []byte(`"BlockSize"`)):
		return FormatEBS, nil
	}
	return "", fmt.Errorf("%w: unknown shape (give --changes-format %s, %s or %s)", ErrChangeList, FormatSnapshotMetadata, FormatRBD, FormatEBS)
}

func parseSnapshotMetadata(dec *json.Decoder, size int64) ([]Extent, error) {
	var doc struct {
		Type     string `json:"block_metadata_type"`
		Capacity *int64 `json:"volume_capacity_bytes"`
		Blocks   []struct {
			Offset *int64 `json:"byte_offset"`
			Size   *int64 `json:"size_bytes"`
		} `json:"block_metadata"`
	}
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrChangeList, FormatSnapshotMetadata, err)
	}
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s: %s", ErrChangeList, FormatSnapshotMetadata, fmt.Sprintf(format, args...))
	}
	if doc.Type != "FIXED_LENGTH" && doc.Type != "VARIABLE_LENGTH" {
		return nil, bad("block_metadata_type %q (want FIXED_LENGTH or VARIABLE_LENGTH)", doc.Type)
	}
	if doc.Capacity != nil && *doc.Capacity != size {
		return nil, bad("volume_capacity_bytes is %d, the device has %d bytes", *doc.Capacity, size)
	}
	out := make([]Extent, 0, len(doc.Blocks))
	for i, b := range doc.Blocks {
		if b.Offset == nil || b.Size == nil {
			return nil, bad("block_metadata[%d] lacks byte_offset or size_bytes", i)
		}
		if doc.Type == "FIXED_LENGTH" && i > 0 && *b.Size != *doc.Blocks[0].Size {
			return nil, bad("FIXED_LENGTH block_metadata[%d] has size_bytes %d, the first has %d", i, *b.Size, *doc.Blocks[0].Size)
		}
		out = append(out, Extent{Offset: *b.Offset, Length: *b.Size})
	}
	return out, nil
}

// rbdExists accepts rbd's "true"/"false" strings and plain booleans.
type rbdExists bool

func (e *rbdExists) UnmarshalJSON(b []byte) error {
	switch string(b) {
	case `true`, `"true"`:
		*e = true
	case `false`, `"false"`:
		*e = false
	default:
		return fmt.Errorf("exists is %s (want true or false)", b)
	}
	return nil
}

func parseRBD(dec *json.Decoder) ([]Extent, error) {
	var doc []struct {
		Offset *int64    `json:"offset"`
		Length *int64    `json:"length"`
		Exists rbdExists `json:"exists"`
	}
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrChangeList, FormatRBD, err)
	}
	out := make([]Extent, 0, len(doc))
	for i, d := range doc {
		if d.Offset == nil || d.Length == nil {
			return nil, fmt.Errorf("%w: %s: entry %d lacks offset or length", ErrChangeList, FormatRBD, i)
		}
		out = append(out, Extent{Offset: *d.Offset, Length: *d.Length})
	}
	return out, nil
}

func parseEBS(dec *json.Decoder, size int64) ([]Extent, error) {
	var doc struct {
		Blocks []struct {
			Index *int64 `json:"BlockIndex"`
		} `json:"ChangedBlocks"`
		BlockSize  int64  `json:"BlockSize"`
		VolumeSize *int64 `json:"VolumeSize"` // GiB
		NextToken  string `json:"NextToken"`
	}
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrChangeList, FormatEBS, err)
	}
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s: %s", ErrChangeList, FormatEBS, fmt.Sprintf(format, args...))
	}
	if doc.BlockSize <= 0 || doc.BlockSize > 1<<30 {
		return nil, bad("BlockSize %d", doc.BlockSize)
	}
	if doc.NextToken != "" {
		return nil, bad("the list is one page of several (NextToken is set): concatenate all pages' ChangedBlocks first")
	}
	if doc.VolumeSize != nil && (*doc.VolumeSize < 0 || *doc.VolumeSize > 1<<24 || *doc.VolumeSize<<30 != size) {
		return nil, bad("VolumeSize is %d GiB, the device has %d bytes", *doc.VolumeSize, size)
	}
	out := make([]Extent, 0, len(doc.Blocks))
	for i, b := range doc.Blocks {
		if b.Index == nil || *b.Index < 0 || *b.Index > (1<<62)/doc.BlockSize {
			return nil, bad("ChangedBlocks[%d] has no valid BlockIndex", i)
		}
		off := *b.Index * doc.BlockSize
		// The last block of a volume may be shorter than BlockSize.
		out = append(out, Extent{Offset: off, Length: min(doc.BlockSize, max(size-off, 1))})
	}
	return out, nil
}

// SnapshotMetadataJSON is a change list in the Kubernetes SnapshotMetadata
// shape, as `mover diff` prints it and ParseChanges reads it back.
type SnapshotMetadataJSON struct {
	Type     string          `json:"block_metadata_type"`
	Capacity int64           `json:"volume_capacity_bytes"`
	Blocks   []BlockMetadata `json:"block_metadata"`
}

// BlockMetadata is one extent of SnapshotMetadataJSON.
type BlockMetadata struct {
	Offset int64 `json:"byte_offset"`
	Size   int64 `json:"size_bytes"`
}

// SnapshotMetadata returns cl in the SnapshotMetadata shape for a device of
// size bytes.
func (cl ChangeList) SnapshotMetadata(size int64) SnapshotMetadataJSON {
	out := SnapshotMetadataJSON{Type: "VARIABLE_LENGTH", Capacity: size, Blocks: make([]BlockMetadata, 0, len(cl))}
	for _, e := range cl {
		out.Blocks = append(out.Blocks, BlockMetadata{Offset: e.Offset, Size: e.Length})
	}
	return out
}

// Bytes returns the total length of the extents.
func (cl ChangeList) Bytes() int64 {
	var n int64
	for _, e := range cl {
		n += e.Length
	}
	return n
}
