package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/blockmover/blockmover/repo/backend/s3/s3test"
)

// TestCLIS3: init, export, import, check and gc against an s3:// repository
// on a real S3 server, and one-line errors for bad S3 input.
func TestCLIS3(t *testing.T) {
	srv := s3test.Start(t, false)
	bucket := srv.NewBucket(t, false)
	dir := t.TempDir()
	loc := "s3://" + bucket + "/backups/cluster-a"
	c := &cli{t: t, env: map[string]string{"MOVER_PASSWORD": "pw", "MOVER_REPOSITORY": loc}}
	s3flags := []string{"--s3-endpoint", srv.Endpoint, "--s3-path-style"}
	img := filepath.Join(dir, "vol.img")
	makeImage(t, img, 32<<20)
	c.ok(append([]string{"init", "--pack-size", "2MiB"}, s3flags...)...)
	c.ok(append([]string{"export", "-q", "--source", img, "--name", "v", "--connections", "4"}, s3flags...)...)
	out := filepath.Join(dir, "out.img")
	c.ok(append([]string{"import", "-q", "--snapshot", "latest:v", "--target", out}, s3flags...)...)
	a, _ := os.ReadFile(img)
	b, _ := os.ReadFile(out)
	if !bytes.Equal(a, b) {
		t.Fatal("image imported from S3 differs")
	}
	c.ok(append([]string{"check", "--read-data"}, s3flags...)...)
	c.ok(append([]string{"forget", "latest:v"}, s3flags...)...)
	c.ok(append([]string{"gc", "--grace", "0", "-q"}, s3flags...)...)
	c.ok(append([]string{"check"}, s3flags...)...)

	// Bad input: one line, and the right exit code.
	c.fails(2, "s3://", append([]string{"snapshots", "--repo", "s3://"}, s3flags...)...)
	c.fails(2, "no bucket", append([]string{"snapshots", "--repo", "s3:///x"}, s3flags...)...)
	c.fails(2, "endpoint separately", append([]string{"snapshots", "--repo", "s3://127.0.0.1:9000/b/x"}, s3flags...)...)
	c.fails(2, "path segment", append([]string{"snapshots", "--repo", "s3://" + bucket + "/a//b"}, s3flags...)...)
	c.fails(2, "unsupported scheme", "snapshots", "--repo", "ftp://host/x")
	c.fails(2, "--connections", append([]string{"snapshots", "--connections", "-1"}, s3flags...)...)
	c.fails(exitStorageRefused, "invalid endpoint", "snapshots", "--s3-endpoint", "localhost:9000")
	c.fails(exitStorageRefused, "does not exist", append([]string{"snapshots", "--repo", "s3://no-such-bucket-here/x"}, s3flags...)...)
	c.fails(exitStorageRefused, "does not exist", append([]string{"init", "--repo", "s3://no-such-bucket-here/x"}, s3flags...)...)
	c.fails(exitNoRepository, "no repository", append([]string{"snapshots", "--repo", "s3://" + bucket + "/empty"}, s3flags...)...)
	c.fails(exitExists, "already", append([]string{"init"}, s3flags...)...)
	c.fails(2, "s3:// repository", "init", "--repo", filepath.Join(dir, "fsrepo"), "--object-lock-days", "7")

	// Object Lock: refused on a bucket without it; on a bucket with it,
	// every object written by any later command carries a retention.
	c.fails(exitStorageRefused, "Object Lock", append([]string{"init", "--repo", "s3://" + bucket + "/locked", "--object-lock-days", "1"}, s3flags...)...)
	locked := "s3://" + srv.NewBucket(t, true) + "/repo"
	c.ok(append([]string{"init", "--repo", locked, "--object-lock-days", "1", "--object-lock-mode", "governance"}, s3flags...)...)
	c.ok(append([]string{"export", "-q", "--repo", locked, "--source", img, "--name", "v"}, s3flags...)...)
	lb, lprefix, _ := strings.Cut(strings.TrimPrefix(locked, "s3://"), "/")
	list, err := srv.Client().ListObjectsV2(t.Context(), &s3.ListObjectsV2Input{Bucket: aws.String(lb), Prefix: aws.String(lprefix + "/data/")})
	if err != nil || len(list.Contents) == 0 {
		t.Fatalf("listing packs: %v", err)
	}
	head, err := srv.Client().HeadObject(t.Context(), &s3.HeadObjectInput{Bucket: aws.String(lb), Key: list.Contents[0].Key})
	if err != nil {
		t.Fatal(err)
	}
	if head.ObjectLockRetainUntilDate == nil || head.ObjectLockMode != "GOVERNANCE" {
		t.Fatalf("pack written after init --object-lock-days has no retention: mode %q until %v", head.ObjectLockMode, head.ObjectLockRetainUntilDate)
	}

	// Wrong credentials: a child process with another secret key.
	cmd := c.moverProcess(append([]string{"snapshots"}, s3flags...)...)
	cmd.Env = append(cmd.Env, "AWS_SECRET_ACCESS_KEY=wrong-secret")
	outb, err := cmd.CombinedOutput()
	if err == nil || cmd.ProcessState.ExitCode() != exitStorageRefused || strings.Count(strings.TrimSpace(string(outb)), "\n") != 0 {
		t.Fatalf("wrong credentials: exit %d, output %q", cmd.ProcessState.ExitCode(), outb)
	}
	t.Logf("wrong credentials: %s", strings.TrimSpace(string(outb)))
}

// TestCLIS3Options: the other S3 flags against a real server over TLS: a
// private CA (--s3-ca-bundle), checksums only when required, an explicit
// region, the endpoint from $AWS_ENDPOINT_URL, and one-line errors when
// the certificate is not trusted.
func TestCLIS3Options(t *testing.T) {
	srv := s3test.Start(t, true)
	dir := t.TempDir()
	loc := "s3://" + srv.NewBucket(t, false) + "/r"
	c := &cli{t: t, env: map[string]string{"MOVER_PASSWORD": "pw", "MOVER_REPOSITORY": loc}}
	img := filepath.Join(dir, "vol.img")
	makeImage(t, img, 16<<20)

	c.fails(1, "certificate", "init", "--s3-endpoint", srv.Endpoint, "--s3-path-style")
	flags := []string{"--s3-endpoint", srv.Endpoint, "--s3-path-style", "--s3-ca-bundle", srv.CAFile,
		"--s3-checksum-when-required", "--s3-region", s3test.Region}
	c.ok(append([]string{"init", "--pack-size", "2MiB"}, flags...)...)
	c.ok(append([]string{"export", "-q", "--source", img, "--name", "v", "--connections", "2"}, flags...)...)
	c.fails(2, "s3-ca-bundle", "snapshots", "--s3-endpoint", srv.Endpoint, "--s3-path-style", "--s3-ca-bundle")

	// The endpoint from the environment, as the SDK resolves it.
	t.Setenv("AWS_ENDPOINT_URL", srv.Endpoint)
	out := filepath.Join(dir, "out.img")
	c.ok("import", "-q", "--snapshot", "latest:v", "--target", out, "--s3-path-style", "--s3-ca-bundle", srv.CAFile)
	a, _ := os.ReadFile(img)
	b, _ := os.ReadFile(out)
	if !bytes.Equal(a, b) {
		t.Fatal("image imported over TLS differs")
	}
	c.fails(1, "certificate", "snapshots", "--s3-path-style")
}
