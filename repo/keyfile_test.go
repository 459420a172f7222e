package repo

import (
	"context"
	"errors"
	"strings"
	"testing"
)

// TestKeyFileDamage: a key file whose content does not match its name is
// reported as damaged, by name, and never mistaken for a wrong password.
func TestKeyFileDamage(t *testing.T) {
	ctx := context.Background()
	r, be := newTestRepo(t)
	first := firstKey(t, be, keysPrefix)
	second, err := r.AddKey(ctx, []byte("second"), testKDF)
	if err != nil {
		t.Fatal(err)
	}
	flip(t, be, first, func(n int) int { return n / 2 })

	// The damaged key's password: wrong password, and the damaged file named.
	_, err = Open(ctx, be, testPassword, Options{})
	if !errors.Is(err, ErrWrongPassword) || !errors.Is(err, ErrKeyFileDamaged) ||
		!strings.Contains(err.Error(), "key file "+first+": damaged: content does not match its name") {
		t.Fatalf("open with the damaged key's password: %v", err)
	}
	// The other key still opens.
	r2, err := Open(ctx, be, []byte("second"), Options{NoIndex: true})
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	res, err := r2.Check(ctx, CheckOptions{})
	if err != nil {
		t.Fatal(err)
	}
	checkBlames(t, res, first)
	if !strings.Contains(res.Errors()[0].Err, "damaged: content does not match its name") {
		t.Fatalf("check: %v", res.Errors())
	}
	keys, err := r2.Keys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if (keysPrefix+k.ID == first) != (k.Damaged != "") {
			t.Fatalf("key list: %+v", k)
		}
	}

	// Every key file damaged: said so, not "wrong password".
	flip(t, be, keysPrefix+second, func(n int) int { return n / 3 })
	_, err = Open(ctx, be, []byte("second"), Options{})
	if errors.Is(err, ErrWrongPassword) || !errors.Is(err, ErrKeyFileDamaged) || !strings.Contains(err.Error(), "every key file is damaged") ||
		!strings.Contains(err.Error(), first) || !strings.Contains(err.Error(), second) {
		t.Fatalf("open with every key file damaged: %v", err)
	}
}
