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
	"reflect"
	"slices"
	"strconv"
	"strings"
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

// errEntryTooLarge is what budgetReader returns once one JSON value has
// used up its budget.
var errEntryTooLarge = errors.New("entry too large")

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

// budgetReader lets the JSON decoder read at most n more bytes, so one
// oversized value cannot make it buffer the whole file. The parser resets
// n before each value. It keeps the first read error of r.
type budgetReader struct {
	r   io.Reader
	n   int64
	err error
}

func (b *budgetReader) Read(p []byte) (int, error) {
	if b.n <= 0 {
		return 0, errEntryTooLarge
	}
	if int64(len(p)) > b.n {
		p = p[:b.n]
	}
	n, err := b.r.Read(p)
	b.n -= int64(n)
	if err != nil && err != io.EOF && b.err == nil {
		b.err = err
	}
	return n, err
}

// detectFormat tells the shapes apart by the first key of the top-level
// object, or of the first object in a top-level array. An empty array is
// rbd's (and the lister's) way of saying that nothing changed.
func detectFormat(head []byte) (string, error) {
	if len(bytes.TrimLeft(head, " \t\r\n")) == 0 {
		return "", fmt.Errorf("%w: empty file", ErrChangeList)
	}
	dec := json.NewDecoder(bytes.NewReader(head))
	unknown := fmt.Errorf("%w: unknown shape (give --changes-format %s, %s or %s)", ErrChangeList, FormatSnapshotMetadata, FormatRBD, FormatEBS)
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

// jsonError explains an error of the decoder at where.
func (p *changeParser) jsonError(where string, err error) error {
	switch {
	case errors.Is(err, errEntryTooLarge):
		return p.errorf("%s: a JSON value longer than %d bytes", where, maxEntryBytes)
	case err == io.EOF:
		err = io.ErrUnexpectedEOF
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) && te.Type != nil { // say it without Go's types
		if te.Field != "" {
			where += ": " + te.Field
		}
		want := "an object"
		switch te.Type.Kind() {
		case reflect.Int64:
			want = "a 64-bit integer"
		case reflect.Pointer, reflect.String:
			want = "a string"
		}
		return p.errorf("%s is %s, want %s", where, te.Value, want)
	}
	return fmt.Errorf("%w: %s: %s: %w", ErrChangeList, p.format, where, err)
}

func (p *changeParser) token() (json.Token, error) {
	p.in.n = maxEntryBytes
	return p.dec.Token()
}

func (p *changeParser) decode(v any) error {
	p.in.n = maxEntryBytes
	return p.dec.Decode(v)
}

func (p *changeParser) more() bool {
	p.in.n = maxEntryBytes
	return p.dec.More()
}

// open reads the token that starts the value at where: want, or null
// (reported as false) when nullable.
func (p *changeParser) open(where string, want json.Delim, nullable bool) (bool, error) {
	tok, err := p.token()
	if err != nil {
		return false, p.jsonError(where, err)
	}
	if tok == nil && nullable {
		return false, nil
	}
	if tok != want {
		kind := "an object"
		if want == '[' {
			kind = "an array"
		}
		return false, p.errorf("%s is %v, not %s", where, tokenKind(tok), kind)
	}
	return true, nil
}

// close reads the delimiter that ends an array or object.
func (p *changeParser) close(where string) error {
	if _, err := p.token(); err != nil {
		return p.jsonError(where, err)
	}
	return nil
}

// key reads the next key of an object.
func (p *changeParser) key(where string) (string, error) {
	tok, err := p.token()
	if err != nil {
		return "", p.jsonError(where, err)
	}
	k, _ := tok.(string)
	return k, nil
}

// skip reads and drops one value.
func (p *changeParser) skip(where string) error {
	var raw json.RawMessage
	if err := p.decode(&raw); err != nil {
		return p.jsonError(where, err)
	}
	return nil
}

func tokenKind(tok json.Token) string {
	switch tok.(type) {
	case nil:
		return "null"
	case json.Delim:
		return fmt.Sprintf("%q", tok)
	case string:
		return "a string"
	case bool:
		return "a boolean"
	}
	return "a number"
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

// appendMerged appends e to list, or extends the last extent when e starts
// within or just after it: input in increasing order costs no memory for
// neighbours.
func appendMerged(list []Extent, e Extent) []Extent {
	if n := len(list); n > 0 && e.Offset >= list[n-1].Offset && e.Offset <= list[n-1].End() {
		list[n-1].Length = max(list[n-1].End(), e.End()) - list[n-1].Offset
		return list
	}
	return append(list, e)
}

// compact sorts p.out and merges it in place.
func (p *changeParser) compact() ChangeList {
	slices.SortFunc(p.out, func(a, b Extent) int { return cmp.Compare(a.Offset, b.Offset) })
	merged := p.out[:0]
	for _, e := range p.out {
		merged = appendMerged(merged, e)
	}
	p.out = merged
	return ChangeList(merged)
}

// missing marks a number that an entry left out.
const missing = math.MinInt64

// metadataType is block_metadata_type: the enum's name, or its number as
// encoding/json prints the generated Go type.
type metadataType int

const (
	fixedLength    metadataType = 1
	variableLength metadataType = 2
)

func (t *metadataType) UnmarshalJSON(b []byte) error {
	switch string(b) {
	case `"FIXED_LENGTH"`, `1`:
		*t = fixedLength
	case `"VARIABLE_LENGTH"`, `2`:
		*t = variableLength
	default:
		return fmt.Errorf("%s is not FIXED_LENGTH (1) or VARIABLE_LENGTH (2)", b)
	}
	return nil
}

// snapshotMetadata reads one object of the SnapshotMetadata shape, or an
// array of them.
func (p *changeParser) snapshotMetadata() error {
	tok, err := p.token()
	if err != nil {
		return p.jsonError("the document", err)
	}
	var typ metadataType
	first, other := int64(missing), int64(missing) // block sizes, for FIXED_LENGTH
	var otherAt string
	// record reads the keys of one object up to its end; prefix names it
	// in errors ("" or "record N: ").
	record := func(prefix string) error {
		name := "the document"
		if prefix != "" {
			name = strings.TrimSuffix(prefix, ": ")
		}
		var rtyp metadataType
		for p.more() {
			k, err := p.key(name)
			if err != nil {
				return err
			}
			switch k {
			case "block_metadata_type":
				if err := p.decode(&rtyp); err != nil {
					return p.jsonError(prefix+k, err)
				}
			case "volume_capacity_bytes":
				var c int64
				if err := p.decode(&c); err != nil {
					return p.jsonError(prefix+k, err)
				}
				if c != p.size {
					return p.errorf("%svolume_capacity_bytes is %d, the device has %d bytes", prefix, c, p.size)
				}
			case "block_metadata":
				ok, err := p.open(prefix+k, '[', true)
				if err != nil {
					return err
				}
				if !ok {
					continue
				}
				var b struct {
					Offset int64 `json:"byte_offset"`
					Size   int64 `json:"size_bytes"`
				}
				for i := 0; p.more(); i++ {
					at := loc{prefix + "block_metadata[", i, "]"}
					b.Offset, b.Size = 0, missing // proto3 JSON leaves a zero offset out
					if err := p.decode(&b); err != nil {
						return p.jsonError(at.String(), err)
					}
					if b.Size == missing {
						return p.errorf("%s lacks size_bytes", at)
					}
					if first == missing {
						first = b.Size
					} else if b.Size != first && otherAt == "" {
						other, otherAt = b.Size, at.String()
					}
					if err := p.add(at, Extent{Offset: b.Offset, Length: b.Size}); err != nil {
						return err
					}
				}
				if err := p.close(prefix + k); err != nil {
					return err
				}
			default:
				if err := p.skip(prefix + k); err != nil {
					return err
				}
			}
		}
		if err := p.close(name); err != nil {
			return err
		}
		switch {
		case rtyp == 0:
			return p.errorf("%slacks block_metadata_type (want FIXED_LENGTH or VARIABLE_LENGTH)", prefix)
		case typ != 0 && rtyp != typ:
			return p.errorf("%sblock_metadata_type differs from the records before", prefix)
		}
		typ = rtyp
		return nil
	}
	switch tok {
	case json.Delim('{'):
		err = record("")
	case json.Delim('['):
		for i := 0; err == nil && p.more(); i++ {
			name := fmt.Sprintf("record %d", i)
			if _, err = p.open(name, '{', false); err == nil {
				err = record(name + ": ")
			}
		}
		if err == nil {
			err = p.close("the document")
		}
	default:
		return p.errorf("the document is %s, not an object or an array of objects", tokenKind(tok))
	}
	if err != nil {
		return err
	}
	if typ == fixedLength && otherAt != "" {
		return p.errorf("FIXED_LENGTH %s has size_bytes %d, the first has %d", otherAt, other, first)
	}
	return nil
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

// rbd reads rbd diff's array. An extent that no longer exists (discarded,
// now zeros) is a change like any other.
func (p *changeParser) rbd() error {
	if _, err := p.open("the document", '[', false); err != nil {
		return err
	}
	var d struct {
		Offset int64     `json:"offset"`
		Length int64     `json:"length"`
		Exists rbdExists `json:"exists"`
	}
	for i := 0; p.more(); i++ {
		at := loc{"entry ", i, ""}
		d.Offset, d.Length = missing, missing
		if err := p.decode(&d); err != nil {
			return p.jsonError(at.String(), err)
		}
		if d.Offset == missing || d.Length == missing {
			return p.errorf("%s lacks offset or length", at)
		}
		if err := p.add(at, Extent{Offset: d.Offset, Length: d.Length}); err != nil {
			return err
		}
	}
	return p.close("end")
}

// ebs reads the output of aws ebs list-changed-blocks. BlockSize may come
// after ChangedBlocks (it does in the CLI's output), so block indexes are
// gathered as runs first and turned into bytes at the end.
func (p *changeParser) ebs() error {
	if _, err := p.open("the document", '{', false); err != nil {
		return err
	}
	var runs []Extent // in blocks
	blockSize, volumeSize := int64(missing), int64(missing)
	var next *string
	for p.more() {
		k, err := p.key("the document")
		if err != nil {
			return err
		}
		switch k {
		case "ChangedBlocks":
			if ok, err := p.open(k, '[', true); err != nil || !ok {
				if err != nil {
					return err
				}
				continue
			}
			var b struct {
				Index int64 `json:"BlockIndex"`
			}
			for i := 0; p.more(); i++ {
				at := loc{"ChangedBlocks[", i, "]"}
				b.Index = missing
				if err := p.decode(&b); err != nil {
					return p.jsonError(at.String(), err)
				}
				if b.Index == missing || b.Index < 0 {
					return p.errorf("%s has no valid BlockIndex", at)
				}
				runs = appendMerged(runs, Extent{Offset: b.Index, Length: 1})
				if len(runs) > maxExtents {
					return p.errorf("more than %d separate runs of blocks: the list is too fragmented to hold", maxExtents)
				}
			}
			if err := p.close(k); err != nil {
				return err
			}
		case "BlockSize":
			if err := p.decode(&blockSize); err != nil {
				return p.jsonError(k, err)
			}
		case "VolumeSize":
			if err := p.decode(&volumeSize); err != nil {
				return p.jsonError(k, err)
			}
		case "NextToken":
			if err := p.decode(&next); err != nil {
				return p.jsonError(k, err)
			}
		default:
			if err := p.skip(k); err != nil {
				return err
			}
		}
	}
	if err := p.close("end"); err != nil {
		return err
	}
	if blockSize <= 0 || blockSize > 1<<30 {
		if blockSize == missing {
			return p.errorf("no BlockSize")
		}
		return p.errorf("BlockSize %d", blockSize)
	}
	if next != nil && *next != "" {
		return p.errorf("the list is one page of several (NextToken is set): concatenate all pages' ChangedBlocks first")
	}
	if volumeSize != missing && (volumeSize < 0 || volumeSize > 1<<24 || volumeSize<<30 != p.size) {
		return p.errorf("VolumeSize is %d GiB, the device has %d bytes", volumeSize, p.size)
	}
	for _, r := range runs {
		at := loc{"ChangedBlocks: BlockIndex ", int(r.Offset), ""}
		if r.Offset > math.MaxInt64/blockSize || r.Length > math.MaxInt64/blockSize {
			return fmt.Errorf("%w: %s: %s: %w: past the end of a device of %d bytes at BlockSize %d", ErrChangeList, p.format, at, ErrInvalidExtent, p.size, blockSize)
		}
		e := Extent{Offset: r.Offset * blockSize, Length: r.Length * blockSize}
		if e.Offset < p.size && e.Length > p.size-e.Offset {
			e.Length = p.size - e.Offset // a last block shorter than BlockSize
		}
		if err := p.add(at, e); err != nil {
			return err
		}
	}
	return nil
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
