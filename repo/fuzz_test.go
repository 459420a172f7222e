package repo

import (
	"testing"
)

// The fuzz targets feed arbitrary bytes to every decoder: none may panic,
// hang or allocate without bound. Seeds are valid encodings.

func FuzzPackHeader(f *testing.F) {
	blobs := []PackedBlob{{Type: BlobData, ID: ID{1}, Length: 100, RawLength: 300, Compressed: true}, {Type: BlobPage, ID: ID{2}, Offset: 100, Length: 50, RawLength: 22}}
	f.Add(encodePackHeader([32]byte{7}, blobs), int64(150))
	f.Add([]byte{1}, int64(0))
	f.Fuzz(func(t *testing.T, b []byte, off int64) {
		_, got, err := decodePackHeader(b, off)
		if err == nil {
			var end int64
			for _, bl := range got {
				if int64(bl.Offset) != end {
					t.Fatalf("blob at %d, want %d", bl.Offset, end)
				}
				end += int64(bl.Length)
			}
			if end != off {
				t.Fatalf("blobs end at %d, header at %d", end, off)
			}
		}
	})
}

func FuzzIndex(f *testing.F) {
	f.Add(encodeIndex([]indexPack{{ID: ID{3}, Key: [32]byte{4}, Blobs: []PackedBlob{{Type: BlobData, ID: ID{5}, Offset: 9, Length: 40, RawLength: 12}}}}))
	f.Add([]byte{1, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		packs, err := decodeIndex(b)
		if err == nil {
			again, err := decodeIndex(encodeIndex(packs))
			if err != nil || len(again) != len(packs) {
				t.Fatalf("re-encoding a decoded index: %v", err)
			}
		}
	})
}

func FuzzPage(f *testing.F) {
	f.Add(EncodePage([]Entry{{Length: 10, ID: ID{1}}, {Length: 1 << 20, Hole: true}}), int64(10+1<<20))
	f.Add([]byte{1, 0}, int64(0))
	f.Fuzz(func(t *testing.T, b []byte, length int64) {
		entries, err := DecodePage(b, length)
		if err == nil {
			var total int64
			for _, e := range entries {
				if e.Length <= 0 {
					t.Fatalf("entry of length %d", e.Length)
				}
				total += e.Length
			}
			if total != length {
				t.Fatalf("entries cover %d, want %d", total, length)
			}
		}
	})
}

func FuzzKeyFile(f *testing.F) {
	mk, _ := newMasterKey()
	kf, err := newKeyFile(mk, []byte("pw"), KDFParams{N: 16, R: 1, P: 1})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(kf)
	f.Add([]byte(`{"version":1,"kdf":"scrypt","n":1099511627776,"r":8,"p":1}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		k, err := parseKeyFile(b)
		if err != nil {
			return
		}
		if err := k.KDFParams.Validate(); err != nil {
			t.Fatalf("parsed key file with invalid KDF: %v", err)
		}
		// Bounded by Validate: at most 64 MiB of scrypt memory. Keep the
		// fuzzer fast by unlocking only cheap ones.
		if 128*k.N*k.R <= 1<<20 {
			k.unlock([]byte("pw"))
		}
	})
}

func FuzzConfigFile(f *testing.F) {
	f.Add([]byte(`{"version":1,"id":"` + ID{1}.String() + `","sealed":"AAAA"}`))
	f.Add([]byte(`{"version":99}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		cf, err := parseConfigFile(b)
		if err == nil && (cf.Version < 1 || cf.Version > FormatVersion) {
			t.Fatalf("accepted version %d", cf.Version)
		}
	})
}
