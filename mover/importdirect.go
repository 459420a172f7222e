package mover

import (
	"fmt"
	"unsafe"
)

// Direct writes (issue 15). Written through the page cache, every byte of
// an import is copied into kernel memory that is allocated for it (on the
// project's guest, memory the host must hand back first), and reaches the
// storage only when the kernel decides or the final fdatasync forces it:
// onto an ext4 disk that cost 1.6–6.7 CPU seconds for the 2.4 GiB of a
// 4 GiB image, and the fdatasync waited for what was left. Where the
// target allows it (a block device, a file on a disk: Device.OpenDirect),
// each chunk's aligned middle is written with O_DIRECT instead, straight
// from the buffer it was decoded into: no kernel copy, the storage busy
// while the import decodes, and nothing left for fdatasync but a few
// pages and the metadata.
//
// A chunk starts and ends anywhere, so:
//   - A download worker decodes a chunk into its buffer at the offset that
//     puts the chunk's first target offset in phase with the alignment
//     (target offset ≡ address, modulo the alignment), so the aligned
//     blocks in the middle of the chunk are aligned in memory too. A chunk
//     written at a second offset of another phase is copied into an
//     aligned scratch buffer of the writer first.
//   - The partial blocks at a chunk's two ends, which it shares with its
//     neighbours (or a hole), go through the page cache, as every write
//     did before: a block is written either directly, whole, by the one
//     chunk that covers it, or through the page cache, never both, so the
//     two paths never overlap. The final Sync (fdatasync) makes both
//     durable.
//   - Order does not matter and nothing waits for a neighbour, so no
//     memory is held beyond the chunk buffers.

// writeAt writes chunk p at off: directly where the import writes
// directly, else through the page cache. scratch is the calling writer's,
// grown as needed.
func (im *importer) writeAt(p []byte, off int64, scratch *[]byte) error {
	df := im.direct
	if df == nil {
		return im.writeBuffered(p, off)
	}
	al := df.Align()
	n := int64(len(p))
	from, to := alignUp(off, al), alignDown(off+n, al)
	if to <= from {
		return im.writeBuffered(p, off) // within a block or two
	}
	if len(p) > 0 && (addrOf(p)-off)%al != 0 {
		// Out of phase (a chunk written at several offsets).
		*scratch = alignedBuffer(*scratch, int(n+al), al)
		s := (*scratch)[off%al:]
		copy(s, p)
		p = s[:n]
	}
	if from > off {
		if err := im.writeBuffered(p[:from-off], off); err != nil {
			return err
		}
	}
	if _, err := df.WriteAt(p[from-off:to-off], from); err != nil {
		return err
	}
	im.directBytes.Add(to - from)
	if to < off+n {
		return im.writeBuffered(p[to-off:], to)
	}
	return nil
}

// writeBuffered writes p at off through the page cache.
func (im *importer) writeBuffered(p []byte, off int64) error {
	if _, err := im.dst.WriteAt(p, off); err != nil {
		return fmt.Errorf("writing at %d: %w", off, err)
	}
	im.wrote(int64(len(p)))
	return nil
}

// phase is where in its buffer a chunk whose first target offset is off is
// decoded: off's offset within an aligned block when the import writes
// directly, else 0.
func (im *importer) phase(off int64) int {
	if im.direct == nil {
		return 0
	}
	return int(off % im.direct.Align())
}

// alignedBuffer returns b if it holds n bytes, else a new buffer of n
// bytes whose first byte is aligned to al.
func alignedBuffer(b []byte, n int, al int64) []byte {
	if cap(b) >= n {
		return b[:n]
	}
	raw := make([]byte, n+int(al))
	o := int(alignUp(addrOf(raw), al) - addrOf(raw))
	return raw[o : o+n : o+n]
}

// addrOf is the address of b's first byte, for alignment.
func addrOf(b []byte) int64 { return int64(uintptr(unsafe.Pointer(unsafe.SliceData(b)))) }
