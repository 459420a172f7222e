package backend_test

import (
	"errors"
	"path"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/blockmover/blockmover/repo/backend"
)

func TestCheckKey(t *testing.T) {
	for _, c := range []struct {
		key string
		ok  bool
	}{
		{"config", true},
		{"data/ab/ab12cd", true},
		{"data/with space/ünï", true},
		{"data/.hidden", true},
		{"data/..x", true},
		{"a/" + strings.Repeat("x", backend.MaxKeyComponentLen), true},
		{strings.Repeat("abcdefg/", backend.MaxKeyLen/8-1) + "abcdefg", true}, // exactly MaxKeyLen
		{"", false},
		{"/config", false},
		{"config/", false},
		{"a//b", false},
		{".", false},
		{"a/./b", false},
		{"a/..", false},
		{"../a", false},
		{`a\b`, false},
		{"a\x00", false},
		{"a\tb", false},
		{"a\x7f", false},
		{"\xff", false},
		{"a/" + backend.TempPrefix + "1", false},
		{backend.TempPrefix + "lock-x/y", false},
		{"a/" + strings.Repeat("x", backend.MaxKeyComponentLen+1), false},
		{strings.Repeat("abcdefg/", backend.MaxKeyLen/8) + "x", false},
	} {
		err := backend.CheckKey(c.key)
		if (err == nil) != c.ok {
			t.Errorf("CheckKey(%q) = %v, want ok=%v", c.key, err, c.ok)
		}
		if err != nil && !errors.Is(err, backend.ErrInvalidKey) {
			t.Errorf("CheckKey(%q) = %v, want ErrInvalidKey", c.key, err)
		}
	}
}

func FuzzCheckKey(f *testing.F) {
	for _, s := range []string{"config", "data/ab/x", "../x", "a//b", "/x", `a\b`, ".tmp-1", "a/./b", "\xff"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, key string) {
		if backend.CheckKey(key) != nil {
			return
		}
		if path.Clean(key) != key || path.IsAbs(key) || strings.HasPrefix(key, "../") ||
			!utf8.ValidString(key) || len(key) > backend.MaxKeyLen {
			t.Fatalf("CheckKey accepted %q", key)
		}
		for c := range strings.SplitSeq(key, "/") {
			if strings.HasPrefix(c, backend.TempPrefix) || c == ".." {
				t.Fatalf("CheckKey accepted %q", key)
			}
		}
	})
}

func TestOpString(t *testing.T) {
	want := map[backend.Op]string{
		backend.OpPut: "put", backend.OpGet: "get", backend.OpStat: "stat",
		backend.OpList: "list", backend.OpDelete: "delete", backend.Op(99): "Op(99)",
	}
	for op, s := range want {
		if op.String() != s {
			t.Errorf("Op(%d).String() = %q, want %q", op, op.String(), s)
		}
	}
}
