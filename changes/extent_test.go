package changes_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/blockmover/blockmover/changes"
)

func TestNewChangeListValidates(t *testing.T) {
	const size = 1 << 20
	tests := []struct {
		name string
		in   []changes.Extent
		want changes.ChangeList // nil with err set: an error
		err  string
	}{
		{"empty", nil, changes.ChangeList{}, ""},
		{"sorted and merged", []changes.Extent{{4096, 4096}, {0, 100}, {8192, 10}, {50, 10}}, changes.ChangeList{{0, 100}, {4096, 4106}}, ""},
		{"adjacent joined", []changes.Extent{{0, 10}, {10, 10}, {20, 1}}, changes.ChangeList{{0, 21}}, ""},
		{"contained", []changes.Extent{{0, 1000}, {10, 10}}, changes.ChangeList{{0, 1000}}, ""},
		{"duplicates", []changes.Extent{{7, 3}, {7, 3}}, changes.ChangeList{{7, 3}}, ""},
		{"first and last byte", []changes.Extent{{size - 1, 1}, {0, 1}}, changes.ChangeList{{0, 1}, {size - 1, 1}}, ""},
		{"whole device", []changes.Extent{{0, size}}, changes.ChangeList{{0, size}}, ""},
		{"negative offset", []changes.Extent{{-1, 10}}, nil, "[-1, +10)"},
		{"zero length", []changes.Extent{{0, 0}}, nil, "[0, +0)"},
		{"negative length", []changes.Extent{{100, -5}}, nil, "[100, +-5)"},
		{"past the end", []changes.Extent{{size - 1, 2}}, nil, "on a device of 1048576 bytes"},
		{"at the end", []changes.Extent{{size, 1}}, nil, "[1048576, +1)"},
		{"overflow", []changes.Extent{{math.MaxInt64 - 1, math.MaxInt64}}, nil, "[9223372036854775806"},
		{"huge", []changes.Extent{{0, math.MaxInt64}}, nil, "invalid extent"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := slices.Clone(tc.in)
			got, err := changes.NewChangeList(tc.in, size)
			if !slices.Equal(tc.in, in) {
				t.Errorf("NewChangeList modified its argument: %v", tc.in)
			}
			if tc.want == nil {
				if !errors.Is(err, changes.ErrInvalidExtent) || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want ErrInvalidExtent naming %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
			if err := got.Validate(size); err != nil {
				t.Fatalf("NewChangeList built a list Validate rejects: %v", err)
			}
		})
	}
}

func TestChangeListValidate(t *testing.T) {
	tests := []struct {
		cl  changes.ChangeList
		err string // "" valid
	}{
		{nil, ""},
		{changes.ChangeList{{0, 10}, {11, 89}}, ""},
		{changes.ChangeList{{0, 10}, {10, 10}}, "extent 1 [10, +10) is not after extent 0"},
		{changes.ChangeList{{50, 10}, {0, 10}}, "extent 1 [0, +10)"},
		{changes.ChangeList{{0, 10}, {5, 1}}, "extent 1"},
		{changes.ChangeList{{90, 11}}, "extent 0 [90, +11) on a device of 100 bytes"},
		{changes.ChangeList{{100, 1}}, "extent 0"},
		{changes.ChangeList{{-1, 2}}, "extent 0"},
		{changes.ChangeList{{1, 0}}, "extent 0"},
		{changes.ChangeList{{1, math.MaxInt64}}, "extent 0"},
	}
	for _, tc := range tests {
		err := tc.cl.Validate(100)
		if tc.err == "" {
			if err != nil {
				t.Errorf("%v: %v", tc.cl, err)
			}
			continue
		}
		if !errors.Is(err, changes.ErrInvalidExtent) || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%v: error %v, want one containing %q", tc.cl, err, tc.err)
		}
	}
}

func TestChangeListQueries(t *testing.T) {
	cl := changes.ChangeList{{10, 10}, {30, 5}, {100, 50}} // [10,20) [30,35) [100,150)
	tests := []struct {
		off, n            int64
		overlaps, contain bool
		clip              changes.ChangeList
	}{
		{0, 10, false, false, nil},
		{0, 11, true, false, changes.ChangeList{{10, 1}}},
		{10, 10, true, true, changes.ChangeList{{10, 10}}},
		{12, 3, true, true, changes.ChangeList{{12, 3}}},
		{19, 1, true, true, changes.ChangeList{{19, 1}}},
		{19, 2, true, false, changes.ChangeList{{19, 1}}},
		{20, 10, false, false, nil},
		{15, 20, true, false, changes.ChangeList{{15, 5}, {30, 5}}},
		{0, 1000, true, false, changes.ChangeList{{10, 10}, {30, 5}, {100, 50}}},
		{149, 1, true, true, changes.ChangeList{{149, 1}}},
		{150, 10, false, false, nil},
		{-5, 16, true, false, changes.ChangeList{{10, 1}}},
		{-5, 15, false, false, nil},
		{math.MinInt64, math.MaxInt64, false, false, nil}, // [MinInt64, -1)
		{-1 << 62, 1<<62 + 50, true, false, changes.ChangeList{{10, 10}, {30, 5}}},
		{140, math.MaxInt64, true, false, changes.ChangeList{{140, 10}}},
		{12, 0, false, false, nil},
		{12, -3, false, false, nil},
	}
	for _, tc := range tests {
		if got := cl.Overlaps(tc.off, tc.n); got != tc.overlaps {
			t.Errorf("Overlaps(%d, %d) = %v", tc.off, tc.n, got)
		}
		if got := cl.Contains(tc.off, tc.n); got != tc.contain {
			t.Errorf("Contains(%d, %d) = %v", tc.off, tc.n, got)
		}
		if got := cl.Clip(tc.off, tc.n); !slices.Equal(got, tc.clip) {
			t.Errorf("Clip(%d, %d) = %v, want %v", tc.off, tc.n, got, tc.clip)
		}
	}
	for off, want := range map[int64]int{0: 0, 10: 0, 19: 0, 20: 1, 34: 1, 35: 2, 149: 2, 150: 3, 1 << 40: 3} {
		if got := cl.Search(off); got != want {
			t.Errorf("Search(%d) = %d, want %d", off, got, want)
		}
	}
	clip := cl.Clip(15, 20)
	clip[0].Offset = 0
	if cl[0] != (changes.Extent{Offset: 10, Length: 10}) {
		t.Fatal("Clip shares memory with its receiver")
	}
}

func TestChangeListUnion(t *testing.T) {
	tests := []struct{ a, b, want changes.ChangeList }{
		{nil, nil, nil},
		{changes.ChangeList{{0, 10}}, nil, changes.ChangeList{{0, 10}}},
		{nil, changes.ChangeList{{0, 10}}, changes.ChangeList{{0, 10}}},
		{changes.ChangeList{{0, 10}, {50, 10}}, changes.ChangeList{{10, 5}, {70, 1}}, changes.ChangeList{{0, 15}, {50, 10}, {70, 1}}},
		{changes.ChangeList{{0, 100}}, changes.ChangeList{{10, 5}, {20, 5}}, changes.ChangeList{{0, 100}}},
		{changes.ChangeList{{10, 5}, {30, 5}}, changes.ChangeList{{0, 100}}, changes.ChangeList{{0, 100}}},
		{changes.ChangeList{{0, 10}, {20, 10}}, changes.ChangeList{{10, 10}}, changes.ChangeList{{0, 30}}},
		{changes.ChangeList{{5, 1}}, changes.ChangeList{{5, 1}}, changes.ChangeList{{5, 1}}},
	}
	for _, tc := range tests {
		a, b := slices.Clone(tc.a), slices.Clone(tc.b)
		got := tc.a.Union(tc.b)
		if !slices.Equal(got, tc.want) {
			t.Errorf("%v ∪ %v = %v, want %v", tc.a, tc.b, got, tc.want)
		}
		if !slices.Equal(a, tc.a) || !slices.Equal(b, tc.b) {
			t.Errorf("Union modified its arguments")
		}
	}
}

func TestChangeListIsExtentSource(t *testing.T) {
	var src changes.ExtentSource = changes.ChangeList{{0, 10}, {20, 10}}
	got, err := changes.CollectChanges(context.Background(), src, 100)
	if err != nil || !slices.Equal(got, changes.ChangeList{{0, 10}, {20, 10}}) {
		t.Fatalf("CollectChanges = %v, %v", got, err)
	}
	stop := errors.New("stop")
	n := 0
	err = src.Extents(context.Background(), func(changes.Extent) error { n++; return stop })
	if !errors.Is(err, stop) || n != 1 {
		t.Fatalf("an error from fn: got %v after %d calls", err, n)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := src.Extents(ctx, func(changes.Extent) error { return nil }); !errors.Is(err, context.Canceled) {
		t.Fatalf("a canceled context: %v", err)
	}
}

// FuzzChangeList checks NewChangeList and the queries against a byte map
// of a small device.
func FuzzChangeList(f *testing.F) {
	f.Add([]byte{0, 10, 5, 10, 200, 50}, []byte{3, 100}, uint16(256), uint16(20), uint16(40))
	f.Add([]byte{255, 1, 0, 1}, []byte{}, uint16(256), uint16(0), uint16(256))
	f.Add([]byte{10, 0, 250, 10}, []byte{1, 1, 2, 2}, uint16(255), uint16(250), uint16(5))
	f.Fuzz(func(t *testing.T, a, b []byte, size, qoff, qlen uint16) {
		dev := int64(size)
		parse := func(p []byte) ([]changes.Extent, []bool, bool) {
			var ext []changes.Extent
			m := make([]bool, dev)
			valid := true
			for i := 0; i+1 < len(p); i += 2 {
				e := changes.Extent{Offset: int64(p[i]), Length: int64(p[i+1])}
				ext = append(ext, e)
				if e.Length == 0 || e.End() > dev {
					valid = false
					continue
				}
				for j := e.Offset; j < e.End(); j++ {
					m[j] = true
				}
			}
			return ext, m, valid
		}
		ea, ma, va := parse(a)
		la, err := changes.NewChangeList(ea, dev)
		if (err == nil) != va {
			t.Fatalf("NewChangeList(%v, %d): %v, want valid=%v", ea, dev, err, va)
		}
		if err != nil {
			if !errors.Is(err, changes.ErrInvalidExtent) {
				t.Fatalf("error does not wrap ErrInvalidExtent: %v", err)
			}
			return
		}
		if err := la.Validate(dev); err != nil {
			t.Fatal(err)
		}
		if got := extentBitmap(la, dev); !slices.Equal(got, ma) {
			t.Fatalf("NewChangeList(%v) = %v covers other bytes", ea, la)
		}
		var want int64
		for _, x := range ma {
			if x {
				want++
			}
		}
		if la.Bytes() != want {
			t.Fatalf("Bytes() = %d, want %d", la.Bytes(), want)
		}
		// Queries over [qoff, qoff+qlen).
		off, n := int64(qoff), int64(qlen)
		anyIn, allIn := false, n > 0
		for j := off; j < off+n; j++ {
			in := j < dev && ma[j]
			anyIn = anyIn || in
			allIn = allIn && in
		}
		if la.Overlaps(off, n) != anyIn || la.Contains(off, n) != allIn {
			t.Fatalf("%v: Overlaps(%d, %d) = %v, Contains = %v; want %v, %v", la, off, n, la.Overlaps(off, n), la.Contains(off, n), anyIn, allIn)
		}
		clip := la.Clip(off, n)
		if err := clip.Validate(dev); err != nil {
			t.Fatalf("Clip: %v", err)
		}
		cm := extentBitmap(clip, dev)
		for j := range dev {
			if cm[j] != (ma[j] && j >= off && j < off+n) {
				t.Fatalf("%v.Clip(%d, %d) = %v", la, off, n, clip)
			}
		}
		eb, mb, vb := parse(b)
		if !vb {
			return
		}
		lb, err := changes.NewChangeList(eb, dev)
		if err != nil {
			t.Fatal(err)
		}
		u := la.Union(lb)
		if err := u.Validate(dev); err != nil {
			t.Fatalf("Union: %v", err)
		}
		um := extentBitmap(u, dev)
		for j := range dev {
			if um[j] != (ma[j] || mb[j]) {
				t.Fatalf("%v ∪ %v = %v", la, lb, u)
			}
		}
	})
}

func extentBitmap(cl changes.ChangeList, size int64) []bool {
	m := make([]bool, size)
	for _, e := range cl {
		for j := e.Offset; j < e.End(); j++ {
			m[j] = true
		}
	}
	return m
}

// A change list from a CBT service or a file, clipped to one segment.
func ExampleChangeList_Clip() {
	cl, err := changes.NewChangeList([]changes.Extent{{Offset: 8 << 20, Length: 4096}, {Offset: 4096, Length: 4096}, {Offset: 0, Length: 4096}}, 64<<20)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(cl, cl.Bytes())
	fmt.Println(cl.Clip(0, 4<<20), cl.Overlaps(4<<20, 4<<20), cl.Contains(8<<20, 4096))
	// Output:
	// [{0 8192} {8388608 4096}] 12288
	// [{0 8192}] false true
}
