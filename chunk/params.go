package chunk

import (
	"errors"
	"fmt"

	"github.com/restic/chunker"
)

// Splitter names a way of cutting stretches of data.
type Splitter string

const (
	// CDC is content-defined chunking with Rabin fingerprints.
	CDC Splitter = "cdc"
	// Fixed cuts at every multiple of Params.FixedSize of volume offset.
	Fixed Splitter = "fixed"
)

// Limits for Params: chunk sizes are bounded so that a chunk fits a uint32
// length in the repository and a cutter's buffers stay small.
const (
	MinChunkSize   = 4 << 10   // smallest allowed MinSize / FixedSize
	MaxChunkSize   = 64 << 20  // largest allowed MaxSize / FixedSize
	MinSegmentSize = 1 << 20   // smallest allowed SegmentSize
	MaxSegmentSize = 4 << 30   // largest allowed SegmentSize
	MinZeroBlock   = 4 << 10   // smallest allowed ZeroBlock
	MaxZeroBlock   = 16 << 20  // largest allowed ZeroBlock
	maxPolyDegree  = 53        // restic/chunker refuses larger degrees
	defaultAvgBits = 20        // 1 MiB average
	defaultMin     = 512 << 10 // see DefaultParams
	defaultMax     = 4 << 20
)

// Params fixes everything that decides chunk boundaries. It is part of a
// repository's config and must not change after init: two exports cut alike
// only if their Params are equal.
type Params struct {
	Splitter Splitter `json:"splitter"`
	// Polynomial is the irreducible Rabin polynomial (cdc only). Each
	// repository draws a random, secret one so that chunk boundaries do not
	// leak which known content a volume holds.
	Polynomial uint64 `json:"polynomial,omitempty"`
	// MinSize, AvgSize and MaxSize bound cdc chunks. AvgSize is a power of
	// two. A cut can fall earlier than MinSize only at a stretch or segment
	// end.
	MinSize int `json:"min_size,omitempty"`
	AvgSize int `json:"avg_size,omitempty"`
	MaxSize int `json:"max_size,omitempty"`
	// FixedSize is the chunk size of the fixed splitter: a multiple of
	// ZeroBlock that divides SegmentSize.
	FixedSize int `json:"fixed_size,omitempty"`
	// SegmentSize is the distance between forced cut points; a multiple of
	// ZeroBlock.
	SegmentSize int64 `json:"segment_size"`
	// ZeroBlock is the zero-run granularity: a power of two.
	ZeroBlock int `json:"zero_block"`
}

// DefaultParams returns the default content-defined parameters with the
// given polynomial (see NewPolynomial).
//
// The sizes were chosen by measurement on block-device-like data
// (BENCHMARKS.md, "Chunk size"). A 1 MiB average keeps the index near 50
// bytes per MiB of unique data (about 500 MiB of RAM for 10 TiB) while a
// changed 4 KiB block costs one chunk in an incremental export; a smaller
// average dedups shifted data and small writes better but multiplies the
// index. The first MinSize−64 bytes of a chunk are never hashed, so a
// 512 KiB minimum (restic's too) cuts 9% faster than 256 KiB for 1% more
// stored bytes; a 4 MiB maximum bounds the buffers in flight (8 MiB pushed
// the export's peak RSS past 256 MiB). 64 MiB segments give every core
// work on volumes of a few hundred MiB and bound how far a change can
// propagate. 64 KiB zero blocks catch the free space of filesystems
// without splitting data into fragments.
func DefaultParams(pol uint64) Params {
	return Params{
		Splitter:    CDC,
		Polynomial:  pol,
		MinSize:     defaultMin,
		AvgSize:     1 << defaultAvgBits,
		MaxSize:     defaultMax,
		SegmentSize: 64 << 20,
		ZeroBlock:   64 << 10,
	}
}

// NewPolynomial draws a random irreducible polynomial for cdc.
func NewPolynomial() (uint64, error) {
	p, err := chunker.RandomPolynomial()
	if err != nil {
		return 0, fmt.Errorf("chunk: random polynomial: %w", err)
	}
	return uint64(p), nil
}

// ErrInvalidParams is wrapped by every error Validate returns.
var ErrInvalidParams = errors.New("invalid chunking parameters")

func isPow2(n int64) bool { return n > 0 && n&(n-1) == 0 }

// Validate checks that p is usable. It is cheap except for the
// irreducibility test of the polynomial, which takes microseconds.
func (p Params) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalidParams, fmt.Sprintf(format, args...))
	}
	if !isPow2(int64(p.ZeroBlock)) || p.ZeroBlock < MinZeroBlock || p.ZeroBlock > MaxZeroBlock {
		return bad("zero block %d must be a power of two in [%d, %d]", p.ZeroBlock, MinZeroBlock, MaxZeroBlock)
	}
	if p.SegmentSize < MinSegmentSize || p.SegmentSize > MaxSegmentSize || p.SegmentSize%int64(p.ZeroBlock) != 0 {
		return bad("segment size %d must be a multiple of the zero block in [%d, %d]", p.SegmentSize, MinSegmentSize, MaxSegmentSize)
	}
	switch p.Splitter {
	case CDC:
		if p.MinSize < MinChunkSize || p.MaxSize > MaxChunkSize || p.MinSize >= p.MaxSize {
			return bad("cdc sizes min %d max %d must satisfy %d <= min < max <= %d", p.MinSize, p.MaxSize, MinChunkSize, MaxChunkSize)
		}
		if !isPow2(int64(p.AvgSize)) || p.AvgSize < p.MinSize || p.AvgSize > p.MaxSize {
			return bad("cdc average %d must be a power of two between min %d and max %d", p.AvgSize, p.MinSize, p.MaxSize)
		}
		pol := chunker.Pol(p.Polynomial)
		if pol.Deg() < 8 || pol.Deg() > maxPolyDegree || !pol.Irreducible() {
			return bad("polynomial %#x is not an irreducible polynomial of degree 8..%d", p.Polynomial, maxPolyDegree)
		}
	case Fixed:
		if p.FixedSize < MinChunkSize || p.FixedSize > MaxChunkSize || p.FixedSize%p.ZeroBlock != 0 || p.SegmentSize%int64(p.FixedSize) != 0 {
			return bad("fixed size %d must be a multiple of the zero block that divides the segment size, in [%d, %d]", p.FixedSize, MinChunkSize, MaxChunkSize)
		}
	default:
		return bad("unknown splitter %q (want %q or %q)", p.Splitter, CDC, Fixed)
	}
	return nil
}

// MinChunk returns the size most chunks of p have at least (only the
// last chunk of a stretch may be shorter): for estimates of how many
// chunks a volume makes.
func (p Params) MinChunk() int {
	if p.Splitter == Fixed {
		return p.FixedSize
	}
	return p.MinSize
}

// MaxChunk returns the largest chunk p can produce: the buffer size a
// cutter's allocator must provide.
func (p Params) MaxChunk() int {
	if p.Splitter == Fixed {
		return p.FixedSize
	}
	return p.MaxSize
}

// Segments returns how many segments a volume of size bytes has.
func (p Params) Segments(size int64) int64 {
	if size <= 0 {
		return 0
	}
	return (size + p.SegmentSize - 1) / p.SegmentSize
}

// SegmentRange returns the byte range [start, end) of segment i of a volume
// of size bytes.
func (p Params) SegmentRange(size, i int64) (start, end int64) {
	start = i * p.SegmentSize
	end = min(start+p.SegmentSize, size)
	return start, end
}
