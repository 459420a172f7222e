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

// smParser reads the SnapshotMetadata shape: one object, or an array of
// them (records) that must agree on block_metadata_type. For FIXED_LENGTH
// every block must have the first block's size; since the type may come
// after the blocks, the first other size is remembered and judged at the
// end.
type smParser struct {
	*changeParser
	typ     metadataType // of the records read so far
	first   int64        // size_bytes of the first block; missing before it
	other   int64        // the first size_bytes other than first,
	otherAt string       // and where it is ("" if none)
}

// snapshotMetadata reads one document of the SnapshotMetadata shape.
func (p *changeParser) snapshotMetadata() error {
	tok, err := p.token()
	if err != nil {
		return p.jsonError("the document", err)
	}
	m := &smParser{changeParser: p, first: missing, other: missing}
	switch tok {
	case json.Delim('{'):
		err = m.record("")
	case json.Delim('['):
		err = m.records()
	default:
		return p.errorf("the document is %s, not an object or an array of objects", tokenKind(tok))
	}
	if err != nil {
		return err
	}
	if m.typ == fixedLength && m.otherAt != "" {
		return p.errorf("FIXED_LENGTH %s has size_bytes %d, the first has %d", m.otherAt, m.other, m.first)
	}
	return nil
}

// records reads the rest of an array of records, its '[' read.
func (m *smParser) records() error {
	for i := 0; m.more(); i++ {
		name := fmt.Sprintf("record %d", i)
		if _, err := m.open(name, '{', false); err != nil {
			return err
		}
		if err := m.record(name + ": "); err != nil {
			return err
		}
	}
	return m.close("the document")
}

// record reads the keys of one object up to its end, its '{' read; prefix
// names it in errors ("" or "record N: ").
func (m *smParser) record(prefix string) error {
	name := "the document"
	if prefix != "" {
		name = strings.TrimSuffix(prefix, ": ")
	}
	var typ metadataType
	for m.more() {
		k, err := m.key(name)
		if err != nil {
			return err
		}
		if err := m.field(prefix, k, &typ); err != nil {
			return err
		}
	}
	if err := m.close(name); err != nil {
		return err
	}
	switch {
	case typ == 0:
		return m.errorf("%slacks block_metadata_type (want FIXED_LENGTH or VARIABLE_LENGTH)", prefix)
	case m.typ != 0 && typ != m.typ:
		return m.errorf("%sblock_metadata_type differs from the records before", prefix)
	}
	m.typ = typ
	return nil
}

// field reads the value of key k of the record that prefix names; a
// block_metadata_type goes to typ.
func (m *smParser) field(prefix, k string, typ *metadataType) error {
	switch k {
	case "block_metadata_type":
		if err := m.decode(typ); err != nil {
			return m.jsonError(prefix+k, err)
		}
	case "volume_capacity_bytes":
		var c int64
		if err := m.decode(&c); err != nil {
			return m.jsonError(prefix+k, err)
		}
		if c != m.size {
			return m.errorf("%svolume_capacity_bytes is %d, the device has %d bytes", prefix, c, m.size)
		}
	case "block_metadata":
		return m.blocks(prefix)
	default:
		return m.skip(prefix + k)
	}
	return nil
}

// blocks reads the block_metadata array (or null) of the record that
// prefix names.
func (m *smParser) blocks(prefix string) error {
	where := prefix + "block_metadata"
	ok, err := m.open(where, '[', true)
	if err != nil || !ok {
		return err
	}
	var b struct {
		Offset int64 `json:"byte_offset"`
		Size   int64 `json:"size_bytes"`
	}
	for i := 0; m.more(); i++ {
		at := loc{prefix + "block_metadata[", i, "]"}
		b.Offset, b.Size = 0, missing // proto3 JSON leaves a zero offset out
		if err := m.decode(&b); err != nil {
			return m.jsonError(at.String(), err)
		}
		if b.Size == missing {
			return m.errorf("%s lacks size_bytes", at)
		}
		if m.first == missing {
			m.first = b.Size
		} else if b.Size != m.first && m.otherAt == "" {
			m.other, m.otherAt = b.Size, at.String()
		}
		if err := m.add(at, Extent{Offset: b.Offset, Length: b.Size}); err != nil {
			return err
		}
	}
	return m.close(where)
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
