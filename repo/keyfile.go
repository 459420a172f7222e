package repo

import (
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/user"
	"time"

	"github.com/blockmover/blockmover/internal/scryptx"
)

// KDFParams are scrypt's cost parameters. Memory use is 128·N·r bytes.
type KDFParams struct {
	N int `json:"n"`
	R int `json:"r"`
	P int `json:"p"`
}

// DefaultKDF returns the parameters new key files use: 32 MiB of memory
// and about 100 ms on one core.
func DefaultKDF() KDFParams { return KDFParams{N: 1 << 15, R: 8, P: 1} }

// Bounds on KDF parameters read from a key file, so that a hostile key file
// cannot exhaust memory or time.
const (
	maxKDFMemory = 64 << 20
	maxKDFP      = 16
	minSalt      = 16
	maxSalt      = 64
	maxKeyFile   = 64 << 10
)

// Validate checks p against the bounds every reader enforces.
func (p KDFParams) Validate() error {
	if p.N < 2 || p.N&(p.N-1) != 0 {
		return fmt.Errorf("scrypt N=%d is not a power of two ≥ 2", p.N)
	}
	if p.R < 1 || p.R > 64 || p.P < 1 || p.P > maxKDFP {
		return fmt.Errorf("scrypt r=%d p=%d out of bounds (r 1..64, p 1..%d)", p.R, p.P, maxKDFP)
	}
	if mem := 128 * int64(p.N) * int64(p.R); mem > maxKDFMemory {
		return fmt.Errorf("scrypt N=%d r=%d needs %d MiB of memory, more than the %d MiB allowed", p.N, p.R, mem>>20, maxKDFMemory>>20)
	}
	return nil
}

// keyFile is the stored form of a key: the master key sealed under a key
// derived from a password.
type keyFile struct {
	Version  int       `json:"version"`
	Created  time.Time `json:"created"`
	Hostname string    `json:"hostname,omitempty"`
	Username string    `json:"username,omitempty"`
	KDF      string    `json:"kdf"`
	KDFParams
	Salt []byte `json:"salt"`
	Data []byte `json:"data"` // sealed masterKey JSON
}

// ErrWrongPassword: no key file of the repository opens with the password.
var ErrWrongPassword = errors.New("wrong password: no key file of the repository matches it")

// ErrKeyFileDamaged: a key file's content does not hash to its name
// (keys/<BLAKE3 of the file>), so it was changed or damaged after it was
// written. It is never tried with a password.
var ErrKeyFileDamaged = errors.New("damaged: content does not match its name")

// checkKeyFileName returns an error wrapping ErrKeyFileDamaged, naming the
// file, unless b hashes to name.
func checkKeyFileName(name string, b []byte) error {
	if fileID(b).String() != name {
		return fmt.Errorf("key file %s%s: %w", keysPrefix, name, ErrKeyFileDamaged)
	}
	return nil
}

func deriveKey(password []byte, salt []byte, p KDFParams) ([]byte, error) {
	return scryptx.Key(password, salt, p.N, p.R, p.P, keySize)
}

// newKeyFile seals mk under password and returns the key file's bytes.
func newKeyFile(mk masterKey, password []byte, kdf KDFParams) ([]byte, error) {
	if err := kdf.Validate(); err != nil {
		return nil, err
	}
	if len(password) == 0 {
		return nil, errors.New("empty password")
	}
	kf := keyFile{Version: 1, Created: time.Now().UTC().Truncate(time.Second), KDF: "scrypt", KDFParams: kdf, Salt: make([]byte, 32)}
	kf.Hostname, _ = os.Hostname()
	if u, err := user.Current(); err == nil {
		kf.Username = u.Username
	}
	if _, err := rand.Read(kf.Salt); err != nil {
		return nil, err
	}
	dk, err := deriveKey(password, kf.Salt, kdf)
	if err != nil {
		return nil, err
	}
	aead, err := newAEAD(dk)
	if err != nil {
		return nil, err
	}
	plain, err := json.Marshal(mk)
	if err != nil {
		return nil, err
	}
	kf.Data = seal(aead, nil, plain, []byte(aadKeyFile))
	return json.MarshalIndent(kf, "", "  ")
}

// parseKeyFile decodes a key file and checks its parameters, without the
// password. It is the decoder fuzzed by FuzzKeyFile.
func parseKeyFile(b []byte) (*keyFile, error) {
	if len(b) > maxKeyFile {
		return nil, fmt.Errorf("key file of %d bytes is larger than %d", len(b), maxKeyFile)
	}
	var kf keyFile
	if err := json.Unmarshal(b, &kf); err != nil {
		return nil, fmt.Errorf("key file: %w", err)
	}
	if kf.Version != 1 {
		return nil, fmt.Errorf("key file version %d is not supported (want 1)", kf.Version)
	}
	if kf.KDF != "scrypt" {
		return nil, fmt.Errorf("key file KDF %q is not supported (want scrypt)", kf.KDF)
	}
	if err := kf.KDFParams.Validate(); err != nil {
		return nil, fmt.Errorf("key file: %w", err)
	}
	if len(kf.Salt) < minSalt || len(kf.Salt) > maxSalt {
		return nil, fmt.Errorf("key file: salt of %d bytes (want %d..%d)", len(kf.Salt), minSalt, maxSalt)
	}
	if len(kf.Data) < Overhead {
		return nil, errors.New("key file: sealed key too short")
	}
	return &kf, nil
}

// unlock derives the key from password and opens the master key. A wrong
// password returns ErrWrongPassword.
func (kf *keyFile) unlock(password []byte) (masterKey, error) {
	var mk masterKey
	dk, err := deriveKey(password, kf.Salt, kf.KDFParams)
	if err != nil {
		return mk, err
	}
	aead, err := newAEAD(dk)
	if err != nil {
		return mk, err
	}
	plain, err := open(aead, nil, kf.Data, []byte(aadKeyFile))
	if err != nil {
		return mk, ErrWrongPassword
	}
	if err := json.Unmarshal(plain, &mk); err != nil {
		return mk, fmt.Errorf("key file: master key: %w", err)
	}
	return mk, nil
}
