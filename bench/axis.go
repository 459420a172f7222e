package bench

import (
	"fmt"
	"math"
	"strconv"
)

// axis is a chart's value axis: its range and labelled ticks. A linear
// axis starts at 0 and ends at the first "nice" tick (1, 2 or 5 × 10^k
// steps) at or above the largest value; a logarithmic one spans whole
// decades from one below the smallest value's (so that the shortest bar
// has a length to see) to the largest's, with a tick on each decade (and
// at 2 and 5 when it spans two decades or fewer).
type axis struct {
	lo, hi float64
	log    bool
	ticks  []float64
	step   float64 // linear ticks' spacing
}

// newAxis returns the axis for values up to hi (and, on a log scale, down
// to lo > 0). A log scale needs positive values; without them the axis is
// linear.
func newAxis(lo, hi float64, log bool) axis {
	if !(hi > 0) || math.IsInf(hi, 0) {
		hi = 1
	}
	if log && lo > 0 && lo <= hi {
		a := axis{log: true, lo: math.Pow(10, math.Floor(math.Log10(lo))-1), hi: math.Pow(10, math.Ceil(math.Log10(hi)))}
		for d := a.lo; d <= a.hi*1.0001; d *= 10 {
			a.ticks = append(a.ticks, d)
			if a.hi/a.lo <= 100 && d < a.hi*0.999 {
				a.ticks = append(a.ticks, 2*d, 5*d)
			}
		}
		return a
	}
	step := niceStep(hi / 5)
	a := axis{lo: 0, hi: math.Ceil(hi/step-1e-9) * step, step: step}
	for i := 0; float64(i)*step <= a.hi*(1+1e-9); i++ {
		a.ticks = append(a.ticks, float64(i)*step)
	}
	return a
}

// niceStep rounds x up to 1, 2 or 5 times a power of ten.
func niceStep(x float64) float64 {
	p := math.Pow(10, math.Floor(math.Log10(x)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= x*(1-1e-9) {
			return m * p
		}
	}
	return 10 * p
}

// pos maps a value to a distance from the axis' start, of length at the
// axis' end; values outside the axis are clamped.
func (a axis) pos(v, length float64) float64 {
	var f float64
	if a.log {
		if v <= a.lo {
			return 0
		}
		f = math.Log10(v/a.lo) / math.Log10(a.hi/a.lo)
	} else {
		f = v / a.hi
	}
	return min(max(f, 0), 1) * length
}

// label writes a tick's value with no more decimals than its spacing
// needs, from 10000 on with a suffix: 20k, 1M, 10G.
func (a axis) label(v float64) string {
	for _, u := range []struct {
		suffix string
		f      float64
	}{{"G", 1e9}, {"M", 1e6}, {"k", 1e3}} {
		if v >= 1e4 && v >= u.f {
			return strconv.FormatFloat(v/u.f, 'g', 4, 64) + u.suffix
		}
	}
	step := a.step
	if a.log {
		step = v
	}
	decimals := 0
	if step > 0 && step < 1 {
		decimals = int(math.Ceil(-math.Log10(step) - 1e-9))
	}
	return fmt.Sprintf("%.*f", decimals, v)
}
