package blake3x

import (
	"encoding/binary"
	"math/bits"
)

// Flags of the BLAKE3 compression function.
const (
	flagChunkStart = 1 << 0
	flagChunkEnd   = 1 << 1
	flagParent     = 1 << 2
	flagRoot       = 1 << 3
	flagKeyedHash  = 1 << 4
)

const (
	blockLen = 64
	chunkLen = 1024
	lanes    = 16
	// groupChunks chunks form a complete subtree whose chunk chaining
	// values sumWide holds at once (groupChunks*32 bytes on the stack).
	groupChunks = 256
	groupLen    = groupChunks * chunkLen
)

var iv = [8]uint32{0x6A09E667, 0xBB67AE85, 0x3C6EF372, 0xA54FF53A, 0x510E527F, 0x9B05688C, 0x1F83D9AB, 0x5BE0CD19}

// compress is the BLAKE3 compression function, returning the first 8 words
// of its output (a chaining value).
func compress(cv *[8]uint32, block *[16]uint32, counter uint64, blockLen uint32, flags uint32) [8]uint32 {
	v0, v1, v2, v3, v4, v5, v6, v7 := cv[0], cv[1], cv[2], cv[3], cv[4], cv[5], cv[6], cv[7]
	v8, v9, v10, v11 := iv[0], iv[1], iv[2], iv[3]
	v12, v13, v14, v15 := uint32(counter), uint32(counter>>32), blockLen, flags
	m := *block
	for r := 0; r < 7; r++ {
		v0, v4, v8, v12 = g(v0, v4, v8, v12, m[0], m[1])
		v1, v5, v9, v13 = g(v1, v5, v9, v13, m[2], m[3])
		v2, v6, v10, v14 = g(v2, v6, v10, v14, m[4], m[5])
		v3, v7, v11, v15 = g(v3, v7, v11, v15, m[6], m[7])
		v0, v5, v10, v15 = g(v0, v5, v10, v15, m[8], m[9])
		v1, v6, v11, v12 = g(v1, v6, v11, v12, m[10], m[11])
		v2, v7, v8, v13 = g(v2, v7, v8, v13, m[12], m[13])
		v3, v4, v9, v14 = g(v3, v4, v9, v14, m[14], m[15])
		m = [16]uint32{m[2], m[6], m[3], m[10], m[7], m[0], m[4], m[13], m[1], m[11], m[12], m[5], m[9], m[14], m[15], m[8]}
	}
	return [8]uint32{v0 ^ v8, v1 ^ v9, v2 ^ v10, v3 ^ v11, v4 ^ v12, v5 ^ v13, v6 ^ v14, v7 ^ v15}
}

// g is the BLAKE3 quarter-round on state words a, b, c, d with message
// words x and y.
func g(a, b, c, d, x, y uint32) (uint32, uint32, uint32, uint32) {
	a += b + x
	d = bits.RotateLeft32(d^a, -16)
	c += d
	b = bits.RotateLeft32(b^c, -12)
	a += b + y
	d = bits.RotateLeft32(d^a, -8)
	c += d
	b = bits.RotateLeft32(b^c, -7)
	return a, b, c, d
}

// loadBlock reads up to 64 bytes of p as message words, zero-padded.
func loadBlock(p []byte) *[16]uint32 {
	var buf [blockLen]byte
	copy(buf[:], p)
	var m [16]uint32
	for i := range m {
		m[i] = binary.LittleEndian.Uint32(buf[4*i:])
	}
	return &m
}

// chunkCV returns the chaining value of one chunk (1 to 1024 bytes; 0 only
// for the empty input) whose index in the input is counter. extra is
// flagRoot when the chunk is the whole input.
func chunkCV(key *[8]uint32, p []byte, counter uint64, extra uint32) [8]uint32 {
	cv := *key
	flags := uint32(flagKeyedHash | flagChunkStart)
	for {
		n := min(len(p), blockLen)
		if n == len(p) {
			return compress(&cv, loadBlock(p), counter, uint32(n), flags|flagChunkEnd|extra)
		}
		cv = compress(&cv, loadBlock(p[:n]), counter, blockLen, flags)
		p = p[n:]
		flags = flagKeyedHash
	}
}

// parentCV returns the chaining value of the parent of left and right;
// extra is flagRoot for the root.
func parentCV(key *[8]uint32, left, right *[8]uint32, extra uint32) [8]uint32 {
	var m [16]uint32
	copy(m[:8], left[:])
	copy(m[8:], right[:])
	return compress(key, &m, 0, blockLen, flagKeyedHash|flagParent|extra)
}

// hash16Generic is hash16 in Go: it hashes blocks 64-byte blocks in each of
// 16 lanes, lane i starting at in[i*stride:], with counter ctr[i] (low
// words) | ctr[16+i] (high words), starting from key; the first block's
// flags are flags|flagsStart, the last's flags|flagsEnd. Lane i's chaining
// value goes to out[32*i:].
func hash16Generic(out *[lanes * 32]byte, in []byte, stride, blocks uintptr, key *[8]uint32, ctr *[2 * lanes]uint32, flags, flagsStart, flagsEnd uint32) {
	for i := uintptr(0); i < lanes; i++ {
		cv := *key
		counter := uint64(ctr[i]) | uint64(ctr[lanes+i])<<32
		for b := uintptr(0); b < blocks; b++ {
			f := flags
			if b == 0 {
				f |= flagsStart
			}
			if b == blocks-1 {
				f |= flagsEnd
			}
			off := i*stride + b*blockLen
			cv = compress(&cv, loadBlock(in[off:off+blockLen]), counter, blockLen, f)
		}
		for j, w := range cv {
			binary.LittleEndian.PutUint32(out[32*int(i)+4*j:], w)
		}
	}
}

// counters returns the counter vector of 16 lanes starting at chunk c.
func counters(c uint64) [2 * lanes]uint32 {
	var ctr [2 * lanes]uint32
	for i := range lanes {
		ctr[i] = uint32(c + uint64(i))
		ctr[lanes+i] = uint32((c + uint64(i)) >> 32)
	}
	return ctr
}

// sumWide hashes p (any length) with the 16-lane kernel. The input
// is cut into groups of groupChunks chunks, complete subtrees aligned on
// their size, whose chaining values are merged on a stack as in the
// BLAKE3 paper's incremental hasher; the last group (the only one that
// may hold fewer chunks) closes the tree.
func sumWide(key *[8]uint32, p []byte) [32]byte {
	var stack [64][8]uint32
	depth := 0
	groups := max(1, (len(p)+groupLen-1)/groupLen) // the empty input is one empty chunk
	var cv [8]uint32
	for g := 0; g < groups-1; g++ {
		cv = groupCV(key, p[g*groupLen:(g+1)*groupLen], uint64(g)*groupChunks, 0)
		for done := g + 1; done&1 == 0; done >>= 1 {
			depth--
			cv = parentCV(key, &stack[depth], &cv, 0)
		}
		stack[depth] = cv
		depth++
	}
	last := p[(groups-1)*groupLen:]
	if groups == 1 {
		cv = groupCV(key, last, 0, flagRoot)
	} else {
		cv = groupCV(key, last, uint64(groups-1)*groupChunks, 0)
		for depth > 0 {
			depth--
			extra := uint32(0)
			if depth == 0 {
				extra = flagRoot
			}
			cv = parentCV(key, &stack[depth], &cv, extra)
		}
	}
	var out [32]byte
	for i, w := range cv {
		binary.LittleEndian.PutUint32(out[4*i:], w)
	}
	return out
}

// groupCV returns the chaining value of the subtree over p, 1 to
// groupChunks chunks (at least 2 if extra is flagRoot) starting at chunk
// index counter.
func groupCV(key *[8]uint32, p []byte, counter uint64, extra uint32) [8]uint32 {
	if len(p) <= chunkLen {
		return chunkCV(key, p, counter, extra)
	}
	// cvs holds the chunk chaining values, then each level of parents in
	// place. The kernel reads and writes 16 lanes: it may read up to
	// 1 KiB from the start of a level and writes 512 bytes per call, all
	// within cvs.
	var cvs [groupChunks * 32]byte
	full := len(p) / chunkLen
	k := 0
	for ; k+lanes <= full; k += lanes {
		ctr := counters(counter + uint64(k))
		hash16((*[lanes * 32]byte)(cvs[k*32:]), p[k*chunkLen:(k+lanes)*chunkLen], chunkLen, chunkLen/blockLen, key, &ctr, flagKeyedHash, flagChunkStart, flagChunkEnd)
	}
	if k < full {
		// Fewer than 16 full chunks left: copy them to a buffer that the
		// kernel may read whole (the extra lanes hash zeros, and their
		// output lands past the real chaining values, before the partial
		// chunk's).
		var tail [lanes * chunkLen]byte
		copy(tail[:], p[k*chunkLen:full*chunkLen])
		ctr := counters(counter + uint64(k))
		hash16((*[lanes * 32]byte)(cvs[k*32:]), tail[:], chunkLen, chunkLen/blockLen, key, &ctr, flagKeyedHash, flagChunkStart, flagChunkEnd)
	}
	n := full
	if full*chunkLen < len(p) {
		cv := chunkCV(key, p[full*chunkLen:], counter+uint64(full), 0)
		putCV(cvs[n*32:], &cv)
		n++
	}
	var zero [2 * lanes]uint32
	for n > 2 {
		pairs := n / 2
		var odd [32]byte
		copy(odd[:], cvs[(n-1)*32:n*32])
		for k := 0; k < pairs; k += lanes {
			hash16((*[lanes * 32]byte)(cvs[k*32:]), cvs[k*64:k*64+lanes*64], 64, 1, key, &zero, flagKeyedHash|flagParent, 0, 0)
		}
		if n%2 == 1 {
			copy(cvs[pairs*32:], odd[:])
		}
		n = pairs + n%2
	}
	left, right := getCV(cvs[0:]), getCV(cvs[32:])
	if n == 1 {
		return left
	}
	return parentCV(key, &left, &right, extra)
}

func putCV(b []byte, cv *[8]uint32) {
	for i, w := range cv {
		binary.LittleEndian.PutUint32(b[4*i:], w)
	}
}

func getCV(b []byte) [8]uint32 {
	var cv [8]uint32
	for i := range cv {
		cv[i] = binary.LittleEndian.Uint32(b[4*i:])
	}
	return cv
}
