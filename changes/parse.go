package changes

import (
	"bufio"
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
)

// Change-list file formats accepted by ParseChanges.
const (
	// FormatSnapshotMetadata is the shape of the Kubernetes SnapshotMetadata
	// API (KEP-3314): {"block_metadata_type": "FIXED_LENGTH" |
	// "VARIABLE_LENGTH", "volume_capacity_bytes": N, "block_metadata":
	// [{"byte_offset": O, "size_bytes": S}, …]}, or a JSON array of such
	// objects as snapshot-metadata-lister -o json prints them (one per
	// gRPC message; the enum as its number, 1 or 2; a zero byte_offset
	// left out, as proto3 does).
	FormatSnapshotMetadata = "snapshot-metadata"
	// FormatRBD is the output of Ceph's `rbd diff --format json`:
	// [{"offset": O, "length": L, "exists": "true" | "false"}, …]. An extent
	// that no longer exists (discarded, now zeros) is still a change.
	FormatRBD = "rbd"
	// FormatEBS is the output of `aws ebs list-changed-blocks`:
	// {"ChangedBlocks": [{"BlockIndex": N, "FirstBlockToken": …,
	// "SecondBlockToken": …}, …], "ExpiryTime": …, "VolumeSize": GiB,
	// "BlockSize": B, "NextToken": …}, all pages in one (a set NextToken is
	// an error).
	FormatEBS = "ebs"
)

// ErrChangeList is wrapped by every error about a malformed change-list
// file.
var ErrChangeList = errors.New("invalid change list")

// Bounds on what ParseChanges holds in memory, whatever the file's size:
// one JSON value at a time (an entry of a list, or a scalar), and the
// extents found so far, neighbours merged as they arrive.
const (
	maxEntryBytes = 1 << 20
	// maxExtents separate extents take 512 MiB; a list more fragmented than
	// that is refused rather than risking the Job's memory limit.
	maxExtents = 1 << 25
)

// ParseChanges reads a change-list file for a device of size bytes, in
// format (FormatSnapshotMetadata, FormatRBD, FormatEBS, or "" to detect it
// from its shape), and returns the changed extents sorted and merged.
// Extents outside the device, negative or overflowing are errors naming the
// entry, and so is a file that states a device size other than size.
//
// A file that lists no extent (`"block_metadata":[]`, `[]`, no
// ChangedBlocks) means that nothing changed: the result is then an empty
// ChangeList that is not nil (see the package comment on nil and empty).
//
// The file is decoded as a stream: memory grows with the number of
// separate extents (16 bytes each; neighbours that touch or overlap are
// merged as they arrive), never with the file's size. Besides the single
// object of the SnapshotMetadata shape, ParseChanges reads the JSON array
// of such objects that the upstream snapshot-metadata-lister prints (one
// per gRPC message, block_metadata_type as a number, a zero byte_offset
// left out).
func ParseChanges(r io.Reader, format string, size int64) (ChangeList, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	if format == "" {
		head, err := br.Peek(64 << 10)
		if err != nil && err != io.EOF && err != bufio.ErrBufferFull {
			return nil, fmt.Errorf("reading change list: %w", err)
		}
		if format, err = detectFormat(head); err != nil {
			return nil, err
		}
	}
	in := &budgetReader{r: br}
	p := &changeParser{dec: json.NewDecoder(in), in: in, format: format, size: size}
	var err error
	switch format {
	case FormatSnapshotMetadata:
		err = p.snapshotMetadata()
	case FormatRBD:
		err = p.rbd()
	case FormatEBS:
		err = p.ebs()
	default:
		return nil, fmt.Errorf("%w: unknown format %q (want %s, %s or %s)", ErrChangeList, format, FormatSnapshotMetadata, FormatRBD, FormatEBS)
	}
	if err == nil {
		if _, terr := p.token(); terr != io.EOF {
			err = p.errorf("data after the end of the JSON document")
		}
	}
	if in.err != nil { // the reader failed: not the file's fault
		return nil, fmt.Errorf("reading change list: %w", in.err)
	}
	if err != nil {
		return nil, err
	}
	return p.compact(), nil
}

// detectFormat tells the shapes apart by the first key of the top-level
// object, or of the first object in a top-level array. An empty array is
// rbd's (and the lister's) way of saying that nothing changed.
func detectFormat(head []byte) (string, error) {
	if len(bytes.TrimLeft(head, " \t\r\n")) == 0 {
		return "", fmt.Errorf("%w: empty file", ErrChangeList)
	}
	dec := json.NewDecoder(bytes.NewReader(head))
	unknown := fmt.Errorf("%w: unknown shape (name its format: %s, %s or %s)", ErrChangeList, FormatSnapshotMetadata, FormatRBD, FormatEBS)
	tok, err := dec.Token()
	if err != nil || (tok != json.Delim('{') && tok != json.Delim('[')) {
		return "", fmt.Errorf("%w: not a JSON object or array", ErrChangeList)
	}
	array := tok == json.Delim('[')
	if array {
		if !dec.More() {
			return FormatRBD, nil
		}
		if tok, err = dec.Token(); err != nil || tok != json.Delim('{') {
			return "", unknown
		}
	}
	for dec.More() {
		key, err := dec.Token()
		if err != nil {
			return "", unknown
		}
		switch key {
		case "block_metadata_type", "volume_capacity_bytes", "block_metadata":
			return FormatSnapshotMetadata, nil
		case "offset", "length", "exists":
			if array {
				return FormatRBD, nil
			}
		case "ChangedBlocks", "BlockSize", "VolumeSize", "ExpiryTime", "NextToken":
			if !array {
				return FormatEBS, nil
			}
		}
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return "", unknown
		}
	}
	return "", unknown
}

// changeParser decodes one change-list document token by token.
type changeParser struct {
	dec    *json.Decoder
	in     *budgetReader
	format string
	size   int64
	out    []Extent // valid extents, neighbours merged as they arrive
}

func (p *changeParser) errorf(format string, args ...any) error {
	return fmt.Errorf("%w: %s: %s", ErrChangeList, p.format, fmt.Sprintf(format, args...))
}

// loc names an entry in errors, formatted only when there is one: pre,
// then i and post unless i < 0.
type loc struct {
	pre  string
	i    int
	post string
}

func (l loc) String() string {
	if l.i < 0 {
		return l.pre
	}
	return l.pre + strconv.Itoa(l.i) + l.post
}

// add validates e against the device and appends it, merged with the
// previous extent where they touch.
func (p *changeParser) add(where loc, e Extent) error {
	if e.Offset < 0 || e.Length <= 0 || e.Offset >= p.size || e.Length > p.size-e.Offset {
		return fmt.Errorf("%w: %s: %s: %w: [%d, +%d) on a device of %d bytes", ErrChangeList, p.format, where, ErrInvalidExtent, e.Offset, e.Length, p.size)
	}
	p.out = appendMerged(p.out, e)
	if len(p.out) > maxExtents {
		if p.out = p.compact(); len(p.out) > maxExtents*3/4 {
			return p.errorf("more than %d separate extents: the list is too fragmented to hold", maxExtents*3/4)
		}
	}
	return nil
}

// compact sorts p.out and merges it in place.
func (p *changeParser) compact() ChangeList {
	slices.SortFunc(p.out, func(a, b Extent) int { return cmp.Compare(a.Offset, b.Offset) })
	merged := p.out[:0]
	for _, e := range p.out {
		merged = appendMerged(merged, e)
	}
	if merged == nil { // nothing changed: present, and empty
		merged = []Extent{}
	}
	p.out = merged
	return ChangeList(merged)
}

// missing marks a number that an entry left out.
const missing = math.MinInt64
