package backend

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// ErrInvalidKey: a key breaks the rules of CheckKey. Backends reject such
// keys before touching storage, and the Retry wrapper never retries them.
var ErrInvalidKey = errors.New("invalid key")

// Key limits enforced by CheckKey.
const (
	// MaxKeyLen is the longest key in bytes (the S3 limit).
	MaxKeyLen = 1024
	// MaxKeyComponentLen is the longest slash-separated component in bytes.
	// It is below the usual file name limit of 255 so that a file system
	// backend can build temporary names from a component.
	MaxKeyComponentLen = 200
	// TempPrefix starts the names of backends' temporary files. No key
	// component may start with it, so temporary files can never be mistaken
	// for objects.
	TempPrefix = ".tmp-"
)

// CheckKey reports whether key may name an object, as an error wrapping
// ErrInvalidKey. A valid key is non-empty valid UTF-8 of at most MaxKeyLen
// bytes without control characters or backslashes, made of slash-separated
// components that are non-empty (so no leading, trailing or doubled slash),
// not "." or "..", at most MaxKeyComponentLen bytes long, and not starting
// with TempPrefix.
//
// These rules are the same for every backend, so a key that works on the
// in-memory backend in tests also works on a file system and on S3.
func CheckKey(key string) error {
	if reason := keyProblem(key); reason != "" {
		return fmt.Errorf("%w %q: %s", ErrInvalidKey, key, reason)
	}
	return nil
}

func keyProblem(key string) string {
	switch {
	case key == "":
		return "empty"
	case len(key) > MaxKeyLen:
		return fmt.Sprintf("longer than %d bytes", MaxKeyLen)
	case !utf8.ValidString(key):
		return "not valid UTF-8"
	case key[0] == '/':
		return "absolute (starts with a slash)"
	}
	for _, r := range key {
		switch {
		case r < 0x20 || r == 0x7f:
			return "contains a control character"
		case r == '\\':
			return "contains a backslash"
		}
	}
	for c := range strings.SplitSeq(key, "/") {
		switch {
		case c == "":
			return "empty path component (trailing or doubled slash)"
		case c == "." || c == "..":
			return `contains a "." or ".." component`
		case len(c) > MaxKeyComponentLen:
			return fmt.Sprintf("has a component longer than %d bytes", MaxKeyComponentLen)
		case strings.HasPrefix(c, TempPrefix):
			return fmt.Sprintf("has a component starting with the reserved %q", TempPrefix)
		}
	}
	return ""
}
