package main

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// TestCLIImportIntoRepository: an import target inside a directory
// repository, or the repository itself, is refused before anything is
// written, also through a symbolic link.
func TestCLIImportIntoRepository(t *testing.T) {
	c, dir := newCLI(t)
	repoDir := c.env["MOVER_REPOSITORY"]
	img := filepath.Join(dir, "v.img")
	makeImage(t, img, 4<<20)
	c.ok("init")
	c.ok("export", "-q", "--source", img, "--name", "v")
	cfg, _ := os.ReadFile(filepath.Join(repoDir, "config"))
	pack := objects(t, repoDir, "data")[0]
	packBytes, _ := os.ReadFile(pack)
	link := filepath.Join(dir, "link")
	os.Symlink(repoDir, link)
	for _, target := range []string{
		filepath.Join(repoDir, "config"), pack, repoDir, filepath.Join(repoDir, "data", "new.img"),
		filepath.Join(link, "config"), filepath.Join(dir, "elsewhere", "..", "link", "snapshots", "x.img"),
	} {
		c.fails(exitUnsuitable, "is inside the repository", "import", "--snapshot", "latest", "--target", target)
	}
	if b, _ := os.ReadFile(filepath.Join(repoDir, "config")); !bytes.Equal(b, cfg) {
		t.Fatal("the config changed")
	}
	if b, _ := os.ReadFile(pack); !bytes.Equal(b, packBytes) {
		t.Fatal("the pack changed")
	}
	if _, err := os.Stat(filepath.Join(repoDir, "data", "new.img")); err == nil {
		t.Fatal("a refused import created its target")
	}
	c.ok("check", "--read-data")
	// Beside the repository is fine.
	c.ok("import", "-q", "--snapshot", "latest", "--target", filepath.Join(dir, "repo.img"))
}
