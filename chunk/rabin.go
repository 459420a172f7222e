package chunk

import "github.com/restic/chunker"

// The content-defined splitter is restic/chunker's algorithm, run over the
// cutter's own read buffer: a Rabin fingerprint of a 64-byte window, reset
// at every cut, with the first MinSize−64 bytes of a chunk skipped. It cuts
// exactly where chunker.Chunker cuts (TestRabinMatchesResticChunker), but
// hashes the bytes in place, reads nothing ahead of the cut and copies each
// byte once instead of three times.

const windowSize = 64

// rabin holds the tables of one polynomial. It is read-only once built.
//
// The digest is kept left-aligned in 64 bits (shifted up by 64−deg), so the
// loop uses only constant shifts: the table index is the top byte, and the
// bits that restic's mod table cancels fall off the top.
//
// One step of the fingerprint is
//
//	d' = ((d ^ out[w])<<8 | in[c]) ^ mod[(d ^ out[w])>>56]
//
// for the byte w leaving the window and c entering it. The reduction is
// linear over GF(2) (mod[a^b] = mod[a]^mod[b]), so the step splits into a
// part that depends on d and one that depends only on the bytes:
//
//	d' = d<<8 ^ mod[d>>56] ^ out1[w] ^ in[c]
//
// and two steps into
//
//	d'' = d<<16 ^ modA[d>>56] ^ mod[byte(d>>48)] ^ out2[w0] ^ out1[w1] ^ in[c0]<<8 ^ in[c1]
//
// whose chain through d is one load deep instead of two, which is what
// bounds the loop: the steady state advances two bytes per step and still
// tests every byte's digest for a cut.
type rabin struct {
	rabinTables
	out      [256]uint64 // shifted up by align
	align    uint        // 64 − degree of the polynomial
	mask     uint64      // (AvgSize−1) << align
	min, max int
}

// rabinTables are the tables the two-bytes-per-step loops read, in the
// order the assembly loop expects them (rabin_amd64.s).
type rabinTables struct {
	mod  [256]uint64 // b·x^k mod pol: the reduction of the byte shifted out
	modA [256]uint64 // mod of the top byte carried through a second step
	out1 [256]uint64 // out folded through one step
	out2 [256]uint64 // out folded through two steps
	in   [256]uint64 // the byte shifted in
}

func newRabin(p Params) *rabin {
	pol := chunker.Pol(p.Polynomial)
	k := uint(pol.Deg())
	r := &rabin{align: 64 - k, min: p.MinSize, max: p.MaxSize}
	r.mask = uint64(p.AvgSize-1) << r.align
	for b := range 256 {
		// out[b] = Hash(b ‖ 63 zero bytes): adding it slides b out of the
		// window.
		h := appendByte(0, byte(b), pol)
		for range windowSize - 1 {
			h = appendByte(h, 0, pol)
		}
		r.out[b] = uint64(h) << r.align
		// mod[b] = b·x^k mod pol: the reduction of the byte shifted out.
		r.mod[b] = uint64(chunker.Pol(uint64(b)<<k).Mod(pol)) << r.align
		r.in[b] = uint64(b) << r.align
	}
	for b := range 256 {
		o := r.out[b]<<8 ^ r.mod[r.out[b]>>56]
		r.out1[b] = o
		r.out2[b] = o<<8 ^ r.mod[o>>56]
		m := r.mod[b]
		r.modA[b] = m<<8 ^ r.mod[m>>56]
	}
	return r
}

func appendByte(h chunker.Pol, b byte, pol chunker.Pol) chunker.Pol {
	return (h<<8 | chunker.Pol(b)).Mod(pol)
}

// rabinState is the fingerprint state within one chunk.
type rabinState struct {
	win    [windowSize]byte
	wpos   uint
	digest uint64
	count  int // bytes of the current chunk seen so far
}

// reset starts a new chunk, as restic/chunker does after every cut.
func (r *rabin) reset(s *rabinState) {
	*s = rabinState{}
	s.win[0] = 1
	s.wpos = 1
	s.digest = r.in[1] // restic slides in one 1 byte: updateDigest(0, 1) = 1
}

// scan consumes b for the current chunk. It returns how many bytes it
// consumed and whether the chunk ends after them.
func (r *rabin) scan(s *rabinState, b []byte) (int, bool) {
	n := 0
	// The first min−64 bytes of a chunk are never hashed.
	if skip := r.min - windowSize - s.count; skip > 0 {
		if skip >= len(b) {
			s.count += len(b)
			return len(b), false
		}
		n = skip
		s.count += skip
	}
	// Byte by byte through the window ring until the window holds only
	// bytes of b and the chunk is past its minimum size.
	// (The skip leaves count ≥ min−64, so 64 bytes reach min.)
	slow := min(n+max(windowSize, r.min-s.count), len(b))
	if m, cut := r.scanRing(s, b[n:slow]); cut || slow == len(b) {
		return n + m, cut
	}
	m, cut := r.scanFast(s, b, slow)
	// Leave the ring as if every byte had gone through it.
	copy(s.win[:], b[m-windowSize:m])
	s.wpos = 0
	return m, cut
}

// scanRing is the one-byte step with the window kept in s.win.
func (r *rabin) scanRing(s *rabinState, b []byte) (int, bool) {
	digest, wpos, add := s.digest, s.wpos, s.count
	win := &s.win
	out, mod, in := &r.out, &r.mod, &r.in
	mask, lo, hi := r.mask, r.min, r.max
	for i, c := range b {
		wpos %= windowSize
		digest ^= out[win[wpos]]
		win[wpos] = c
		wpos++
		digest = (digest<<8 | in[c]) ^ mod[digest>>56]
		add++
		if (digest&mask == 0 || add >= hi) && add >= lo {
			s.digest, s.wpos, s.count = digest, wpos, add
			return i + 1, true
		}
	}
	s.digest, s.wpos, s.count = digest, wpos%windowSize, add
	return len(b), false
}

// scanFast hashes b[i:] two bytes per step, reading the byte that leaves
// the window from b itself: b[i−64:i] must be the window's bytes, and the
// chunk must be at least min bytes long already. It returns the end of
// what it consumed and whether the chunk ends there; the ring in s is left
// for the caller to rebuild.
//
// Once the window is full, the digest is a function of the window's 64
// bytes alone, so the chunk ends at the first byte past min whose window
// fingerprint matches the mask, wherever the fingerprinting started. That
// lets two lanes run over the two halves of b at once: their steps are
// independent chains that the CPU overlaps.
func (r *rabin) scanFast(s *rabinState, b []byte, i int) (int, bool) {
	digest := s.digest
	// q[j] leaves the window as q[j+64] enters it. Nothing here may reach
	// the maximum size; the byte that does is left to the loop at the end.
	p := b[i-windowSize:]
	n := min(len(p)-windowSize, r.max-s.count-1)
	q := p[:windowSize+n]
	k := 0
	for n-k >= 2*minLane {
		l := (n - k) / 2 &^ 1
		j, d, cut := r.lanes(q, k, l, digest)
		if cut {
			s.digest, s.count = d, s.count+j
			return i + j, true
		}
		k, digest = k+2*l, d
	}
	j, d, cut := r.pairs(q, k, n&^1, digest)
	if cut {
		s.digest, s.count = d, s.count+j
		return i + j, true
	}
	k, digest = j, d
	add := s.count + k
	for ; k+windowSize < len(p); k++ {
		digest = digest<<8 ^ r.mod[digest>>56] ^ r.out1[p[k]] ^ r.in[p[k+windowSize]]
		add++
		if digest&r.mask == 0 || add >= r.max {
			s.digest, s.count = digest, add
			return i + k + 1, true
		}
	}
	s.digest, s.count = digest, add
	return i + k, false
}

// minLane is the shortest lane worth its 64-byte warm-up.
const minLane = 4 << 10

// step2 advances the digest d by the bytes entering at q[j+64] and
// q[j+65] (q[j] and q[j+1] leave) and returns the digests after each.
func (r *rabinTables) step2(d uint64, q []byte, j int) (d1, d2 uint64) {
	w := q[j : j+2 : j+2]
	c := q[j+windowSize : j+windowSize+2 : j+windowSize+2]
	// Kept as separate values: the compiler then holds d in a register.
	top, next, d8 := d>>56, byte(d>>48), d<<8
	in0 := r.in[c[0]]
	x1 := r.out1[w[0]] ^ in0
	x2 := r.out2[w[0]] ^ r.out1[w[1]] ^ in0<<8 ^ r.in[c[1]]
	return d8 ^ r.mod[top] ^ x1, d8<<8 ^ r.modA[top] ^ r.mod[next] ^ x2
}

// pairs hashes the bytes entering at q[j+64] for j in [k, end), end − k
// even, starting from digest d. It returns the count of bytes after which
// the chunk ends (relative to q, as j) and the digest there, or end, the
// digest after it and false.
func (r *rabin) pairs(q []byte, k, end int, d uint64) (int, uint64, bool) {
	mask := r.mask
	for ; k < end; k += 2 {
		d1, d2 := r.step2(d, q, k)
		if d1&mask == 0 {
			return k + 1, d1, true
		}
		d = d2
		if d2&mask == 0 {
			return k + 2, d2, true
		}
	}
	return k, d, false
}

// lanes hashes the bytes entering at q[j+64] for j in [k, k+2l) as two
// lanes of l (even) bytes: the first continues from d, the second starts
// from the fingerprint of its first window. It returns like pairs.
func (r *rabin) lanes(q []byte, k, l int, d uint64) (int, uint64, bool) {
	_ = q[k+2*l+windowSize-1] // the loops below read up to here
	var e uint64
	for _, c := range q[k+l : k+l+windowSize] {
		e = e<<8 ^ r.mod[e>>56] ^ r.in[c]
	}
	j, d, e := lanes2(&r.rabinTables, q, k, l, d, e, r.mask)
	if j == k+l {
		return k + 2*l, e, false
	}
	// A lane matched at the pair j: the first lane's cut comes first;
	// the second lane's counts only if the rest of the first has none.
	mask := r.mask
	a1, a2 := r.step2(d, q, j)
	b1, b2 := r.step2(e, q, j+l)
	if a1&mask == 0 {
		return j + 1, a1, true
	}
	if a2&mask == 0 {
		return j + 2, a2, true
	}
	if n, d, cut := r.pairs(q, j+2, k+l, a2); cut {
		return n, d, true
	}
	if b1&mask == 0 {
		return j + l + 1, b1, true
	}
	return j + l + 2, b2, true
}

// lanes2Go steps two lanes, q[j…] from d and q[j+l…] from e, two bytes at
// a time for j from k while j < k+l, and stops at the first pair where a
// digest of either lane matches mask. It returns that j (or k+l) and the
// two digests before it. q must hold k+2l+64 bytes. lanes2 is this loop,
// in assembly where there is one (rabin_amd64.s).
func lanes2Go(t *rabinTables, q []byte, k, l int, d, e, mask uint64) (int, uint64, uint64) {
	for j := k; j < k+l; j += 2 {
		a1, a2 := t.step2(d, q, j)
		b1, b2 := t.step2(e, q, j+l)
		if a1&mask == 0 || a2&mask == 0 || b1&mask == 0 || b2&mask == 0 {
			return j, d, e
		}
		d, e = a2, b2
	}
	return k + l, d, e
}
