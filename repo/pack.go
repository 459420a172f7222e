package repo

import (
	"bytes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"
)

// PackedBlob describes one blob inside a pack.
type PackedBlob struct {
	Type       BlobType
	ID         ID
	Offset     uint32 // of the sealed blob within the pack
	Length     uint32 // sealed bytes: nonce, ciphertext, tag
	RawLength  uint32 // plaintext bytes after decompression
	Compressed bool
}

// Pack is a finished pack file: blobs, then the sealed header, then the
// header's length.
type Pack struct {
	ID    ID
	Key   [keySize]byte // the pack's subkey, which sealed its blobs
	Data  []byte        // the whole file
	Blobs []PackedBlob
}

// Pack layout constants.
const (
	packTrailer       = 4 // uint32 LE: length of the sealed header
	packHeaderVersion = 1
	blobRecordMax     = 1 + 32 + 3*binary.MaxVarintLen32
	// maxPackHeader bounds the sealed header a reader accepts.
	maxPackHeader = 16 << 20
	// minSaving: a compressed blob is kept only if it saves at least 1/32
	// of the raw size; otherwise decompression is not worth it.
	minSavingShift = 5
)

// Packer turns blobs into packs: it compresses, seals with the pack's own
// random subkey, and appends. A Packer is not safe for concurrent use: the
// export pipeline runs one per worker, so no lock is taken per blob.
type Packer struct {
	r      *Repository
	target int
	key    [keySize]byte
	aead   cipher.AEAD
	buf    []byte
	blobs  []PackedBlob
	zbuf   []byte
	check  []byte
	stored int64
	// Time spent compressing and sealing (see Busy).
	compressTime, sealTime time.Duration
}

// NewPacker returns a packer that finishes packs of about target bytes
// (Config.PackSize when target ≤ 0).
func (r *Repository) NewPacker(target int) *Packer {
	if target <= 0 {
		target = r.cfg.PackSize
	}
	return &Packer{r: r, target: target}
}

func (p *Packer) start() error {
	if _, err := rand.Read(p.key[:]); err != nil {
		return err
	}
	aead, err := newAEAD(p.key[:])
	if err != nil {
		return err
	}
	p.aead = aead
	p.buf = p.r.packBuffer(p.target)
	p.blobs = p.blobs[:0]
	return nil
}

// Add compresses plain (keeping it raw when that does not pay), seals it
// with the pack key and the blob's type and ID as additional data, checks
// the seal by opening it again, and appends it. Add does not retain plain.
// It returns the number of bytes the blob takes in the pack.
func (p *Packer) Add(t BlobType, id ID, plain []byte) (int, error) {
	if len(plain) > maxBlob {
		return 0, fmt.Errorf("blob %s of %d bytes is larger than %d", id.Short(), len(plain), maxBlob)
	}
	payload, compressed := plain, false
	t0 := time.Now()
	if len(plain) > 0 && !incompressible(plain) {
		p.zbuf = p.r.enc.EncodeAll(plain, p.zbuf[:0])
		if len(p.zbuf) <= len(plain)-len(plain)>>minSavingShift {
			payload, compressed = p.zbuf, true
		}
	}
	p.compressTime += time.Since(t0)
	return p.addPayload(t, id, payload, compressed, len(plain))
}

// Busy returns the time the packer has spent compressing (including the
// test for random-looking data) and sealing (including the check that
// opens every seal again, and the pack headers), for stage timings.
func (p *Packer) Busy() (compress, seal time.Duration) {
	return p.compressTime, p.sealTime
}

// incompressible reports whether b looks like random data (encrypted,
// already compressed): three 4 KiB samples whose byte entropy is near 8
// bits per byte. zstd would spend more time on such a chunk than on any
// other step and save nothing; a chunk that is merely mixed still goes to
// zstd, which stores it raw if it does not shrink.
func incompressible(b []byte) bool {
	const sample = 4 << 10
	if len(b) < 4*sample {
		return false
	}
	var hist [256]uint32
	for _, off := range []int{0, len(b)/2 - sample/2, len(b) - sample} {
		for _, c := range b[off : off+sample] {
			hist[c]++
		}
	}
	// Entropy in bits per byte: −Σ p·log2 p, with p = n/N.
	const n = 3 * sample
	var e float64
	for _, c := range hist {
		if c > 0 {
			p := float64(c) / n
			e -= p * math.Log2(p)
		}
	}
	return e > 7.9
}

// addPayload seals a payload that is already compressed (or raw) as
// decided, checks the seal and appends it. Repacking uses it to move a
// blob without compressing it again.
func (p *Packer) addPayload(t BlobType, id ID, payload []byte, compressed bool, rawLen int) (int, error) {
	if p.aead == nil {
		if err := p.start(); err != nil {
			return 0, err
		}
	}
	aad := blobAAD(t, id)
	off := len(p.buf)
	t0 := time.Now()
	p.buf = seal(p.aead, p.buf, payload, aad)
	var err error
	p.check, err = open(p.aead, p.check[:0], p.buf[off:], aad)
	p.sealTime += time.Since(t0)
	if err != nil || !bytes.Equal(p.check, payload) {
		return 0, fmt.Errorf("blob %s did not decrypt to what was sealed (memory or CPU fault?)", id.Short())
	}
	n := len(p.buf) - off
	p.blobs = append(p.blobs, PackedBlob{Type: t, ID: id, Offset: uint32(off), Length: uint32(n), RawLength: uint32(rawLen), Compressed: compressed})
	p.stored += int64(n)
	return n, nil
}

// Len returns the bytes of the pack so far.
func (p *Packer) Len() int { return len(p.buf) }

// Count returns the number of blobs in the pack so far.
func (p *Packer) Count() int { return len(p.blobs) }

// Full reports whether the pack has reached its target size (a quarter of
// it while other writers are seen, so that they see its blobs sooner: see
// refresh.go).
func (p *Packer) Full() bool { return len(p.buf) >= p.r.packTarget(p.target) }

// Finish seals the header and returns the pack, or nil if it holds no
// blobs. The packer then starts a new pack with a new subkey. The returned
// Pack belongs to the caller; hand it to Repository.SavePack.
func (p *Packer) Finish() (*Pack, error) {
	if len(p.blobs) == 0 {
		return nil, nil
	}
	t0 := time.Now()
	hdr := encodePackHeader(p.key, p.blobs)
	data := seal(p.r.aead, p.buf, hdr, []byte(aadPackHeader))
	data = binary.LittleEndian.AppendUint32(data, uint32(len(data)-len(p.buf)))
	p.sealTime += time.Since(t0)
	pk := &Pack{Key: p.key, Data: data, Blobs: append([]PackedBlob(nil), p.blobs...)}
	if _, err := rand.Read(pk.ID[:]); err != nil {
		return nil, err
	}
	p.aead, p.buf = nil, nil
	p.blobs = p.blobs[:0]
	return pk, nil
}

// maxBlob bounds a blob's plaintext: the largest chunk the chunker allows.
const maxBlob = 64 << 20

func encodePackHeader(key [keySize]byte, blobs []PackedBlob) []byte {
	b := make([]byte, 0, 1+keySize+binary.MaxVarintLen32+len(blobs)*blobRecordMax)
	b = append(b, packHeaderVersion)
	b = append(b, key[:]...)
	b = binary.AppendUvarint(b, uint64(len(blobs)))
	for _, bl := range blobs {
		b = appendBlobRecord(b, bl, false)
	}
	return b
}

// appendBlobRecord appends a blob's record: type, ID, [offset,] stored
// length, raw length, flags. Pack headers leave the offset out (blobs
// follow each other); index files carry it.
func appendBlobRecord(b []byte, bl PackedBlob, withOffset bool) []byte {
	b = append(b, byte(bl.Type))
	b = append(b, bl.ID[:]...)
	if withOffset {
		b = binary.AppendUvarint(b, uint64(bl.Offset))
	}
	b = binary.AppendUvarint(b, uint64(bl.Length))
	b = binary.AppendUvarint(b, uint64(bl.RawLength))
	var flags byte
	if bl.Compressed {
		flags = 1
	}
	return append(b, flags)
}

// blobRecord reads a record written by appendBlobRecord.
func (d *decoder) blobRecord(withOffset bool) PackedBlob {
	var bl PackedBlob
	bl.Type = BlobType(d.byte("blob type"))
	bl.ID = d.id("blob ID")
	if withOffset {
		bl.Offset = uint32(d.uvarint(MaxPackSize, "blob offset"))
	}
	bl.Length = uint32(d.uvarint(maxBlob+maxBlob/8+Overhead, "blob length"))
	bl.RawLength = uint32(d.uvarint(maxBlob, "blob raw length"))
	flags := d.byte("blob flags")
	bl.Compressed = flags&1 != 0
	if d.err == nil && (bl.Type != BlobData && bl.Type != BlobPage || flags > 1 || bl.Length < Overhead) {
		d.fail("blob record")
	}
	return bl
}

// errFormat is wrapped by every decoder error about malformed bytes.
var errFormat = errors.New("malformed")

// decoder reads the binary records of headers, index files and pages,
// remembering the first error.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: truncated or invalid %s", errFormat, what)
	}
}

func (d *decoder) byte(what string) byte {
	if d.err != nil || len(d.b) < 1 {
		d.fail(what)
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *decoder) bytes(n int, what string) []byte {
	if d.err != nil || len(d.b) < n {
		d.fail(what)
		return make([]byte, n)
	}
	v := d.b[:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) uvarint(limit uint64, what string) uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 || v > limit {
		d.fail(what)
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) id(what string) ID {
	var id ID
	copy(id[:], d.bytes(len(id), what))
	return id
}

// decodePackHeader parses a pack header's plaintext. headerOff is where the
// sealed header starts in the pack: the blobs must fill [0, headerOff)
// exactly.
func decodePackHeader(b []byte, headerOff int64) (key [keySize]byte, blobs []PackedBlob, err error) {
	d := decoder{b: b}
	if v := d.byte("pack header version"); d.err == nil && v != packHeaderVersion {
		return key, nil, fmt.Errorf("%w: pack header version %d", errFormat, v)
	}
	copy(key[:], d.bytes(keySize, "pack key"))
	n := d.uvarint(uint64(len(b)/(1+32+3)), "blob count")
	blobs = make([]PackedBlob, 0, n)
	var off int64
	for i := uint64(0); i < n && d.err == nil; i++ {
		bl := d.blobRecord(false)
		bl.Offset = uint32(off)
		off += int64(bl.Length)
		blobs = append(blobs, bl)
	}
	if d.err == nil && len(d.b) != 0 {
		d.fail("pack header (trailing bytes)")
	}
	if d.err == nil && off != headerOff {
		return key, nil, fmt.Errorf("%w: pack blobs end at %d, header starts at %d", errFormat, off, headerOff)
	}
	return key, blobs, d.err
}

// readPackHeader opens the header of a whole pack file.
func (r *Repository) readPackHeader(data []byte) (key [keySize]byte, blobs []PackedBlob, err error) {
	if len(data) < packTrailer+Overhead {
		return key, nil, fmt.Errorf("%w: pack of %d bytes is too short", errFormat, len(data))
	}
	hl := int64(binary.LittleEndian.Uint32(data[len(data)-packTrailer:]))
	hoff := int64(len(data)) - packTrailer - hl
	if hl < Overhead || hl > maxPackHeader || hoff < 0 {
		return key, nil, fmt.Errorf("%w: pack header length %d in a pack of %d bytes", errFormat, hl, len(data))
	}
	plain, err := open(r.aead, nil, data[hoff:hoff+hl], []byte(aadPackHeader))
	if err != nil {
		return key, nil, fmt.Errorf("pack header: %w", err)
	}
	return decodePackHeader(plain, hoff)
}
