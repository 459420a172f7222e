package gcmx

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"testing"
)

// fieldMul is SP 800-38D's Algorithm 1, bit by bit: the slow reference the
// tests hold the kernels to.
func fieldMul(x, y field) field {
	var z field
	v := y
	for i := range 128 {
		var bit uint64
		if i < 64 {
			bit = x.hi >> (63 - i) & 1
		} else {
			bit = x.lo >> (127 - i) & 1
		}
		mask := -bit
		z.hi ^= v.hi & mask
		z.lo ^= v.lo & mask
		carry := -(v.lo & 1)
		v.lo = v.lo>>1 | v.hi<<63
		v.hi = v.hi>>1 ^ 0xe100000000000000&carry
	}
	return z
}

func needKernels(t testing.TB) {
	t.Helper()
	if !hasKernels() {
		t.Skip("no VAES/VPCLMULQDQ kernels on this processor or build; New is crypto/cipher's GCM")
	}
}

func randBytes(r *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// lengths crosses every loop boundary of the kernels: 16-block, 4-block,
// single-block and byte-masked tails.
func lengths() []int {
	var ns []int
	for n := 0; n <= 600; n++ {
		ns = append(ns, n)
	}
	return append(ns, 1023, 1024, 1025, 4096+15, 65536, 1<<20+7)
}

func TestExpandKeyMatchesAES(t *testing.T) {
	needKernels(t)
	r := rand.New(rand.NewPCG(1, 2))
	for range 50 {
		key := randBytes(r, KeySize)
		g := newGCM(key)
		b, err := aes.NewCipher(key)
		if err != nil {
			t.Fatal(err)
		}
		var ctr, got, want [blockSize]byte
		copy(ctr[:], randBytes(r, blockSize))
		ctrXOR(&g.rk, &ctr, &got[0], &make([]byte, blockSize)[0], blockSize)
		b.Encrypt(want[:], ctr[:])
		if got != want {
			t.Fatalf("key %x: E(%x) = %x, crypto/aes says %x", key, ctr, got, want)
		}
	}
}

// refCTR is GCM's counter mode on crypto/aes: inc32 on the last four bytes.
func refCTR(b cipher.Block, ctr [blockSize]byte, src []byte) []byte {
	out := make([]byte, len(src))
	var ks [blockSize]byte
	for i := 0; i < len(src); i += blockSize {
		b.Encrypt(ks[:], ctr[:])
		for j := i; j < len(src) && j < i+blockSize; j++ {
			out[j] = src[j] ^ ks[j-i]
		}
		binary.BigEndian.PutUint32(ctr[12:], binary.BigEndian.Uint32(ctr[12:])+1)
	}
	return out
}

func TestCTRMatchesReference(t *testing.T) {
	needKernels(t)
	r := rand.New(rand.NewPCG(3, 4))
	key := randBytes(r, KeySize)
	g := newGCM(key)
	b, _ := aes.NewCipher(key)
	for _, n := range lengths() {
		var ctr [blockSize]byte
		copy(ctr[:], randBytes(r, blockSize))
		if n%3 == 0 {
			// The 32-bit counter wraps without carrying into the nonce.
			binary.BigEndian.PutUint32(ctr[12:], 0xffffffff-uint32(n%40))
		}
		src := randBytes(r, n)
		want := refCTR(b, ctr, src)
		// dst sits between guard bytes: the masked tail must not write
		// past n.
		buf := randBytes(r, n+128)
		guard := bytes.Clone(buf)
		dst := buf[64 : 64+n]
		if n > 0 {
			ctrXOR(&g.rk, &ctr, &dst[0], &src[0], n)
		}
		if !bytes.Equal(dst, want) {
			t.Fatalf("n=%d: keystream differs from crypto/aes", n)
		}
		if !bytes.Equal(buf[:64], guard[:64]) || !bytes.Equal(buf[64+n:], guard[64+n:]) {
			t.Fatalf("n=%d: ctrXOR wrote outside dst", n)
		}
		// In place.
		if n > 0 {
			ctrXOR(&g.rk, &ctr, &src[0], &src[0], n)
		}
		if !bytes.Equal(src, want) {
			t.Fatalf("n=%d: in-place keystream differs", n)
		}
	}
}

// refGHASH hashes p (zero-padded) into acc with fieldMul.
func refGHASH(h field, acc [blockSize]byte, p []byte) [blockSize]byte {
	y := fieldFromBytes(acc[:])
	for i := 0; i < len(p); i += blockSize {
		var blk [blockSize]byte
		copy(blk[:], p[i:])
		x := fieldFromBytes(blk[:])
		y = fieldMul(field{y.hi ^ x.hi, y.lo ^ x.lo}, h)
	}
	var out [blockSize]byte
	binary.BigEndian.PutUint64(out[:], y.hi)
	binary.BigEndian.PutUint64(out[8:], y.lo)
	return out
}

func TestGHASHMatchesReference(t *testing.T) {
	needKernels(t)
	r := rand.New(rand.NewPCG(5, 6))
	key := randBytes(r, KeySize)
	g := newGCM(key)
	var zero, hb [blockSize]byte
	b, _ := aes.NewCipher(key)
	b.Encrypt(hb[:], zero[:])
	h := fieldFromBytes(hb[:])
	for _, n := range lengths() {
		if n > 70000 {
			continue // fieldMul is slow
		}
		var acc [blockSize]byte
		copy(acc[:], randBytes(r, blockSize))
		p := randBytes(r, n)
		want := refGHASH(h, acc, p)
		if n > 0 {
			ghashUpdate(&g.htab, &acc, &p[0], n)
		}
		if acc != want {
			t.Fatalf("n=%d: GHASH %x, reference %x", n, acc, want)
		}
	}
}

func TestFieldMul(t *testing.T) {
	// x (the element 0x40 00..00, coefficient of x^1) times x^127 is
	// x^128 = x^7 + x^2 + x + 1: 0xe1 00..00.
	x := field{hi: 0x4000000000000000}
	x127 := field{lo: 1}
	if got := fieldMul(x, x127); got != (field{hi: 0xe100000000000000}) {
		t.Fatalf("x * x^127 = %#x", got)
	}
	one := field{hi: 1 << 63}
	y := field{0x0123456789abcdef, 0xfedcba9876543210}
	if got := fieldMul(one, y); got != y {
		t.Fatalf("1 * y = %#x", got)
	}
}

// TestMatchesCryptoCipher seals and opens with both implementations over
// every length up to 600 bytes and beyond, with AAD of several lengths:
// the bytes must be identical and each must open the other's.
func TestMatchesCryptoCipher(t *testing.T) {
	needKernels(t)
	r := rand.New(rand.NewPCG(7, 8))
	for _, n := range lengths() {
		key := randBytes(r, KeySize)
		ours := newGCM(key)
		std, err := newStd(key)
		if err != nil {
			t.Fatal(err)
		}
		nonce := randBytes(r, NonceSize)
		aad := randBytes(r, []int{0, 1, 15, 16, 17, 32, 64, 300}[n%8])
		pt := randBytes(r, n)
		prefix := randBytes(r, n%5)
		got := ours.Seal(bytes.Clone(prefix), nonce, pt, aad)
		want := std.Seal(bytes.Clone(prefix), nonce, pt, aad)
		if !bytes.Equal(got, want) {
			t.Fatalf("n=%d aad=%d: Seal differs from crypto/cipher", n, len(aad))
		}
		opened, err := ours.Open(bytes.Clone(prefix), nonce, want[len(prefix):], aad)
		if err != nil || !bytes.Equal(opened, append(bytes.Clone(prefix), pt...)) {
			t.Fatalf("n=%d: Open of crypto/cipher's sealed bytes: %v", n, err)
		}
		// In place, as the repository does.
		buf := append(make([]byte, 0, n+TagSize), pt...)
		sealed := ours.Seal(buf[:0], nonce, buf, aad)
		if !bytes.Equal(sealed, want[len(prefix):]) {
			t.Fatalf("n=%d: in-place Seal differs", n)
		}
		plain, err := ours.Open(sealed[:0], nonce, sealed, aad)
		if err != nil || !bytes.Equal(plain, pt) {
			t.Fatalf("n=%d: in-place Open: %v", n, err)
		}
	}
}

func TestOpenRejectsTampering(t *testing.T) {
	needKernels(t)
	r := rand.New(rand.NewPCG(9, 10))
	key := randBytes(r, KeySize)
	g := newGCM(key)
	for _, n := range []int{0, 1, 16, 63, 64, 255, 256, 1000} {
		nonce, aad, pt := randBytes(r, NonceSize), randBytes(r, 20), randBytes(r, n)
		sealed := g.Seal(nil, nonce, pt, aad)
		cases := []struct {
			name              string
			nonce, sealed, ad []byte
		}{
			{"ciphertext or tag bit", nonce, flip(sealed, r.IntN(len(sealed))), aad},
			{"last tag byte", nonce, flip(sealed, len(sealed)-1), aad},
			{"aad", nonce, sealed, flip(aad, r.IntN(len(aad)))},
			{"no aad", nonce, sealed, nil},
			{"nonce", flip(nonce, r.IntN(NonceSize)), sealed, aad},
			{"truncated", nonce, sealed[:len(sealed)-1], aad},
			{"shorter than a tag", nonce, sealed[:TagSize-1], aad},
			{"extended", nonce, append(bytes.Clone(sealed), 0), aad},
			{"other key", nonce, newGCM(randBytes(r, KeySize)).Seal(nil, nonce, pt, aad), aad},
		}
		for _, c := range cases {
			dst := bytes.Repeat([]byte{0xaa}, n+8)
			out, err := g.Open(dst[:0], c.nonce, c.sealed, c.ad)
			if err == nil || out != nil {
				t.Fatalf("n=%d %s: Open succeeded", n, c.name)
			}
			if !bytes.Equal(dst, bytes.Repeat([]byte{0xaa}, n+8)) {
				t.Fatalf("n=%d %s: a failed Open wrote to dst", n, c.name)
			}
		}
	}
}

func flip(b []byte, i int) []byte {
	c := bytes.Clone(b)
	c[i] ^= 0x10
	return c
}

func TestNew(t *testing.T) {
	if _, err := New(make([]byte, 16)); err == nil {
		t.Fatal("New accepted a 16-byte key")
	}
	a, err := New(make([]byte, KeySize))
	if err != nil {
		t.Fatal(err)
	}
	if a.NonceSize() != NonceSize || a.Overhead() != TagSize {
		t.Fatalf("NonceSize %d, Overhead %d", a.NonceSize(), a.Overhead())
	}
	if _, ok := a.(*gcm); ok != hasKernels() {
		t.Fatalf("New returned %T with hasKernels() = %v", a, hasKernels())
	}
	// SP 800-38D test case 14 (McGrew & Viega): 256-bit zero key, zero
	// nonce, one zero block.
	sealed := a.Seal(nil, make([]byte, NonceSize), make([]byte, 16), nil)
	want := "cea7403d4d606b6e074ec5d3baf39d18" + "d0d1c8a799996bf0265b98b5d48ab919"
	if got := fmt.Sprintf("%x", sealed); got != want {
		t.Fatalf("test case 14: %s, want %s", got, want)
	}
}

func TestSealPanicsOnOverlap(t *testing.T) {
	needKernels(t)
	g := newGCM(make([]byte, KeySize))
	buf := make([]byte, 100)
	defer func() {
		if recover() == nil {
			t.Fatal("Seal into an inexactly overlapping buffer did not panic")
		}
	}()
	g.Seal(buf[1:1], make([]byte, NonceSize), buf[:50], nil)
}

// FuzzMatchesCryptoCipher checks any plaintext and AAD against
// crypto/cipher, and that a flipped byte fails to open.
func FuzzMatchesCryptoCipher(f *testing.F) {
	f.Add([]byte("key"), []byte("plain"), []byte("aad"), uint16(3))
	f.Add([]byte{}, bytes.Repeat([]byte{1}, 300), []byte{}, uint16(0))
	f.Fuzz(func(t *testing.T, keySeed, pt, aad []byte, at uint16) {
		needKernels(t)
		key := make([]byte, KeySize)
		copy(key, keySeed)
		nonce := make([]byte, NonceSize)
		copy(nonce, pt)
		ours := newGCM(key)
		std, err := newStd(key)
		if err != nil {
			t.Fatal(err)
		}
		got := ours.Seal(nil, nonce, pt, aad)
		if want := std.Seal(nil, nonce, pt, aad); !bytes.Equal(got, want) {
			t.Fatalf("Seal differs from crypto/cipher")
		}
		if out, err := ours.Open(nil, nonce, got, aad); err != nil || !bytes.Equal(out, pt) {
			t.Fatalf("Open: %v", err)
		}
		bad := flip(got, int(at)%len(got))
		if _, err := ours.Open(nil, nonce, bad, aad); err == nil {
			t.Fatalf("Open accepted a flipped byte at %d", int(at)%len(got))
		}
	})
}

func BenchmarkAEAD(b *testing.B) {
	key := make([]byte, KeySize)
	std, _ := newStd(key)
	impls := []struct {
		name string
		a    cipher.AEAD
	}{{"std", std}}
	if hasKernels() {
		impls = append(impls, struct {
			name string
			a    cipher.AEAD
		}{"vaes", newGCM(key)})
	}
	nonce := make([]byte, NonceSize)
	aad := make([]byte, 32)
	for _, size := range []int{1 << 10, 64 << 10, 1 << 20} {
		pt := make([]byte, size)
		for _, im := range impls {
			sealed := im.a.Seal(nil, nonce, pt, aad)
			buf := make([]byte, 0, size+TagSize)
			b.Run(fmt.Sprintf("Seal/%s/%dKiB", im.name, size>>10), func(b *testing.B) {
				b.SetBytes(int64(size))
				for b.Loop() {
					im.a.Seal(buf[:0], nonce, pt, aad)
				}
			})
			b.Run(fmt.Sprintf("Open/%s/%dKiB", im.name, size>>10), func(b *testing.B) {
				b.SetBytes(int64(size))
				for b.Loop() {
					if _, err := im.a.Open(buf[:0], nonce, sealed, aad); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

func BenchmarkNew(b *testing.B) {
	key := make([]byte, KeySize)
	for b.Loop() {
		if _, err := New(key); err != nil {
			b.Fatal(err)
		}
	}
}
