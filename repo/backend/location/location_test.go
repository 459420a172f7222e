package location

import (
	"context"
	"errors"
	"path/filepath"
	"testing"

	"github.com/blockmover/blockmover/repo/backend/s3"
)

func TestOpen(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	tests := []struct {
		loc  string
		opts Options
		want error // nil: opens
	}{
		{filepath.Join(dir, "missing"), Options{}, ErrNoDirectory},
		{filepath.Join(dir, "new"), Options{Create: true}, nil},
		{filepath.Join(dir, "new"), Options{}, nil},
		{"gs://bucket/x", Options{}, ErrBadLocation},
		{"s3://", Options{}, ErrBadLocation},
		{filepath.Join(dir, "new"), Options{S3: s3.Options{ObjectLockDays: 1}}, ErrBadLocation},
	}
	for _, tc := range tests {
		be, err := Open(ctx, tc.loc, tc.opts)
		if tc.want == nil {
			if err != nil {
				t.Errorf("Open(%q, %+v): %v", tc.loc, tc.opts, err)
				continue
			}
			be.Close()
			continue
		}
		if !errors.Is(err, tc.want) {
			t.Errorf("Open(%q, %+v): %v, want %v", tc.loc, tc.opts, err, tc.want)
		}
	}
	for loc, want := range map[string]bool{"s3://b/p": true, "S3://b": true, "/s3://": false, "s3:/": false, "dir": false} {
		if IsS3(loc) != want {
			t.Errorf("IsS3(%q) = %v", loc, !want)
		}
	}
}
