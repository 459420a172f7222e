package changes

import (
	"fmt"
	"math"
)

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
