package mover_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/blockmover/blockmover/mover"
	"github.com/blockmover/blockmover/repo"
	"github.com/blockmover/blockmover/repo/backend"
	"github.com/blockmover/blockmover/repo/backend/mem"
	"github.com/blockmover/blockmover/repo/backend/s3"
	"github.com/blockmover/blockmover/repo/backend/s3/s3test"
	"github.com/blockmover/blockmover/repo/repotest"
)

// TestObjectLockAppliedByOpen: a library user who opens a locked S3
// repository the plain way (s3.Open without Object Lock options, then
// repo.Open) still writes every object under the repository's retention:
// repo.Open applies it. On a copy of the repository on storage without
// retention, reading works and writing is refused.
func TestObjectLockAppliedByOpen(t *testing.T) {
	ctx := context.Background()
	srv := s3test.Start(t, false)
	bucket := srv.NewBucket(t, true)
	open := func() backend.Backend {
		be, err := s3.Open(ctx, s3.Options{Bucket: bucket, Prefix: "repo", Endpoint: srv.Endpoint, PathStyle: true})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { be.Close() })
		return backend.NewRetry(backend.NewLimit(be, 8), backend.RetryOptions{InitialDelay: 20 * time.Millisecond})
	}
	repotest.Init(t, open(), repo.InitOptions{ObjectLock: &repo.ObjectLock{Days: 1, Mode: "governance"}}).Close()
	before := time.Now()

	r := repotest.Open(t, open(), repo.Options{})
	vol := filepath.Join(t.TempDir(), "v.img")
	if err := os.WriteFile(vol, bytes.Repeat([]byte("locked data\n"), 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	src, err := mover.OpenSource(vol, false)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if _, err := mover.Export(ctx, src, r, mover.ExportOptions{Volume: "v"}); err != nil {
		t.Fatal(err)
	}
	r.Close()

	list, err := srv.Client().ListObjectsV2(ctx, &awss3.ListObjectsV2Input{Bucket: aws.String(bucket), Prefix: aws.String("repo/")})
	if err != nil {
		t.Fatal(err)
	}
	written := 0
	for _, o := range list.Contents {
		head, err := srv.Client().HeadObject(ctx, &awss3.HeadObjectInput{Bucket: aws.String(bucket), Key: o.Key})
		if err != nil {
			t.Fatal(err)
		}
		if head.ObjectLockMode != "GOVERNANCE" || head.ObjectLockRetainUntilDate == nil || head.ObjectLockRetainUntilDate.Before(before) {
			t.Errorf("%s: no retention: mode %q until %v", *o.Key, head.ObjectLockMode, head.ObjectLockRetainUntilDate)
		}
		if o.LastModified != nil && !o.LastModified.Before(before.Add(-time.Second)) {
			written++
		}
	}
	if written == 0 {
		t.Fatal("the export wrote no object to check")
	}

	// A copy on storage that keeps no retention: readable, not writable.
	cp := mem.New()
	from := open()
	for _, o := range list.Contents {
		key := (*o.Key)[len("repo/"):]
		b, err := backend.ReadAll(ctx, from, key, 0, -1)
		if err != nil {
			t.Fatal(err)
		}
		if err := cp.Put(ctx, key, b); err != nil {
			t.Fatal(err)
		}
	}
	r = repotest.Open(t, cp, repo.Options{}) // for reading: it has no retention
	if snaps, err := r.Snapshots(ctx); err != nil || len(snaps) != 1 {
		t.Fatalf("snapshots of the copy: %v, %v", snaps, err)
	}
	src2, err := mover.OpenSource(vol, false)
	if err != nil {
		t.Fatal(err)
	}
	defer src2.Close()
	if err := os.WriteFile(vol, bytes.Repeat([]byte("other data\n"), 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := mover.Export(ctx, src2, r, mover.ExportOptions{Volume: "v"}); !errors.Is(err, repo.ErrObjectLockRequired) {
		t.Fatalf("export into the copy: %v, want ErrObjectLockRequired", err)
	}
}
