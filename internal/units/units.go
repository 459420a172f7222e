// Package units is the one grammar for sizes and the one format for sizes,
// rates and times that people read, shared by the CLI, the bench harness
// and the Kubernetes commands.
//
// Sizes follow Kubernetes' resource.Quantity wherever the two overlap, so
// that `--size 10Gi` means the same thing to mover as to a PVC:
//
//	4096             bytes
//	512B             bytes
//	16Ki 16KiB       binary: 16 × 1024 (Ki, Mi, Gi, Ti, Pi, Ei)
//	16k 16K 16kB     decimal: 16 × 1000 (k, M, G, T, P, E; K and KB too)
//	16M 16MB         decimal: 16,000,000
//	1.5Gi            fractions, when the result is a whole number of bytes
//	12 MiB           a space before the unit, as Bytes prints it
//
// A lowercase "m" is refused: Kubernetes reads it as milli (1/1000), and a
// size of 16 millibytes is always a typo for 16Mi or 16M. Human output
// uses binary units throughout: sizes in KiB, MiB, GiB, rates in MiB/s.
//
// Everything here is a pure function, safe for concurrent use.
package units

import (
	"errors"
	"fmt"
	"math"
	"math/big"
	"strings"
	"time"
)

// ErrSize is wrapped by every error ParseSize returns.
var ErrSize = errors.New("invalid size")

// suffixes maps each accepted unit to its multiplier.
var suffixes = map[string]int64{
	"": 1, "B": 1,
	"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40, "Pi": 1 << 50, "Ei": 1 << 60,
	"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40, "PiB": 1 << 50, "EiB": 1 << 60,
	"k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
	"kB": 1e3, "KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12, "PB": 1e15, "EB": 1e18,
}

// ParseSize parses a size in bytes in the grammar of the package comment.
// It refuses negative sizes, sizes above 2^63-1 and fractions of a byte,
// with an error that wraps ErrSize and names the accepted forms.
func ParseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	i := 0
	for i < len(t) && (t[i] >= '0' && t[i] <= '9' || t[i] == '.') {
		i++
	}
	num, unit := t[:i], strings.TrimLeft(t[i:], " ")
	mult, ok := suffixes[unit]
	if !ok || num == "" {
		hint := "want e.g. 4096, 512Ki, 64MiB, 10Gi (binary) or 10G (decimal)"
		if num != "" && (unit == "m" || unit == "mb" || unit == "mB") {
			hint = "m is milli in Kubernetes; write " + num + "Mi (binary) or " + num + "M (decimal)"
		} else if l := strings.ToLower(unit); num != "" && (strings.HasSuffix(l, "i") || strings.HasSuffix(l, "ib")) {
			hint = "binary units are spelled Ki, Mi, Gi, Ti (or KiB, MiB, GiB, TiB)"
		}
		return 0, fmt.Errorf("%w %q: %s", ErrSize, s, hint)
	}
	// Exact arithmetic: 1.1Gi must not become 1181116006.3999999.
	r, ok := new(big.Rat).SetString(num)
	if !ok {
		return 0, fmt.Errorf("%w %q: %q is not a number", ErrSize, s, num)
	}
	r.Mul(r, new(big.Rat).SetInt64(mult))
	if !r.IsInt() {
		return 0, fmt.Errorf("%w %q: not a whole number of bytes", ErrSize, s)
	}
	n := r.Num()
	if !n.IsInt64() {
		return 0, fmt.Errorf("%w %q: larger than %d bytes", ErrSize, s, int64(math.MaxInt64))
	}
	return n.Int64(), nil
}

// Bytes formats n for people in binary units, with one decimal unless the
// value is whole: "512 B", "1.5 KiB", "4 GiB". Negative sizes keep their
// sign.
func Bytes(n int64) string {
	if n < 0 {
		if n == math.MinInt64 {
			return "-8 EiB"
		}
		return "-" + Bytes(-n)
	}
	if n < 1024 {
		return fmt.Sprintf("%d B", n)
	}
	f := float64(n)
	for _, u := range []string{"KiB", "MiB", "GiB", "TiB", "PiB"} {
		f /= 1024
		if f < 1023.95 { // what would print as 1024.0 moves up a unit
			if f == float64(int64(f)) {
				return fmt.Sprintf("%.0f %s", f, u)
			}
			return fmt.Sprintf("%.1f %s", f, u)
		}
	}
	f /= 1024
	if f == float64(int64(f)) {
		return fmt.Sprintf("%.0f EiB", f)
	}
	return fmt.Sprintf("%.1f EiB", f)
}

// Size formats n as the shortest string ParseSize reads back as n, in
// binary units: "16Mi", "1536Ki", "4097". It is for labels and flags, where
// Bytes' rounding would lose information.
func Size(n int64) string {
	if n <= 0 {
		return fmt.Sprint(n)
	}
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"Ei", 1 << 60}, {"Pi", 1 << 50}, {"Ti", 1 << 40}, {"Gi", 1 << 30}, {"Mi", 1 << 20}, {"Ki", 1 << 10}} {
		if n%u.mult == 0 {
			return fmt.Sprintf("%d%s", n/u.mult, u.suffix)
		}
	}
	return fmt.Sprint(n)
}

// MiBps is bytes per second in MiB/s; zero for a zero or negative duration.
func MiBps(bytes int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(bytes) / (1 << 20) / d.Seconds()
}

// Rate formats a rate in bytes per second as "123 MiB/s" (one decimal
// below 10, none above).
func Rate(bytesPerSecond float64) string {
	m := bytesPerSecond / (1 << 20)
	if m < 10 {
		return fmt.Sprintf("%.1f MiB/s", m)
	}
	return fmt.Sprintf("%.0f MiB/s", m)
}

// TimeLayout is the layout of times in human output: local time to the
// second with the zone's offset, e.g. "2026-12-03 14:05:09 +0100". JSON
// output uses RFC 3339 (time.Time's own encoding).
const TimeLayout = "2006-01-02 15:04:05 -0700"

// Time formats t for people with TimeLayout in the local zone.
func Time(t time.Time) string { return t.Local().Format(TimeLayout) }

// Plural returns "1 snapshot", "2 snapshots", "0 snapshots": n and the
// noun, with an "s" unless n is 1. Irregular plurals pass the plural form
// as plural.
func Plural(n int, singular string, plural ...string) string {
	if n == 1 {
		return fmt.Sprintf("%d %s", n, singular)
	}
	if len(plural) > 0 {
		return fmt.Sprintf("%d %s", n, plural[0])
	}
	return fmt.Sprintf("%d %ss", n, singular)
}
