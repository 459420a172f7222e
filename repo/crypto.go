package repo

import (
	"crypto/cipher"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/blockmover/blockmover/internal/blake3x"
	"github.com/blockmover/blockmover/internal/gcmx"
	"github.com/zeebo/blake3"
)

// ID names a chunk, a manifest page or a stored file: 32 bytes of BLAKE3.
type ID [32]byte

// String returns the ID in lower-case hex.
func (id ID) String() string { return hex.EncodeToString(id[:]) }

// Short returns the first 8 hex digits, for people.
func (id ID) Short() string { return hex.EncodeToString(id[:4]) }

// IsZero reports whether id is the zero ID (no ID).
func (id ID) IsZero() bool { return id == ID{} }

// ParseID parses a 64-digit hex ID.
func ParseID(s string) (ID, error) {
	var id ID
	if len(s) != 2*len(id) {
		return id, fmt.Errorf("invalid ID %q: want %d hex digits", s, 2*len(id))
	}
	if _, err := hex.Decode(id[:], []byte(s)); err != nil {
		return id, fmt.Errorf("invalid ID %q: %w", s, err)
	}
	return id, nil
}

// MarshalText encodes the ID as hex.
func (id ID) MarshalText() ([]byte, error) { return []byte(id.String()), nil }

// UnmarshalText decodes a hex ID.
func (id *ID) UnmarshalText(b []byte) error {
	v, err := ParseID(string(b))
	if err != nil {
		return err
	}
	*id = v
	return nil
}

// fileID names a stored file (pack, index, snapshot, key file) by the
// unkeyed BLAKE3 of its stored, encrypted bytes, so anyone can check that a
// file matches its name without a key.
func fileID(b []byte) ID { return blake3.Sum256(b) }

const (
	keySize   = 32
	nonceSize = 12
	tagSize   = 16
	// Overhead is what sealing adds to a plaintext: nonce and GCM tag.
	Overhead = nonceSize + tagSize
)

// ErrAuth is wrapped by every error from opening a sealed object whose bytes
// do not authenticate: damaged, truncated, or sealed under another key.
var ErrAuth = errors.New("authentication failed (damaged or foreign data)")

// newAEAD returns AES-256-GCM for key: gcmx's VAES/VPCLMULQDQ kernels
// where the processor has them (2-3x crypto/cipher's GCM), crypto/cipher's
// GCM elsewhere; the sealed bytes are the same.
func newAEAD(key []byte) (cipher.AEAD, error) {
	a, err := gcmx.New(key)
	if err != nil {
		return nil, fmt.Errorf("aes: %w", err)
	}
	return a, nil
}

// seal appends nonce‖ciphertext‖tag of plain to dst with a fresh random
// nonce. Nonces are never derived from content: one ID may be sealed over
// different bytes (raw or compressed).
func seal(aead cipher.AEAD, dst, plain, aad []byte) []byte {
	var nonce [nonceSize]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		// crypto/rand.Read never returns an error on Linux (Go ≥ 1.24 it
		// crashes the program instead); keep the contract explicit.
		panic("crypto/rand failed: " + err.Error())
	}
	dst = append(dst, nonce[:]...)
	return aead.Seal(dst, nonce[:], plain, aad)
}

// open authenticates and decrypts a sealed object, appending the plaintext
// to dst.
func open(aead cipher.AEAD, dst, sealed, aad []byte) ([]byte, error) {
	if len(sealed) < Overhead {
		return nil, fmt.Errorf("%w: %d bytes is shorter than a sealed object", ErrAuth, len(sealed))
	}
	out, err := aead.Open(dst, sealed[:nonceSize], sealed[nonceSize:], aad)
	if err != nil {
		return nil, ErrAuth
	}
	return out, nil
}

// masterKey is the repository's secret: an encryption key and an ID key.
type masterKey struct {
	Enc [keySize]byte `json:"enc"`
	ID  [keySize]byte `json:"id"`
}

func newMasterKey() (masterKey, error) {
	var k masterKey
	if _, err := rand.Read(k.Enc[:]); err != nil {
		return k, err
	}
	if _, err := rand.Read(k.ID[:]); err != nil {
		return k, err
	}
	return k, nil
}

// Hasher computes chunk IDs: BLAKE3 keyed with the repository's ID key.
// A Hasher is not safe for concurrent use; make one per goroutine with
// Repository.NewHasher.
type Hasher struct {
	h   *blake3.Hasher
	key [32]byte
}

// Sum returns the ID of a data chunk. Chunks of 9 KiB and more are hashed
// by blake3x's 16-lane AVX-512 kernel where the processor has one (the
// same BLAKE3, 1.7× zeebo's AVX2 at 1 MiB: issue 15), the rest by the
// Hasher's own zeebo hasher.
func (h *Hasher) Sum(data []byte) ID {
	if blake3x.Fast(len(data)) {
		return blake3x.Sum(&h.key, data)
	}
	h.h.Reset()
	h.h.Write(data)
	var id ID
	h.h.Sum(id[:0])
	return id
}

// pageID returns the ID of a manifest page: the keyed hash of a type byte
// and the page, so no page can share an ID with a data chunk.
func (h *Hasher) pageID(page []byte) ID {
	h.h.Reset()
	h.h.Write([]byte{byte(BlobPage)})
	h.h.Write(page)
	var id ID
	h.h.Sum(id[:0])
	return id
}

func newHasher(idKey []byte) *Hasher {
	h, err := blake3.NewKeyed(idKey)
	if err != nil {
		panic("blake3: " + err.Error()) // only for a key that is not 32 bytes
	}
	return &Hasher{h: h, key: [32]byte(idKey)}
}

// Additional data binds every sealed object to its type (and, for blobs,
// its ID), so one object can never be passed off as another.
const (
	aadKeyFile    = "blockmover key file v1"
	aadConfig     = "blockmover config v1"
	aadPackHeader = "blockmover pack header v1"
	aadIndex      = "blockmover index v1"
	aadSnapshot   = "blockmover snapshot v1"
)

func blobAAD(t BlobType, id ID) []byte {
	var b [1 + len(ID{})]byte
	b[0] = byte(t)
	copy(b[1:], id[:])
	return b[:]
}
