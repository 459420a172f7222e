package scryptx

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"strings"
	"sync"
	"testing"

	"golang.org/x/crypto/scrypt"
)

// TestRFC7914 checks the test vectors of RFC 7914, section 12.
func TestRFC7914(t *testing.T) {
	for _, tc := range []struct {
		password, salt string
		N, r, p        int
		want           string
	}{
		{"", "", 16, 1, 1, "77d6576238657b203b19ca42c18a0497f16b4844e3074ae8dfdffa3fede21442fcd0069ded0948f8326a753a0fc81f17e8d3e0fb2e0d3628cf35e20c38d18906"},
		{"password", "NaCl", 1024, 8, 16, "fdbabe1c9d3472007856e7190d01e9fe7c6ad7cbc8237830e77376634b3731622eaf30d92e22a3886ff109279d9830dac727afb94a83ee6d8360cbdfa2cc0640"},
		{"pleaseletmein", "SodiumChloride", 16384, 8, 1, "7023bdcb3afd7348461c06cd81fd38ebfda8fbba904f8e3ea9b543f6545da1f2d5432955613f0fcf62d49705242a9af9e61e85dc0d651e40dfcf017b45575887"},
	} {
		got, err := Key([]byte(tc.password), []byte(tc.salt), tc.N, tc.r, tc.p, 64)
		if err != nil {
			t.Fatal(err)
		}
		if h := hex.EncodeToString(got); h != tc.want {
			t.Errorf("Key(%q, %q, %d, %d, %d) = %s, want %s", tc.password, tc.salt, tc.N, tc.r, tc.p, h, tc.want)
		}
	}
}

// TestMatchesXCrypto compares Key with golang.org/x/crypto/scrypt over
// parameters on both sides of the huge-page threshold (128·N·r bytes of
// 2 MiB), including the repository's default (N=2^15, r=8).
func TestMatchesXCrypto(t *testing.T) {
	for _, tc := range []struct{ N, r, p, keyLen int }{
		{2, 1, 1, 1},
		{4, 1, 1, 32},
		{16, 2, 3, 33},
		{256, 3, 2, 100},
		{1 << 12, 4, 1, 32},
		{1 << 14, 1, 1, 32},  // 2 MiB exactly: huge pages
		{1 << 13, 2, 1, 32},  // 2 MiB
		{1 << 12, 5, 1, 32},  // 2.5 MiB, not a multiple of a huge page
		{1 << 15, 8, 1, 32},  // the default: 32 MiB
		{1 << 10, 8, 16, 64}, // p > 1 reuses the array
	} {
		t.Run(fmt.Sprintf("N=%d,r=%d,p=%d", tc.N, tc.r, tc.p), func(t *testing.T) {
			pw, salt := []byte("correct horse \x00 battery"), bytes.Repeat([]byte{0xa5, 0x17}, 16)
			want, err := scrypt.Key(pw, salt, tc.N, tc.r, tc.p, tc.keyLen)
			if err != nil {
				t.Fatal(err)
			}
			got, err := Key(pw, salt, tc.N, tc.r, tc.p, tc.keyLen)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("got %x, want %x", got, want)
			}
		})
	}
}

// TestBadParameters: out-of-range parameters are errors, never panics or
// huge allocations.
func TestBadParameters(t *testing.T) {
	for _, tc := range []struct {
		N, r, p, keyLen int
		want            string
	}{
		{0, 1, 1, 32, "power of two"},
		{1, 1, 1, 32, "power of two"},
		{3, 1, 1, 32, "power of two"},
		{-16, 1, 1, 32, "power of two"},
		{16, 0, 1, 32, "out of range"},
		{16, 1, 0, 32, "out of range"},
		{16, -1, 1, 32, "out of range"},
		{16, 1 << 15, 1 << 15, 32, "out of range"},
		{16, 1, 1, 0, "key length"},
		{1 << 62, 1 << 20, 1, 32, "memory"},
		{1 << 40, 1 << 20, 1, 32, "memory"},
	} {
		_, err := Key([]byte("pw"), []byte("salt"), tc.N, tc.r, tc.p, tc.keyLen)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Key(N=%d, r=%d, p=%d, len=%d): error %v, want one containing %q", tc.N, tc.r, tc.p, tc.keyLen, err, tc.want)
		}
	}
}

// TestConcurrent derives keys from several goroutines at once (each with
// an array of its own) and checks every result.
func TestConcurrent(t *testing.T) {
	want, err := scrypt.Key([]byte("pw"), []byte("salt"), 1<<13, 8, 1, 32)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Go(func() {
			got, err := Key([]byte("pw"), []byte("salt"), 1<<13, 8, 1, 32)
			if err == nil && !bytes.Equal(got, want) {
				err = fmt.Errorf("got %x, want %x", got, want)
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
}

// BenchmarkKey derives a key with the repository's default parameters.
func BenchmarkKey(b *testing.B) {
	for _, impl := range []struct {
		name string
		key  func(pw, salt []byte, N, r, p, n int) ([]byte, error)
	}{{"scryptx", Key}, {"xcrypto", scrypt.Key}} {
		b.Run(impl.name, func(b *testing.B) {
			b.SetBytes(128 << 15 * 8)
			for b.Loop() {
				if _, err := impl.key([]byte("pw"), []byte("salt"), 1<<15, 8, 1, 32); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
