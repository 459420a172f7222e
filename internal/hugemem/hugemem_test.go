package hugemem

import (
	"bufio"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"unsafe"
)

func TestAlloc(t *testing.T) {
	for _, n := range []int{1, 4096, PageSize - 1, PageSize, PageSize + 1, 5 << 20} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			b, err := Alloc(n)
			if err != nil {
				t.Fatal(err)
			}
			if len(b) != n || cap(b) != roundUp(n) || cap(b)%PageSize != 0 {
				t.Fatalf("len %d cap %d, want len %d, cap a multiple of %d", len(b), cap(b), n, PageSize)
			}
			if a := uintptr(unsafe.Pointer(unsafe.SliceData(b))); a%PageSize != 0 {
				t.Fatalf("address %#x not aligned to %d", a, PageSize)
			}
			b = b[:cap(b)]
			for i := range b {
				if b[i] != 0 {
					t.Fatalf("byte %d = %d, want zeroed memory", i, b[i])
				}
				b[i] = byte(i)
			}
			if err := Free(b[:1]); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestBadSizes(t *testing.T) {
	for _, n := range []int{0, -1} {
		if b, err := Alloc(n); err == nil {
			t.Errorf("Alloc(%d) = %d bytes, want an error", n, len(b))
		}
	}
	if err := Free(nil); err != nil {
		t.Errorf("Free(nil) = %v", err)
	}
}

func TestFreeRejectsSlices(t *testing.T) {
	b, err := Alloc(3 << 20)
	if err != nil {
		t.Fatal(err)
	}
	if err := Free(b[1:]); err == nil {
		t.Error("Free of a slice starting at the second byte succeeded")
	}
	if err := Free(b[:1:1]); err == nil {
		t.Error("Free of a slice with its capacity cut succeeded")
	}
	b[len(b)-1] = 1 // still mapped after the refusals
	if err := Free(b); err != nil {
		t.Fatal(err)
	}
}

func TestConcurrent(t *testing.T) {
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for k := range 8 {
		wg.Go(func() {
			for i := range 20 {
				b, err := Alloc((k + 1) << 20)
				if err != nil {
					errs <- err
					return
				}
				b[0], b[len(b)-1] = byte(i), byte(k)
				if err := Free(b); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestHugePages checks, where the kernel offers transparent huge pages to
// those who ask (enabled "always" or "madvise"), that a touched buffer is
// backed by at least one of them: the reason for the package.
func TestHugePages(t *testing.T) {
	mode, err := os.ReadFile("/sys/kernel/mm/transparent_hugepage/enabled")
	if err != nil || strings.Contains(string(mode), "[never]") {
		t.Skipf("no transparent huge pages here (%q, %v)", strings.TrimSpace(string(mode)), err)
	}
	b, err := Alloc(4 * PageSize)
	if err != nil {
		t.Fatal(err)
	}
	defer Free(b)
	for i := 0; i < len(b); i += 4096 {
		b[i] = 1
	}
	start := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	huge, err := anonHuge(start)
	if err != nil {
		t.Fatal(err)
	}
	if huge < PageSize {
		t.Fatalf("AnonHugePages of the buffer's mapping = %d bytes, want at least one huge page (%d)", huge, PageSize)
	}
}

// anonHuge returns the AnonHugePages of the mapping that holds address
// start, in bytes, from /proc/self/smaps.
func anonHuge(start uintptr) (int, error) {
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		var lo, hi uintptr
		if n, _ := fmt.Sscanf(line, "%x-%x ", &lo, &hi); n == 2 {
			in = lo <= start && start < hi
			continue
		}
		var kb int
		if in {
			if n, _ := fmt.Sscanf(line, "AnonHugePages: %d kB", &kb); n == 1 {
				return kb << 10, nil
			}
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("no mapping at %#x in /proc/self/smaps", start)
}
