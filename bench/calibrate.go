package bench

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"math"
	"time"

	"github.com/blockmover/blockmover/repo"
	"github.com/klauspost/compress/zstd"
)

// calibrate estimates which share of mover's compress+encrypt stage is
// compression, for the scenario's data at a zstd level: it times zstd and
// AES-256-GCM (seal, and the open that checks each seal) on up to 16 MiB
// of the volume's data in 1 MiB chunks, skipping zstd for random-looking
// chunks as the packer does. mover times the two steps as one stage; the
// report splits that stage by this share and marks the split estimated.
func calibrate(v *Volume, level string) float64 {
	lvl := zstd.SpeedFastest
	switch level {
	case repo.CompressDefault:
		lvl = zstd.SpeedDefault
	case repo.CompressBetter:
		lvl = zstd.SpeedBetterCompression
	}
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(lvl), zstd.WithEncoderCRC(false), zstd.WithEncoderConcurrency(1))
	if err != nil {
		return 0.5
	}
	defer enc.Close()
	var key [32]byte
	rand.Read(key[:])
	block, _ := aes.NewCipher(key[:])
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return 0.5
	}
	nonce := make([]byte, aead.NonceSize())
	const chunk, sample = 1 << 20, 16 << 20
	buf := make([]byte, chunk)
	var zbuf, sealed, opened []byte
	var tz, te time.Duration
	taken := 0
	for _, d := range v.dataRanges() {
		for off := d.start; off+chunk <= d.end && taken < sample; off += 8 * chunk {
			if _, err := v.ReadAt(buf, off); err != nil {
				continue
			}
			taken += chunk
			payload := buf
			t := time.Now()
			if !looksRandom(buf) {
				zbuf = enc.EncodeAll(buf, zbuf[:0])
				if len(zbuf) < len(buf) {
					payload = zbuf
				}
			}
			t2 := time.Now()
			tz += t2.Sub(t)
			sealed = aead.Seal(sealed[:0], nonce, payload, nil)
			opened, _ = aead.Open(opened[:0], nonce, sealed, nil)
			te += time.Since(t2)
		}
	}
	if tz+te == 0 {
		return 0.5
	}
	return tz.Seconds() / (tz + te).Seconds()
}

// looksRandom is the packer's test for chunks not worth compressing: byte
// entropy above 7.9 bits in three 4 KiB samples.
func looksRandom(b []byte) bool {
	const sample = 4 << 10
	if len(b) < 4*sample {
		return false
	}
	var hist [256]float64
	for _, off := range []int{0, len(b)/2 - sample/2, len(b) - sample} {
		for _, c := range b[off : off+sample] {
			hist[c]++
		}
	}
	var e float64
	for _, n := range hist {
		if n > 0 {
			p := n / (3 * sample)
			e -= p * math.Log2(p)
		}
	}
	return e > 7.9
}
