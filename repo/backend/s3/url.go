package s3

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// ParseURL splits a repository URL "s3://bucket/prefix/path" into the
// bucket and the prefix ("prefix/path", without leading or trailing slash;
// "" for "s3://bucket" or "s3://bucket/"). The endpoint is not part of the
// URL: set Options.Endpoint or AWS_ENDPOINT_URL.
//
// Errors name what is wrong: another scheme, a missing bucket, an invalid
// bucket name, a host:port or user@ where the bucket should be, a query or
// fragment, or empty, "." or ".." path segments.
func ParseURL(raw string) (bucket, prefix string, err error) {
	const scheme = "s3://"
	if len(raw) < len(scheme) || !strings.EqualFold(raw[:len(scheme)], scheme) {
		return "", "", fmt.Errorf("s3 URL %q: must start with %s, as in s3://bucket/prefix", raw, scheme)
	}
	rest := raw[len(scheme):]
	if i := strings.IndexAny(rest, "?#"); i >= 0 {
		return "", "", fmt.Errorf("s3 URL %q: query and fragment (%q) are not supported", raw, rest[i:])
	}
	bucket, prefix, _ = strings.Cut(rest, "/")
	if bucket == "" {
		return "", "", fmt.Errorf("s3 URL %q: no bucket, want s3://bucket/prefix", raw)
	}
	if strings.ContainsAny(bucket, ":@") {
		return "", "", fmt.Errorf("s3 URL %q: %q is not a bucket name; "+
			"give the endpoint separately (Endpoint option or AWS_ENDPOINT_URL), as in s3://bucket/prefix", raw, bucket)
	}
	if err := checkBucketName(bucket); err != nil {
		return "", "", fmt.Errorf("s3 URL %q: %w", raw, err)
	}
	prefix = strings.TrimSuffix(prefix, "/")
	if prefix != "" {
		if err := checkPrefix(prefix); err != nil {
			return "", "", fmt.Errorf("s3 URL %q: %w", raw, err)
		}
	}
	return bucket, prefix, nil
}

// checkBucketName accepts the names S3 and the common S3-compatible stores
// allow: 3 to 255 letters, digits, '.', '-' and '_', starting and ending
// with a letter or digit. (AWS itself is stricter: 3 to 63 lower-case
// characters; it reports violations itself.)
func checkBucketName(name string) error {
	if len(name) < 3 || len(name) > 255 {
		return fmt.Errorf("bucket name %q: must be 3 to 255 characters long", name)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if !alnum && c != '.' && c != '-' && c != '_' {
			return fmt.Errorf("bucket name %q: character %q not allowed (letters, digits, '.', '-', '_')", name, c)
		}
		if !alnum && (i == 0 || i == len(name)-1) {
			return fmt.Errorf("bucket name %q: must start and end with a letter or digit", name)
		}
	}
	return nil
}

// checkPrefix checks a prefix without leading or trailing slash.
func checkPrefix(p string) error {
	if err := checkPath(p); err != nil {
		return fmt.Errorf("prefix %q: %w", p, err)
	}
	return nil
}

// checkPath refuses what object stores and their file-system gateways
// handle inconsistently: invalid UTF-8, control characters, leading or
// trailing slashes, and empty, "." or ".." segments.
func checkPath(p string) error {
	if !utf8.ValidString(p) {
		return errors.New("not valid UTF-8")
	}
	for _, r := range p {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("control character %U", r)
		}
	}
	for seg := range strings.SplitSeq(p, "/") {
		switch seg {
		case "":
			return errors.New("empty path segment (leading, trailing or double slash)")
		case ".", "..":
			return fmt.Errorf("%q path segment", seg)
		}
	}
	return nil
}
