package changes

import (
	"encoding/json"
	"fmt"
	"strings"
)

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
