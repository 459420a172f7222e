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

// TestCLIInitGuards: init needs an empty location, makes a directory
// private, tells an existing repository apart (exit 3), and refuses a
// repository whose config was lost; every command reports a lost config
// as such.
func TestCLIInitGuards(t *testing.T) {
	c, dir := newCLI(t)
	repoDir := c.env["MOVER_REPOSITORY"]

	// A directory with someone's files.
	os.MkdirAll(repoDir, 0o755)
	os.WriteFile(filepath.Join(repoDir, "notes.txt"), []byte("mine"), 0o644)
	c.fails(1, "is not empty (holds 1 object, e.g. notes.txt); init needs an empty directory or S3 prefix", "init")
	if fi, _ := os.Stat(repoDir); fi.Mode().Perm() != 0o755 {
		t.Fatalf("refused init changed the directory's mode to %v", fi.Mode().Perm())
	}
	if b, _ := os.ReadFile(filepath.Join(repoDir, "notes.txt")); string(b) != "mine" {
		t.Fatal("refused init touched a file")
	}
	// Something that is no object at all.
	os.Remove(filepath.Join(repoDir, "notes.txt"))
	os.Symlink("/etc/hostname", filepath.Join(repoDir, "link"))
	c.fails(1, "holds link, which is not a regular file", "init")
	os.Remove(filepath.Join(repoDir, "link"))

	// The same directory, now empty: init makes it private.
	os.Chmod(repoDir, 0o755)
	c.ok("init")
	if fi, _ := os.Stat(repoDir); fi.Mode().Perm() != 0o700 {
		t.Fatalf("init left the repository directory with mode %v, want 0700", fi.Mode().Perm())
	}
	// A second init: exit 3, distinct from other failures.
	c.fails(exitExists, "already exists", "init")

	// The config lost: no command calls it "no repository", init does
	// not create a new one.
	img := filepath.Join(dir, "v.img")
	makeImage(t, img, 4<<20)
	c.ok("export", "-q", "--source", img, "--name", "v")
	os.Remove(filepath.Join(repoDir, "config"))
	for _, args := range [][]string{
		{"snapshots"}, {"check"}, {"export", "--source", img, "--name", "v"},
		{"import", "--snapshot", "latest", "--target", filepath.Join(dir, "o.img")},
		{"forget", "--keep-last", "1"}, {"key", "list"}, {"gc"}, {"init"},
	} {
		r := c.run(args...)
		if r.code != exitNoRepository || !strings.Contains(r.stderr, "config is missing") || !strings.Contains(r.stderr, "init will not overwrite") ||
			strings.Contains(r.stderr, "run mover init") || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 {
			t.Fatalf("mover %s without config: exit %d, %q", strings.Join(args, " "), r.code, r.stderr)
		}
	}
	if _, err := os.Stat(filepath.Join(repoDir, "config")); err == nil {
		t.Fatal("init wrote a new config over a repository that lost its own")
	}
}

// TestCLIInitGuardsS3: an S3 prefix with objects is refused, and a lost
// config is reported as such there too.
func TestCLIInitGuardsS3(t *testing.T) {
	srv := s3test.Start(t, false)
	bucket := srv.NewBucket(t, false)
	s3flags := []string{"--s3-endpoint", srv.Endpoint, "--s3-path-style"}
	c := &cli{t: t, env: map[string]string{"MOVER_PASSWORD": "pw", "MOVER_REPOSITORY": "s3://" + bucket + "/team/repo"}}
	put := func(key string) {
		if _, err := srv.Client().PutObject(t.Context(), &s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String(key), Body: bytes.NewReader([]byte("x"))}); err != nil {
			t.Fatal(err)
		}
	}
	put("team/repo/report.csv")
	c.fails(1, "is not empty (holds 1 object, e.g. report.csv)", append([]string{"init"}, s3flags...)...)

	c.env["MOVER_REPOSITORY"] = "s3://" + bucket + "/team/other"
	c.ok(append([]string{"init"}, s3flags...)...)
	c.fails(exitExists, "already exists", append([]string{"init"}, s3flags...)...)
	if _, err := srv.Client().DeleteObject(t.Context(), &s3.DeleteObjectInput{Bucket: aws.String(bucket), Key: aws.String("team/other/config")}); err != nil {
		t.Fatal(err)
	}
	put("team/other/snapshots/0123") // as if there had been exports

	c.fails(exitNoRepository, "config is missing", append([]string{"snapshots"}, s3flags...)...)
	c.fails(exitNoRepository, "config is missing", append([]string{"init"}, s3flags...)...)
}
