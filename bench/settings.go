package bench

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/blockmover/blockmover/chunk"
	"github.com/blockmover/blockmover/internal/units"
	"github.com/blockmover/blockmover/repo"
)

// Settings are mover's knobs that a benchmark sets and a sweep varies. The
// zero value of each is mover's default.
type Settings struct {
	// Workers cut, hash, compress and encrypt in an export (default
	// GOMAXPROCS); an import runs twice as many fetch workers (default
	// 2·GOMAXPROCS, at least 4).
	Workers int `json:"workers,omitempty"`
	// Chunker: "cdc-SIZE" (content-defined, SIZE average, SIZE/2 minimum,
	// 4·SIZE maximum; the default cdc-1Mi is mover's default) or
	// "fixed-SIZE". It decides chunk boundaries, so it is fixed when the
	// repository is created.
	Chunker string `json:"chunker,omitempty"`
	// Compression: zstd level fastest (default), default or better.
	Compression string `json:"compression,omitempty"`
	// PackSize in bytes (default repo.DefaultPackSize), fixed at init.
	PackSize int `json:"pack_size,omitempty"`
	// Uploads is the number of packs an export uploads at once (default 2
	// to a directory, 4 to S3, like the CLI).
	Uploads int `json:"uploads,omitempty"`
}

// SweepKeys are the settings a sweep can vary.
func SweepKeys() []string { return []string{"workers", "chunker", "zstd", "pack"} }

// Sweep varies one setting over values, each run as its own variant.
type Sweep struct {
	Key    string   `json:"key"`
	Values []string `json:"values"`
}

// ErrInvalidSweep is wrapped by every error about a malformed sweep.
var ErrInvalidSweep = errors.New("invalid sweep")

// ParseSweep reads "KEY=V1,V2,…", e.g. "workers=1,2,4,8",
// "chunker=cdc-1Mi,cdc-4Mi,fixed-1Mi", "zstd=fastest,default,better",
// "pack=16Mi,64Mi".
func ParseSweep(s string) (Sweep, error) {
	key, vals, ok := strings.Cut(s, "=")
	if !ok || vals == "" {
		return Sweep{}, fmt.Errorf("%w %q: want KEY=V1,V2,… with KEY one of %s", ErrInvalidSweep, s, strings.Join(SweepKeys(), ", "))
	}
	sw := Sweep{Key: strings.TrimSpace(key)}
	for _, v := range strings.Split(vals, ",") {
		if v = strings.TrimSpace(v); v != "" {
			sw.Values = append(sw.Values, v)
		}
	}
	for _, v := range sw.Values {
		if _, err := sw.Apply(Settings{}, v); err != nil {
			return Sweep{}, err
		}
	}
	return sw, nil
}

// Apply returns base with the sweep's setting at value.
func (sw Sweep) Apply(base Settings, value string) (Settings, error) {
	s := base
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s=%s: %s", ErrInvalidSweep, sw.Key, value, fmt.Sprintf(format, args...))
	}
	switch sw.Key {
	case "workers":
		n, err := strconv.Atoi(value)
		if err != nil || n < 1 || n > 1024 {
			return s, bad("want a number of workers, 1 to 1024")
		}
		s.Workers = n
	case "chunker":
		if _, err := chunkParams(value, checkPolynomial); err != nil {
			return s, fmt.Errorf("%w: %s=%s: %w", ErrInvalidSweep, sw.Key, value, err)
		}
		s.Chunker = value
	case "zstd":
		switch value {
		case repo.CompressFastest, repo.CompressDefault, repo.CompressBetter:
		default:
			return s, bad("want fastest, default or better")
		}
		s.Compression = value
	case "pack":
		n, err := units.ParseSize(value)
		if err != nil || n < repo.MinPackSize || n > repo.MaxPackSize {
			return s, bad("want a pack size of %s to %s, e.g. 16Mi", units.Bytes(repo.MinPackSize), units.Bytes(repo.MaxPackSize))
		}
		s.PackSize = int(n)
	default:
		return s, fmt.Errorf("%w: unknown key %q (want one of %s)", ErrInvalidSweep, sw.Key, strings.Join(SweepKeys(), ", "))
	}
	return s, nil
}

// checkPolynomial is an irreducible polynomial for checking chunker names;
// every benchmark repository draws its own.
const checkPolynomial = 0x3DA3358B4DC173

// chunkParams returns the chunking parameters of a chunker name ("" is
// mover's default) with polynomial pol.
func chunkParams(name string, pol uint64) (chunk.Params, error) {
	p := chunk.DefaultParams(pol)
	if name == "" {
		return p, nil
	}
	kind, size, ok := strings.Cut(name, "-")
	n, err := units.ParseSize(size)
	if !ok || err != nil {
		return p, fmt.Errorf("chunker %q: want cdc-SIZE or fixed-SIZE, e.g. cdc-1Mi", name)
	}
	switch kind {
	case "cdc":
		p.AvgSize, p.MinSize, p.MaxSize = int(n), int(n/2), int(4*n)
	case "fixed":
		p = chunk.Params{Splitter: chunk.Fixed, FixedSize: int(n), SegmentSize: p.SegmentSize, ZeroBlock: p.ZeroBlock}
	default:
		return p, fmt.Errorf("chunker %q: want cdc-SIZE or fixed-SIZE", name)
	}
	if err := p.Validate(); err != nil {
		return p, err
	}
	return p, nil
}

// Label names the settings that differ from mover's defaults, e.g.
// "workers=4 zstd=better", or "defaults".
func (s Settings) Label() string {
	var parts []string
	if s.Workers > 0 {
		parts = append(parts, fmt.Sprintf("workers=%d", s.Workers))
	}
	if s.Chunker != "" {
		parts = append(parts, "chunker="+s.Chunker)
	}
	if s.Compression != "" {
		parts = append(parts, "zstd="+s.Compression)
	}
	if s.PackSize > 0 {
		parts = append(parts, "pack="+units.Size(int64(s.PackSize)))
	}
	if s.Uploads > 0 {
		parts = append(parts, fmt.Sprintf("uploads=%d", s.Uploads))
	}
	if len(parts) == 0 {
		return "defaults"
	}
	return strings.Join(parts, " ")
}
