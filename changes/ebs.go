package changes

import (
	"fmt"
	"math"
)

// ebsParser reads the output of aws ebs list-changed-blocks. BlockSize may
// come after ChangedBlocks (it does in the CLI's output), so block indexes
// are gathered as runs first and turned into bytes at the end.
type ebsParser struct {
	*changeParser
	runs       []Extent // in blocks, neighbours merged as they arrive
	blockSize  int64    // missing until read
	volumeSize int64    // in GiB; missing until read
	next       *string  // NextToken
}

// ebs reads one document of the EBS shape.
func (p *changeParser) ebs() error {
	e := &ebsParser{changeParser: p, blockSize: missing, volumeSize: missing}
	if _, err := e.open("the document", '{', false); err != nil {
		return err
	}
	for e.more() {
		k, err := e.key("the document")
		if err != nil {
			return err
		}
		if err := e.field(k); err != nil {
			return err
		}
	}
	if err := e.close("end"); err != nil {
		return err
	}
	if err := e.check(); err != nil {
		return err
	}
	return e.extents()
}

// field reads the value of the document's key k.
func (e *ebsParser) field(k string) error {
	var err error
	switch k {
	case "ChangedBlocks":
		return e.changedBlocks(k)
	case "BlockSize":
		err = e.decode(&e.blockSize)
	case "VolumeSize":
		err = e.decode(&e.volumeSize)
	case "NextToken":
		err = e.decode(&e.next)
	default:
		return e.skip(k)
	}
	if err != nil {
		return e.jsonError(k, err)
	}
	return nil
}

// changedBlocks reads the ChangedBlocks array (or null) into e.runs.
func (e *ebsParser) changedBlocks(k string) error {
	ok, err := e.open(k, '[', true)
	if err != nil || !ok {
		return err
	}
	var b struct {
		Index int64 `json:"BlockIndex"`
	}
	for i := 0; e.more(); i++ {
		at := loc{"ChangedBlocks[", i, "]"}
		b.Index = missing
		if err := e.decode(&b); err != nil {
			return e.jsonError(at.String(), err)
		}
		if b.Index == missing || b.Index < 0 {
			return e.errorf("%s has no valid BlockIndex", at)
		}
		e.runs = appendMerged(e.runs, Extent{Offset: b.Index, Length: 1})
		if len(e.runs) > maxExtents {
			return e.errorf("more than %d separate runs of blocks: the list is too fragmented to hold", maxExtents)
		}
	}
	return e.close(k)
}

// check checks what the document says besides the blocks: a sane
// BlockSize, no further page, and the device's size.
func (e *ebsParser) check() error {
	if e.blockSize <= 0 || e.blockSize > 1<<30 {
		if e.blockSize == missing {
			return e.errorf("no BlockSize")
		}
		return e.errorf("BlockSize %d", e.blockSize)
	}
	if e.next != nil && *e.next != "" {
		return e.errorf("the list is one page of several (NextToken is set): concatenate all pages' ChangedBlocks first")
	}
	if e.volumeSize != missing && (e.volumeSize < 0 || e.volumeSize > 1<<24 || e.volumeSize<<30 != e.size) {
		return e.errorf("VolumeSize is %d GiB, the device has %d bytes", e.volumeSize, e.size)
	}
	return nil
}

// extents adds the runs of blocks as byte extents of the device.
func (e *ebsParser) extents() error {
	bs := e.blockSize
	for _, r := range e.runs {
		at := loc{"ChangedBlocks: BlockIndex ", int(r.Offset), ""}
		if r.Offset > math.MaxInt64/bs || r.Length > math.MaxInt64/bs {
			return fmt.Errorf("%w: %s: %s: %w: past the end of a device of %d bytes at BlockSize %d", ErrChangeList, e.format, at, ErrInvalidExtent, e.size, bs)
		}
		x := Extent{Offset: r.Offset * bs, Length: r.Length * bs}
		if x.Offset < e.size && x.Length > e.size-x.Offset {
			x.Length = e.size - x.Offset // a last block shorter than BlockSize
		}
		if err := e.add(at, x); err != nil {
			return err
		}
	}
	return nil
}
